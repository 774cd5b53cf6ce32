"""The gateway's dispatch, called in-process as an ASGI server would (no granian, no engine; a
fake upstream answers): the refusals that need the snapshots, and a metered request."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web

from controlplane.models import UsageRecord, UsageStatus
from gateway.app import Gateway
from metering import buffer as metering
from models_registry.models import Model
from tests.gateway.harness import Answer, FakeUpstream, call, completion, free_port, routed_model


async def _answer(request: web.Request) -> web.StreamResponse:
    return web.json_response(completion(prompt_tokens=9, completion_tokens=2))


def _error(answer: Answer) -> dict[str, Any]:
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return dict(error)


@pytest.mark.django_db(transaction=True)
def test_each_refusal_has_its_status_and_code_and_every_request_is_metered(
    settings: Any,
) -> None:
    settings.USAGE_FLUSH_IN_PROCESS = False
    port = free_port()
    world = routed_model(port, name="served")
    Model.objects.create(name="not-granted")
    chat = {"model": "served", "messages": [{"role": "user", "content": "hi"}]}

    async def scenario() -> dict[str, Answer]:
        answers: dict[str, Answer] = {}
        async with FakeUpstream(_answer, port) as fake:
            gateway = Gateway()
            await gateway.startup()
            try:
                post = "/v1/chat/completions"
                answers["ok"] = await call(gateway, post, chat, key=world.key)
                answers["no key"] = await call(gateway, post, chat)
                answers["unknown model"] = await call(
                    gateway, post, {**chat, "model": "nowhere"}, key=world.key
                )
                answers["not granted"] = await call(
                    gateway, post, {**chat, "model": "not-granted"}, key=world.key
                )
                answers["bad json"] = await call(gateway, post, b"{", key=world.key)
                answers["get"] = await call(gateway, post, method="GET", key=world.key)
                answers["nowhere"] = await call(gateway, "/v1/nowhere", key=world.key)
                answers["models"] = await call(gateway, "/v1/models", method="GET", key=world.key)
                answers["metrics"] = await call(gateway, "/metrics", method="GET")
                assert fake.hits == 1
            finally:
                await gateway.shutdown()
        return answers

    answers = asyncio.run(scenario())
    assert answers["ok"].status == 200 and answers["ok"].json()["choices"]
    assert (answers["no key"].status, _error(answers["no key"])["code"]) == (401, "invalid_api_key")
    missing, forbidden = _error(answers["unknown model"]), _error(answers["not granted"])
    assert answers["unknown model"].status == answers["not granted"].status == 404
    assert missing["code"] == forbidden["code"] == "model_not_found"
    assert missing["message"].replace("nowhere", "X") == forbidden["message"].replace(
        "not-granted", "X"
    )
    assert answers["bad json"].status == 400
    assert (answers["get"].status, _error(answers["get"])["code"]) == (405, "method_not_allowed")
    assert (answers["nowhere"].status, _error(answers["nowhere"])["code"]) == (404, "unknown_url")
    assert [m["id"] for m in answers["models"].json()["data"]] == ["served"]
    assert answers["metrics"].status == 200 and b"gateway_requests_total" in answers["metrics"].body
    assert all("x-request-id" in a.headers for a in answers.values())

    metering.flush_usage()
    metered = {
        name: UsageRecord.objects.get(request_id=answers[name].headers["x-request-id"])
        for name in ("ok", "unknown model", "bad json")
    }
    assert (metered["ok"].prompt_tokens, metered["ok"].completion_tokens) == (9, 2)
    assert metered["ok"].worker_id == world.worker.pk and metered["ok"].status == UsageStatus.OK
    assert metered["unknown model"].model_id is None
    assert (metered["bad json"].status, metered["bad json"].http_status) == ("client_error", 400)
