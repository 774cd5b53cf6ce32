"""The whole story in a real Chromium, with nothing simulated: an operator grants the tiny
model to a tenant, makes a key, deploys the model from the Deployments page and watches its
worker turn ready on the node's page without a reload; a product then calls the gateway with
that key through the official `openai` client, and the usage appears on the overview, on the
usage page and in its CSV export.

The parts: pytest-django's live server (the dashboard and the node agents' API), a real
`manage.py nodeagent` subprocess starting a real vLLM engine (CPU build, the tiny model), and
the gateway served by granian in a thread (tests/gateway_support.py), all on the test database.
"""

from __future__ import annotations

import csv
import io
import re
import signal
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from playwright.sync_api import Page, expect

from controlplane.models import UsageRecord
from devtools.net import free_port
from models_registry.management.commands.register_runtime import CPU_ENVIRONMENT
from models_registry.models import EngineRuntime, Model, ModelVersion, VersionState
from nodes import credentials
from nodes.models import Node, Worker
from tenants.models import ApiKey, Membership, Role, Tenant

from ..agent_support import AgentProcess, kill_engines
from ..gateway_support import ENGINE_PYTHON, TINY_MODEL, EmbeddedGateway
from .test_dashboard_browser import PASSWORD, duplicate_ids, shoot

WORKER_PORTS = "8370-8379"
ENGINE_START_TIMEOUT = 300  # seconds: two cores, shared with the rest of the suite

pytestmark = [
    pytest.mark.browser,
    pytest.mark.vllm,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not ENGINE_PYTHON.exists(), reason="no engine environment: make engine"),
    pytest.mark.skipif(not (TINY_MODEL / "config.json").exists(), reason="no tiny model built"),
]


@pytest.fixture
def scene(transactional_db: None) -> dict[str, Any]:
    """What exists before the operator starts: a runtime, the tiny model's version (priced),
    a tenant with no grant and no key, and the operator."""
    runtime = EngineRuntime.objects.create(
        name="vllm-cpu-e2e",
        version="0.32.0",
        python_path=str(ENGINE_PYTHON),
        environment=dict(CPU_ENVIRONMENT),
    )
    model = Model.objects.create(name="tiny-llama", description="The tiny chat model")
    version = ModelVersion.objects.create(
        model=model,
        label="v1",
        runtime=runtime,
        weights_source=str(TINY_MODEL),
        dtype="float32",  # bfloat16 was seen killing the CPU engine's worker here
        extra_args={"gpu-memory-utilization": 0.3, "enforce-eager": True},
        state=VersionState.ACTIVE,
        price_input_per_million=Decimal("1500"),
        price_output_per_million=Decimal("6000"),
    )
    tenant = Tenant.objects.create(slug="umbrella", name="Umbrella Analytics")
    user = get_user_model().objects.create_user(username="dana", password=PASSWORD)
    Membership.objects.create(user=user, role=Role.PLATFORM_ADMIN)
    return {"version": version, "tenant": tenant, "operator": user}


@pytest.fixture
def node_agent(live_server: Any, scene: dict[str, Any], tmp_path: Path) -> Iterator[AgentProcess]:
    """A real node agent registered against the live server, as node "e2e"."""
    node = Node.objects.create(name="e2e", address="127.0.0.1")
    agent = AgentProcess(
        name="e2e",
        credential=credentials.issue(node),
        state_dir=tmp_path / "e2e",
        url=live_server.url,
        port_range=WORKER_PORTS,
        start_timeout=ENGINE_START_TIMEOUT,
    )

    # A CI timeout's SIGTERM unwinds (pytest runs no finalizers otherwise): no engine is left.
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    agent.start()
    try:
        yield agent
    finally:
        agent.stop(signal.SIGKILL)
        kill_engines([WORKER_PORTS])
        signal.signal(signal.SIGTERM, previous)
        sys.stdout.write(agent.log()[-2000:])  # shown by pytest only when the test fails


@pytest.fixture
def gateway(live_server: Any, scene: dict[str, Any]) -> Iterator[EmbeddedGateway]:
    server = EmbeddedGateway(free_port(8350, 8359))
    try:
        yield server
    finally:
        server.stop()


