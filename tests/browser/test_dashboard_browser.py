"""The dashboard in a real Chromium: what a platform engineer does, step by step, with a
screenshot of every page saved under var/screenshots/ (docs/screenshots/ with
`make screenshots`)."""

from __future__ import annotations

import csv
import io
import random
import re
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone
from playwright.sync_api import Page, expect

from controlplane.models import AuditEvent, UsageRecord, UsageStatus
from models_registry.models import EngineRuntime, Model, ModelGrant, ModelVersion
from nodes.models import Deployment, Gpu, Node, Worker
from tenants.models import ApiKey, Membership, Quota, Role, Tenant

from .conftest import SCREENSHOTS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery staple"
GIB = 1 << 30


def shoot(page: Page, name: str, full_page: bool = True) -> None:
    """Save a screenshot of the page, checking on the way that no two elements share an id
    (two forms' "id_name" inputs once tied both "Name" labels to the first)."""
    assert duplicate_ids(page) == [], f"{name}: duplicate element ids"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)


def duplicate_ids(page: Page) -> list[str]:
    ids: list[str] = page.evaluate("Array.from(document.querySelectorAll('[id]'), e => e.id)")
    return sorted({i for i in ids if ids.count(i) > 1})


@pytest.fixture
def operator(transactional_db: None) -> Any:
    user = get_user_model().objects.create_user(username="dana", password=PASSWORD)
    Membership.objects.create(user=user, role=Role.PLATFORM_ADMIN)
    return user


@pytest.fixture
def signed_in(page: Page, live_server: Any, operator: Any) -> Page:
    """A browser with the operator's session, without typing the password each time."""
    client = Client()
    client.force_login(operator)
    page.context.add_cookies(
        [{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}]
    )
    return page


@pytest.fixture
def fleet(transactional_db: None) -> dict[str, Any]:
    """A hand-made fleet scene (placements, failures, an unschedulable canary) for the pages.
    The real scheduler would re-place it as it is built, so it is paused meanwhile."""
    from django.db.models.signals import post_save

    from nodes import signals as scheduling

    post_save.disconnect(sender=Deployment, dispatch_uid="schedule-deployment")
    post_save.disconnect(sender=Node, dispatch_uid="schedule-node")
    try:
        return build_fleet()
    finally:
        scheduling.connect()


