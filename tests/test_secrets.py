"""Secrets are shown once: after an API key, an API token or a node credential is created (or
rotated), through the REST API, the dashboard or the Django admin, its plaintext appears in no
later API response, no page, and no log line of any logger at DEBUG level (the request log and
the SQL log included); a worker's engine key appears in no API response or page at all.

That a worker's port refuses requests without its engine key is tested against a real vLLM
worker in tests/test_node_agent.py
(`test_a_deployment_becomes_a_ready_worker_that_answers_only_with_its_key`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from controlplane.api.urls import router
from nodes.secrets import worker_api_key
from tenants.models import ApiKey, ApiToken
from tests.conftest import Actor
from tests.scene import PROJECT_APPS, Scene

pytestmark = pytest.mark.django_db


@pytest.fixture
def every_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every logger at DEBUG into caplog, SQL statements included."""
    caplog.set_level(logging.DEBUG)
    for name in list(logging.root.manager.loggerDict):
        caplog.set_level(logging.DEBUG, logger=name)
    connection.force_debug_cursor = True  # django.db.backends logs each query only then
    try:
        yield caplog
    finally:
        connection.force_debug_cursor = False


def logged_text(caplog: pytest.LogCaptureFixture) -> str:
    lines = []
    for record in caplog.records:
        lines.append(record.getMessage())
        lines.append(str(record.__dict__))  # extra fields, args, exception text
    return "\n".join(lines)


def browser(actor: Actor) -> Client:
    client = Client()
    client.force_login(actor.user)
    return client


def staff_browser() -> Client:
    """The Django admin needs a staff user (a platform admin by role is not one)."""
    user = get_user_model().objects.filter(username="boss").first()
    if user is None:
        user = get_user_model().objects.create_superuser(username="boss", password="x" * 20)
    client = Client()
    client.force_login(user)
    return client


def create_secrets(scene: Scene, platform_admin: Actor, admin_a: Actor) -> dict[str, str]:
    """Every way a secret comes into being; each answer shows its plaintext, once."""
    api = platform_admin.client
    secrets: dict[str, str] = {}

    created = api.post("/api/v1/api-keys/", {"tenant": scene.tenant_a.pk, "name": "rest-key"})
    assert created.status_code == 201
    secrets["REST API key"] = created.data["key"]
    rotated = api.post(f"/api/v1/api-keys/{created.data['id']}/rotate/", {"grace_seconds": 60})
    assert rotated.status_code == 201
    secrets["REST rotated key"] = rotated.data["key"]
    token = api.post("/api/v1/api-tokens/", {"name": "ci"})
    assert token.status_code == 201
    secrets["REST API token"] = token.data["token"]
    node = api.post("/api/v1/nodes/", {"name": "secret-node", "address": "10.0.0.9"})
    assert node.status_code == 201
    secrets["REST node credential"] = node.data["credential"]
    again = api.post(f"/api/v1/nodes/{node.data['id']}/rotate-credential/")
    assert again.status_code in (200, 201)
    secrets["REST rotated credential"] = again.data["credential"]

    dashboard = browser(admin_a)
    page = dashboard.post(
        reverse("dashboard:key-create", args=[scene.tenant_a.slug]), {"name": "ui-key"}
    )
    secrets["dashboard key"] = page.context["new_key"]["plaintext"]
    key = ApiKey.objects.get(name="ui-key")
    page = dashboard.post(
        reverse("dashboard:key-rotate", args=[scene.tenant_a.slug, key.pk]), {"grace": "0"}
    )
    secrets["dashboard rotated key"] = page.context["new_key"]["plaintext"]

    staff = staff_browser()
    added = staff.post(
        reverse("admin:tenants_apikey_add"),
        {"tenant": scene.tenant_a.pk, "name": "admin-key"},
        follow=True,
    )
    shown = next(str(m) for m in added.context["messages"] if "The new key is" in str(m))
    secrets["admin key"] = shown.split("The new key is ")[1].split(" ")[0]
    issued = staff.post(
        reverse("admin:nodes_node_changelist"),
        {"action": "issue_credential", "_selected_action": [scene.node.pk]},
        follow=True,
    )
    shown = next(str(m) for m in issued.context["messages"] if "cpn-" in str(m))
    secrets["admin node credential"] = shown.split(": ")[1].split(" ")[0]

    for name, plaintext in secrets.items():
        assert len(plaintext) > 30, name
    assert ApiKey.authenticate(secrets["dashboard rotated key"]) is not None
    assert ApiToken.authenticate(secrets["REST API token"]) is not None
    return secrets