def test_deploy_from_the_ui_call_it_with_a_new_key_and_see_the_usage(
    page: Page,
    live_server: Any,
    scene: dict[str, Any],
    node_agent: AgentProcess,
    gateway: EmbeddedGateway,
) -> None:
    client = Client()
    client.force_login(scene["operator"])
    page.context.add_cookies(
        [{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}]
    )

    # The node agent has registered its host as node "e2e".
    page.goto(f"{live_server.url}/nodes/")
    expect(page.locator("#node-cards")).to_contain_text("e2e", timeout=60_000)

    # Grant the model to the tenant and make a key (its plaintext shown once).
    page.goto(f"{live_server.url}/tenants/umbrella/")
    assert duplicate_ids(page) == []  # a label tied to the wrong field otherwise
    grants = page.locator("#grants")
    grants.get_by_label("Model").select_option(label="tiny-llama")
    grants.get_by_role("button", name="Grant").click()
    expect(grants.get_by_role("link", name="tiny-llama")).to_be_visible()
    page.get_by_text("+ New key").click()
    page.locator("#key-form").get_by_label("Name").fill("umbrella-app")
    page.get_by_role("button", name="Create key").click()
    plaintext = page.locator("#new-key-plaintext").inner_text().strip()
    assert ApiKey.authenticate(plaintext) == ApiKey.objects.get(name="umbrella-app")

    # Deploy the tiny model from the Deployments page.
    page.goto(f"{live_server.url}/deployments/")
    page.get_by_text("+ New deployment").click()
    form = page.locator("#deployment-form")
    form.get_by_label("Name").fill("tiny")
    form.get_by_label("Model version").select_option(value=str(scene["version"].pk))
    form.get_by_label("Replicas").fill("1")
    form.get_by_role("button", name="Create deployment").click()
    expect(page.locator("#deployment-results")).to_contain_text("tiny")

    # The scheduler places a worker on e2e; its badge turns Ready on the node's page, live.
    page.goto(f"{live_server.url}/nodes/e2e/")
    page.evaluate("window.__stillTheSamePage = true")
    badge = page.locator("[data-worker-state]")
    expect(badge).to_have_count(1, timeout=30_000)
    expect(badge).to_have_text(
        re.compile("Starting|Ready"), timeout=30_000
    )  # launched by the agent
    expect(badge).to_have_text("Ready", timeout=ENGINE_START_TIMEOUT * 1000)
    assert page.evaluate("window.__stillTheSamePage") is True
    worker = Worker.objects.get(deployment__name="tiny")
    assert (worker.state, worker.node.name if worker.node else None) == ("ready", "e2e")
    shoot(page, "14-node-live-worker")

    # The overview is open (and polling) while the product calls the gateway with the key.
    page.goto(f"{live_server.url}/")
    rps = page.locator("#stat-rps")
    expect(rps).to_have_text("0.00")
    page.evaluate("window.__stillTheSamePage = true")
    product = openai.OpenAI(
        base_url=f"{gateway.url}/v1", api_key=plaintext, max_retries=0, timeout=120
    )
    replies = [
        product.chat.completions.with_raw_response.create(
            model="tiny-llama",
            messages=[{"role": "user", "content": f"hello {i}"}],
            max_tokens=8,
        )
        for i in range(3)
    ]
    request_ids = [r.headers["x-request-id"] for r in replies]
    completions = [r.parse() for r in replies]
    assert all(c.choices[0].message.content for c in completions)
    prompt_tokens = sum(c.usage.prompt_tokens for c in completions if c.usage)
    completion_tokens = sum(c.usage.completion_tokens for c in completions if c.usage)
    assert prompt_tokens > 0 and completion_tokens > 0
    expect(rps).not_to_have_text("0.00", timeout=15_000)  # the metered requests, live
    assert page.evaluate("window.__stillTheSamePage") is True

    records = UsageRecord.objects.filter(request_id__in=request_ids)
    assert records.count() == 3
    assert {r.tenant.slug for r in records} == {"umbrella"}
    assert sum(r.prompt_tokens for r in records) == prompt_tokens
    assert sum(r.completion_tokens for r in records) == completion_tokens

    # The usage page and its CSV export show exactly those requests and tokens.
    page.goto(f"{live_server.url}/usage/")
    page.get_by_label("Tenant", exact=True).select_option(label="umbrella")
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(r"tenant="))
    expect(page.locator("#usage-requests")).to_have_text("3")
    expect(page.locator("#usage-tokens")).to_have_text(f"{prompt_tokens + completion_tokens:,}")
    expect(page.locator("#usage-table")).to_contain_text("tiny-llama")
    shoot(page, "15-usage-after-requests", full_page=False)
    with page.expect_download() as download_info:
        page.locator("#csv-export").click()
    rows = list(csv.DictReader(io.StringIO(Path(download_info.value.path()).read_text())))
    assert {(r["tenant"], r["model"]) for r in rows} == {("umbrella", "tiny-llama")}
    assert sum(int(r["requests"]) for r in rows) == 3
    assert sum(int(r["prompt_tokens"]) for r in rows) == prompt_tokens
    assert sum(int(r["completion_tokens"]) for r in rows) == completion_tokens
    recorded_cost = sum(r.cost for r in records).quantize(Decimal("0.000001"))
    assert sum(Decimal(r["cost_usd"]) for r in rows) == recorded_cost > 0