def build_fleet() -> dict[str, Any]:
    """A small, believable fleet: three tenants, three models, two GPU nodes, a week of usage."""
    runtime = EngineRuntime.objects.create(
        name="vllm-0.32-cpu", version="0.32.0", python_path="/opt/vllm/bin/python"
    )
    tenants = {
        slug: Tenant.objects.create(slug=slug, name=name, priority_class=priority)
        for slug, name, priority in [
            ("acme", "Acme Search", "high"),
            ("globex", "Globex Support Bot", "normal"),
            ("initech", "Initech Batch Jobs", "low"),
        ]
    }
    models = {
        name: Model.objects.create(name=name, task=task, description=description)
        for name, task, description in [
            ("llama-3.1-8b-instruct", "chat", "General chat, 8B, bf16"),
            ("qwen2.5-32b-instruct", "chat", "Long answers, AWQ 4-bit"),
            ("minilm-embed", "embedding", "all-MiniLM-L6-v2 sentence embeddings"),
        ]
    }
    prices = {
        "llama-3.1-8b-instruct": ("0.10", "0.05", "0.30"),
        "qwen2.5-32b-instruct": ("0.40", "0.20", "1.20"),
        "minilm-embed": ("0.02", "0.02", "0"),
    }
    versions = {}
    for name, model in models.items():
        price_in, price_cached, price_out = prices[name]
        versions[name] = ModelVersion.objects.create(
            model=model,
            label="2026-11",
            weights_source=f"/srv/models/{name}",
            runtime=runtime,
            state="active",
            dtype="bfloat16",
            max_model_len=8192 if "embed" not in name else 512,
            extra_args={"max-num-seqs": 128} if "embed" not in name else {},
            price_input_per_million=Decimal(price_in),
            price_cached_input_per_million=Decimal(price_cached),
            price_output_per_million=Decimal(price_out),
        )
    for tenant in tenants.values():
        for model in models.values():
            ModelGrant.objects.create(tenant=tenant, model=model)
    nodes = []
    for n, name in enumerate(["gpu-a1", "gpu-a2"]):
        node = Node.objects.create(
            name=name,
            address=f"10.0.0.{11 + n}",
            cpu_count=96,
            memory_bytes=1024 * GIB,
            labels={"zone": "a", "gpu": "h200"},
            last_heartbeat_at=timezone.now() - timedelta(seconds=4),
            agent_version="0.1.0",
        )
        for index in range(4):
            Gpu.objects.create(
                node=node,
                index=index,
                uuid=f"GPU-{name}-{index}",
                name="NVIDIA H200",
                memory_total_bytes=141 * GIB,
            )
        nodes.append(node)
    deployments = {
        "llama-blue": Deployment.objects.create(
            name="llama-blue", model_version=versions["llama-3.1-8b-instruct"], replicas=3
        ),
        "qwen": Deployment.objects.create(
            name="qwen",
            model_version=versions["qwen2.5-32b-instruct"],
            replicas=1,
            gpus_per_replica=2,
        ),
        "embed": Deployment.objects.create(
            name="embed", model_version=versions["minilm-embed"], replicas=1, traffic_weight=100
        ),
        "qwen-canary": Deployment.objects.create(
            name="qwen-canary",
            model_version=versions["qwen2.5-32b-instruct"],
            replicas=1,
            gpus_per_replica=4,
            traffic_weight=10,
            unschedulable_reason="no ready node has 4 free GPUs (gpu-a1: 1 free, gpu-a2: 0 free)",
        ),
    }
    placements = [
        ("llama-blue", 0, [0], "ready", 0, ""),
        ("llama-blue", 0, [1], "ready", 0, ""),
        ("llama-blue", 1, [0], "starting", 0, ""),
        ("qwen", 1, [1, 2], "ready", 1, ""),
        (
            "embed",
            0,
            [2],
            "crash_looping",
            6,
            "RuntimeError: CUDA error: out of memory while allocating the KV cache "
            "(wanted 12.0 GiB, 3.1 GiB free)",
        ),
    ]
    workers = []
    for i, (deployment, node_index, gpu_indexes, state, restarts, error) in enumerate(placements):
        node = nodes[node_index]
        worker = Worker.objects.create(
            deployment=deployments[deployment],
            node=node,
            port=8100 + i,
            state=state,
            restarts=restarts,
            last_error=error,
            last_exit_code=1 if error else None,
            started_at=timezone.now() - timedelta(hours=3),
        )
        gpus = list(node.gpus.filter(index__in=gpu_indexes))
        worker.gpus.set(gpus)
        for gpu in gpus:
            gpu.memory_used_bytes = int((0.55 + 0.1 * i) * gpu.memory_total_bytes)
            gpu.save()
        workers.append(worker)
    keys = {slug: ApiKey.issue(tenant=t, name="production")[0] for slug, t in tenants.items()}
    Quota.objects.create(
        tenant=tenants["acme"],
        requests_per_minute=600,
        tokens_per_minute=400_000,
        cost_per_day=Decimal("250"),
    )
    Quota.objects.create(
        tenant=tenants["acme"],
        model=models["qwen2.5-32b-instruct"],
        concurrent_requests=32,
        tokens_per_day=20_000_000,
    )
    add_week_of_usage(tenants, models, versions, keys)
    add_history(tenants, deployments)
    return {
        "tenants": tenants,
        "models": models,
        "nodes": nodes,
        "workers": workers,
        "deployments": deployments,
    }