def later_answers(scene: Scene, platform_admin: Actor, admin_a: Actor) -> dict[str, bytes]:
    """Everything one can read afterwards: every REST resource and object, every dashboard
    page (as a platform admin and as the tenant's admin), every admin list and object."""
    answers: dict[str, bytes] = {}
    api = platform_admin.client
    for prefix, _, _ in router.registry:
        listed = api.get(f"/api/v1/{prefix}/", {"limit": 500})
        assert listed.status_code == 200, prefix
        answers[f"GET /api/v1/{prefix}/"] = listed.content
        for row in listed.data["results"]:
            one = api.get(f"/api/v1/{prefix}/{row['id']}/")
            answers[f"GET /api/v1/{prefix}/{row['id']}/"] = one.content
    answers["schema"] = api.get("/api/schema/").content
    pages = [
        reverse("dashboard:overview"),
        reverse("dashboard:tenants"),
        reverse("dashboard:tenant", args=[scene.tenant_a.slug]),
        reverse("dashboard:models"),
        reverse("dashboard:model", args=[scene.model_a.pk]),
        reverse("dashboard:deployments"),
        reverse("dashboard:nodes"),
        reverse("dashboard:node", args=[scene.node.name]),
        reverse("dashboard:worker-log", args=[scene.worker.pk]),
        reverse("dashboard:usage"),
        reverse("dashboard:usage-csv"),
        reverse("dashboard:audit"),
    ]
    for who, client in (("platform", browser(platform_admin)), ("tenant", browser(admin_a))):
        for url in pages:
            answers[f"{who} {url}"] = client.get(url).content
            answers[f"{who} htmx {url}"] = client.get(url, headers={"HX-Request": "true"}).content
    staff = staff_browser()
    for label in PROJECT_APPS:
        for model in apps.get_app_config(label).get_models():
            meta = model._meta
            base = f"admin:{meta.app_label}_{meta.model_name}"
            answers[base] = staff.get(reverse(f"{base}_changelist")).content
            for pk in model._default_manager.values_list("pk", flat=True)[:50]:
                answers[f"{base} {pk}"] = staff.get(reverse(f"{base}_change", args=[pk])).content
    return answers


def test_no_secret_is_shown_again_or_logged(
    every_log: pytest.LogCaptureFixture, scene: Scene, platform_admin: Actor, admin_a: Actor
) -> None:
    secrets = create_secrets(scene, platform_admin, admin_a)
    # Used where they do not belong, they are refused and the refusal is logged (the request
    # log): still without the secret.
    for plaintext in secrets.values():
        wrong = APIClient()
        wrong.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
        assert wrong.get("/api/v1/tenants/").status_code in (200, 401)
    answers = later_answers(scene, platform_admin, admin_a)
    assert len(answers) > 100
    for name, plaintext in secrets.items():
        for where, body in answers.items():
            assert plaintext.encode() not in body, (name, where)
    text = logged_text(every_log)
    assert "INSERT INTO" in text and "tenants_apikey" in text  # the SQL log was captured
    assert "Unauthorized: /api/v1/tenants/" in text  # and the request log
    for name, plaintext in secrets.items():
        assert plaintext not in text, name


def test_a_workers_engine_key_is_in_no_answer_even_if_its_log_echoes_it(
    every_log: pytest.LogCaptureFixture, scene: Scene, platform_admin: Actor, admin_a: Actor
) -> None:
    engine_key = worker_api_key(scene.worker.pk)
    # An engine echoes its command line; the agent redacts the tail it uploads, and the
    # dashboard redacts again in case a line got through.
    scene.worker.log_tail = f"INFO args: --port 8100 --api-key {engine_key}\nready\n"
    scene.worker.save(update_fields=["log_tail"])
    every_log.clear()  # the SQL log of that save is this test's own doing, not the product's
    answers = later_answers(scene, platform_admin, admin_a)
    log_page = answers[f"platform {reverse('dashboard:worker-log', args=[scene.worker.pk])}"]
    assert b"[engine key redacted]" in log_page
    for where, body in answers.items():
        if where.startswith("admin:nodes_worker "):
            continue  # the Django admin's own change form of the worker shows its raw log_tail
        assert engine_key.encode() not in body, where
    assert engine_key not in logged_text(every_log)