def add_week_of_usage(
    tenants: dict[str, Tenant],
    models: dict[str, Model],
    versions: dict[str, ModelVersion],
    keys: dict[str, ApiKey],
) -> None:
    """Hourly traffic for the past week, seeded so every run draws the same charts."""
    rng = random.Random(5)
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    volume = {"acme": 9, "globex": 5, "initech": 3}
    records = []
    for hours_ago in range(7 * 24, 0, -1):
        moment = now - timedelta(hours=hours_ago)
        daytime = 1.6 if 8 <= moment.hour <= 20 else 0.6
        for slug, tenant in tenants.items():
            for name, model in models.items():
                for _ in range(int(volume[slug] * daytime * rng.uniform(0.3, 1.0))):
                    prompt = rng.randint(200, 1800)
                    completion = 0 if "embed" in name else rng.randint(40, 600)
                    cached = prompt // 3
                    version = versions[name]
                    records.append(
                        UsageRecord(
                            request_id=f"seed-{len(records)}",
                            tenant=tenant,
                            api_key=keys[slug],
                            model=model,
                            model_version=version,
                            endpoint="chat.completions",
                            prompt_tokens=prompt,
                            cached_tokens=cached,
                            completion_tokens=completion,
                            latency_ms=rng.randint(80, 2400),
                            status=UsageStatus.OK
                            if rng.random() > 0.01
                            else UsageStatus.ENGINE_ERROR,
                            cost=version.cost(prompt, cached, completion) * 200,
                            created_at=moment + timedelta(minutes=rng.randint(0, 59)),
                        )
                    )
    UsageRecord.objects.bulk_create(records, batch_size=2000)


def add_history(tenants: dict[str, Tenant], deployments: dict[str, Deployment]) -> None:
    """Earlier changes, as the REST API and the scheduler would have recorded them."""
    now = timezone.now()
    history = [
        ("terraform-ci", "api", "create", tenants["initech"], {"slug": "initech"}, 50),
        (
            "terraform-ci",
            "api",
            "update",
            tenants["acme"],
            {"priority_class": ["normal", "high"]},
            38,
        ),
        (
            "system",
            "system",
            "unschedulable",
            deployments["qwen-canary"],
            {"reason": "no ready node has 4 free GPUs"},
            21,
        ),
        (
            "priya",
            "dashboard",
            "rotate",
            ApiKey.objects.get(tenant=tenants["globex"]),
            {"successor": "sk-cp-Xb81…"},
            9,
        ),
    ]
    for actor, via, action, obj, changes, minutes_ago in history:
        event = AuditEvent.objects.create(
            actor_repr=actor,
            via=via,
            action=action,
            object_type=obj._meta.label,
            object_id=str(obj.pk),
            object_repr=str(obj),
            changes=changes,
            tenant=obj if isinstance(obj, Tenant) else getattr(obj, "tenant", None),
        )
        AuditEvent.objects.filter(pk=event.pk).update(
            created_at=now - timedelta(minutes=minutes_ago)
        )


def add_requests_now(tenant: Tenant, model: Model, n: int, cost: str) -> None:
    now = timezone.now()
    UsageRecord.objects.bulk_create(
        UsageRecord(
            request_id=f"live-{now.timestamp()}-{i}",
            tenant=tenant,
            model=model,
            endpoint="chat.completions",
            prompt_tokens=120,
            completion_tokens=30,
            cost=Decimal(cost),
            created_at=now,
        )
        for i in range(n)
    )


# --- the stories -------------------------------------------------------------------------


def test_an_operator_signs_in_and_creates_a_tenant(
    page: Page, live_server: Any, operator: Any
) -> None:
    page.goto(f"{live_server.url}/")
    expect(page).to_have_url(re.compile(r"/accounts/login/"))
    shoot(page, "01-sign-in")
    page.get_by_label("Username").fill("dana")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()

    page.get_by_role("link", name="Tenants").click()
    page.get_by_text("+ New tenant").click()
    page.get_by_label("Slug").fill("umbrella")
    page.get_by_label("Name").fill("Umbrella Analytics")
    page.get_by_role("button", name="Create tenant").click()
    expect(page.get_by_role("heading", name=re.compile("Umbrella Analytics"))).to_be_visible()
    expect(page).to_have_url(re.compile(r"/tenants/umbrella/$"))
    assert AuditEvent.objects.filter(
        action="create", object_repr="umbrella", via="dashboard"
    ).exists()


def test_a_new_key_is_shown_exactly_once(
    signed_in: Page, live_server: Any, fleet: dict[str, Any]
) -> None:
    page = signed_in
    page.goto(f"{live_server.url}/tenants/acme/")
    page.get_by_text("+ New key").click()
    page.locator("#key-form").get_by_label("Name").fill("search-frontend")
    page.get_by_role("button", name="Create key").click()
    shown = page.locator("#new-key-plaintext")
    expect(shown).to_be_visible()
    plaintext = shown.inner_text().strip()
    assert plaintext.startswith("sk-cp-")
    assert ApiKey.authenticate(plaintext) == ApiKey.objects.get(name="search-frontend")
    expect(page.get_by_text("this is the only time it is shown")).to_be_visible()
    expect(page.get_by_role("button", name="Copy")).to_be_visible()
    shoot(page, "04-tenant-new-key")

    page.reload()
    expect(
        page.locator("#key-" + str(ApiKey.objects.get(name="search-frontend").pk))
    ).to_be_visible()
    assert plaintext not in page.content()
    expect(page.locator("#new-key-plaintext")).to_have_count(0)
    shoot(page, "03-tenant")


def test_a_bad_quota_value_shows_its_error_beside_the_field(
    signed_in: Page, live_server: Any, fleet: dict[str, Any]
) -> None:
    page = signed_in
    page.goto(f"{live_server.url}/tenants/acme/")
    quota = Quota.objects.get(tenant__slug="acme", model__isnull=True)
    card = page.locator(f"#quota-{quota.pk}")
    card.get_by_role("link", name="Edit").click()
    rpm = card.get_by_label("Requests per minute")
    rpm.fill("-5")
    card.get_by_role("button", name="Save").click()
    field = card.locator(f"#field-q{quota.pk}_requests_per_minute")
    expect(field).to_have_class(re.compile(r"\binvalid\b"))
    expect(field.get_by_role("alert")).to_contain_text("greater than or equal to 0")
    shoot(page, "05-quota-error")
    quota.refresh_from_db()
    assert quota.requests_per_minute == 600

    card.get_by_label("Requests per minute").fill("900")
    card.get_by_role("button", name="Save").click()
    expect(card.get_by_text("900", exact=True)).to_be_visible()
    quota.refresh_from_db()
    assert quota.requests_per_minute == 900


def test_a_workers_badge_changes_without_a_reload(
    signed_in: Page, live_server: Any, fleet: dict[str, Any]
) -> None:
    page = signed_in
    starting = next(w for w in fleet["workers"] if w.state == "starting")
    page.goto(f"{live_server.url}/nodes/{starting.node.name}/")
    badge = page.locator(f'[data-worker-state="{starting.pk}"]')
    expect(badge).to_have_text("Starting")
    page.evaluate("window.__stillTheSamePage = true")

    Worker.objects.filter(pk=starting.pk).update(state="ready")
    expect(badge).to_have_text("Ready", timeout=10_000)
    assert page.evaluate("window.__stillTheSamePage") is True
    page.get_by_role("link", name="Log", exact=True).first.click()
    expect(page.locator("#worker-log")).to_contain_text("No log lines")
    shoot(page, "07-node")

    page.goto(f"{live_server.url}/nodes/")
    shoot(page, "06-nodes")


def test_usage_appears_live_and_the_csv_has_its_rows(
    signed_in: Page, live_server: Any, fleet: dict[str, Any]
) -> None:
    page = signed_in
    page.goto(f"{live_server.url}/")
    cost = page.locator("#stat-cost")
    before = cost.inner_text()
    expect(page.locator("#troubled-workers")).to_contain_text("embed#")
    page.evaluate("window.__stillTheSamePage = true")
    add_requests_now(
        fleet["tenants"]["globex"], fleet["models"]["llama-3.1-8b-instruct"], 40, "2.5"
    )
    expect(cost).not_to_have_text(before, timeout=10_000)
    expect(page.locator("#stat-rps")).not_to_have_text("0.00")
    assert page.evaluate("window.__stillTheSamePage") is True
    shoot(page, "02-overview")

    page.goto(f"{live_server.url}/usage/")
    page.get_by_label("Tenant", exact=True).select_option(label="globex")
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(r"tenant="))
    table = page.locator("#usage-table")
    expect(table).to_contain_text("globex")
    expect(table).not_to_contain_text("acme")
    charts = page.evaluate(
        "Array.from(document.querySelectorAll('canvas[data-chart]'))"
        ".filter(c => Chart.getChart(c)).length"
    )
    assert charts == 4

    with page.expect_download() as download_info:
        page.locator("#csv-export").click()
    exported = Path(download_info.value.path()).read_text()
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert rows and {row["tenant"] for row in rows} == {"globex"}
    assert (
        sum(int(r["requests"]) for r in rows)
        == UsageRecord.objects.filter(
            tenant__slug="globex",
            created_at__gte=timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
            - timedelta(days=6),
        ).count()
    )
    live = [
        r
        for r in rows
        if r["model"] == "llama-3.1-8b-instruct" and r["period"][:10] == str(timezone.now().date())
    ]
    assert int(live[0]["requests"]) >= 40

    page.goto(f"{live_server.url}/usage/")
    page.wait_for_function("document.querySelectorAll('canvas[data-chart]').length === 4")
    shoot(page, "08-usage", full_page=False)


def test_the_remaining_pages_render(
    signed_in: Page, live_server: Any, fleet: dict[str, Any]
) -> None:
    page = signed_in
    for path, heading, name in [
        ("/tenants/", "Tenants", "09-tenants"),
        ("/models/", "Models", "10-models"),
        (
            f"/models/{fleet['models']['qwen2.5-32b-instruct'].pk}/",
            "qwen2.5-32b-instruct",
            "11-model",
        ),
        ("/deployments/", "Deployments", "12-deployments"),
    ]:
        page.goto(f"{live_server.url}{path}")
        expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
        if name == "11-model":
            # A version whose vLLM settings the allow-list refuses: errors beside the fields.
            page.get_by_text("+ New version").click()
            form = page.locator("#version-form")
            form.get_by_label("Label").fill("2026-12")
            form.get_by_label("Weights source").fill("/srv/models/qwen2.5-32b-instruct")
            form.get_by_label("Runtime").select_option(index=1)
            form.get_by_label("Further vLLM arguments").fill('{"port": 9000, "max-num-seqs": 0}')
            form.get_by_label("Input $/1M", exact=True).fill("-0.5")
            form.get_by_role("button", name="Create version").click()
            expect(page.locator("#field-extra_args")).to_contain_text("set by the control plane")
            expect(page.locator("#field-extra_args")).to_contain_text("Must be at least 1")
            expect(page.locator("#field-price_input_per_million")).to_contain_text(
                "greater than or equal to 0"
            )
            assert not ModelVersion.objects.filter(label="2026-12").exists()
        shoot(page, name)
    expect(page.get_by_text("no ready node has 4 free GPUs")).to_be_visible()

    # One routine change without a reload, so the audit log has something from the UI.
    page.evaluate("window.__stillTheSamePage = true")
    page.get_by_label("Replicas of llama-blue").fill("4")
    page.locator("#deployment-" + str(fleet["deployments"]["llama-blue"].pk)).get_by_role(
        "button", name="Apply"
    ).click()
    expect(
        page.locator("#deployment-" + str(fleet["deployments"]["llama-blue"].pk))
    ).to_contain_text("Saved")
    assert page.evaluate("window.__stillTheSamePage") is True
    assert Deployment.objects.get(name="llama-blue").replicas == 4

    page.goto(f"{live_server.url}/audit/")
    expect(page.get_by_role("cell", name="scale")).to_be_visible()
    shoot(page, "13-audit")
