"""The tenant-isolation matrix over every dashboard route (the REST API's is in
test_tenant_isolation.py).

For each route of dashboard/urls.py, with tenant B's objects (or the fleet's) in
its URL: tenant A's admin and A's viewer get 404 for every object of B, for every method the
route answers (its existence is not revealed: the same answer as for an id that does not
exist), 403 for the fleet (no tenant's, so refusing reveals nothing), and lists leave B out;
A's viewer gets 403 for every write to A's own objects; and none of it changes a single row.
A platform admin gets through with the same URLs, so the 404s are isolation, not bad URLs.
The list of routes comes from the urlconf: a new route missing here fails the first test.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from dashboard import urls as dashboard_urls
from tenants.models import Tenant
from tests.conftest import Actor
from tests.scene import Scene, database_state

pytestmark = pytest.mark.django_db

OBJECT = "object"  # one of tenant B's objects (or a tenant-scoped list filtered to B)
FLEET = "fleet"  # platform admins' only, belongs to no tenant
LIST = "list"  # a page for everyone, narrowed to one's own tenant
FILTER = "filter"  # a page for everyone, asked to filter by B


@dataclass(frozen=True)
class Route:
    kind: str
    methods: tuple[str, ...]  # the methods the route answers
    # (scene, the tenant slug in the URL, the tenant whose objects the URL names) -> arguments
    args: Callable[[Scene, str, Tenant], list[Any]]
    data: Callable[[Scene], dict[str, Any]] = lambda scene: {}
    query: Callable[[Scene], dict[str, Any]] = lambda scene: {}


def none(scene: Scene, slug: str, owner: Tenant) -> list[Any]:
    return []


def tenant(scene: Scene, slug: str, owner: Tenant) -> list[Any]:
    return [slug]


def owned(attribute: str) -> Callable[[Scene, str, Tenant], list[Any]]:
    """[slug, pk of the owner's key/quota/grant]: the slug and the object may disagree."""

    def args(scene: Scene, slug: str, owner: Tenant) -> list[Any]:
        suffix = "b" if owner == scene.tenant_b else "a"
        return [slug, getattr(scene, f"{attribute}_{suffix}").pk]

    return args


ROUTES: dict[str, Route] = {
    "overview": Route(LIST, ("get",), none),
    "tenants": Route(LIST, ("get",), none),
    "tenant": Route(OBJECT, ("get",), tenant),
    "tenant-update": Route(
        OBJECT, ("post",), tenant, lambda s: {"name": "Taken over", "priority_class": "high"}
    ),
    "key-create": Route(OBJECT, ("post",), tenant, lambda s: {"name": "intruder"}),
    "key-revoke": Route(OBJECT, ("post",), owned("key")),
    "key-rotate": Route(OBJECT, ("post",), owned("key"), lambda s: {"grace": "0"}),
    "quota-create": Route(
        OBJECT, ("post",), tenant, lambda s: {"model": s.model_b.pk, "requests_per_minute": 999_999}
    ),
    "quota": Route(OBJECT, ("get",), owned("quota")),
    "quota-edit": Route(
        OBJECT, ("get", "post"), owned("quota"), lambda s: {"requests_per_minute": 999_999}
    ),
    "quota-delete": Route(OBJECT, ("post",), owned("quota")),
    "grant-create": Route(OBJECT, ("post",), tenant, lambda s: {"model": s.model_free.pk}),
    "grant-delete": Route(OBJECT, ("post",), owned("grant")),
    "models": Route(LIST, ("get",), none),
    "runtime-create": Route(
        FLEET,
        ("post",),
        none,
        lambda s: {"name": "rogue", "engine": "vllm", "version": "1", "python_path": "/bin/sh"},
    ),
    # A model granted to B only is B's, as far as A can tell.
    "model": Route(OBJECT, ("get",), lambda s, slug, owner: [s.model_b.pk]),
    "version-create": Route(FLEET, ("post",), lambda s, slug, owner: [s.model_b.pk]),
    "version-state": Route(
        FLEET, ("post",), lambda s, slug, owner: [s.version.pk], lambda s: {"state": "retired"}
    ),
    "deployments": Route(FLEET, ("get", "post"), none),
    "deployment-update": Route(
        FLEET,
        ("post",),
        lambda s, slug, owner: [s.deployment.pk],
        lambda s: {"replicas": 9, "traffic_weight": 100, "desired_state": "running"},
    ),
    "deployment-delete": Route(FLEET, ("post",), lambda s, slug, owner: [s.deployment.pk]),
    "nodes": Route(FLEET, ("get",), none),
    "node": Route(FLEET, ("get",), lambda s, slug, owner: [s.node.name]),
    "node-action": Route(FLEET, ("post",), lambda s, slug, owner: [s.node.name, "drain"]),
    "worker-log": Route(FLEET, ("get",), lambda s, slug, owner: [s.worker.pk]),
    "worker-action": Route(FLEET, ("post",), lambda s, slug, owner: [s.worker.pk, "drain"]),
    # Filtered to B: refused exactly as a tenant id that does not exist (an invalid choice,
    # 422 on the page and 400 for the CSV), so nothing about B is revealed either way.
    "usage": Route(FILTER, ("get",), none, query=lambda s: {"tenant": s.tenant_b.pk}),
    "usage-csv": Route(FILTER, ("get",), none, query=lambda s: {"tenant": s.tenant_b.pk}),
    "audit": Route(LIST, ("get",), none),
}
# Routes that name one of a tenant's objects besides its slug: B's object under A's own slug
# must be 404 as well (the object is looked up within the slug's tenant).
MIXED = {"key-revoke", "key-rotate", "quota", "quota-edit", "quota-delete", "grant-delete"}

# Names, ids and texts of B's that no page of A's may show.
B_MARKERS = ("globex", "Globex", "scene-model-b-secret", "scene-key-b-secret", "req-scene-b")


def browser(actor: Actor) -> Client:
    client = Client()
    client.force_login(actor.user)
    return client


def call(client: Client, method: str, url: str, route: Route, scene: Scene) -> Any:
    if method == "get":
        return client.get(url, route.query(scene))
    return client.post(url, route.data(scene))


def without_tokens(page: bytes) -> str:
    return re.sub(r"[A-Za-z0-9]{64}", "TOKEN", page.decode())


def test_every_dashboard_route_is_in_the_matrix() -> None:
    assert {pattern.name for pattern in dashboard_urls.urlpatterns} == set(ROUTES)


@pytest.mark.parametrize("role", ["admin_a", "viewer_a"])
def test_tenant_a_reads_and_changes_nothing_of_tenant_b(
    role: str, request: pytest.FixtureRequest, scene: Scene, platform_admin: Actor
) -> None:
    actor: Actor = request.getfixturevalue(role)
    client = browser(actor)  # signed in before the snapshot: signing in writes last_login
    before = database_state()
    tenant_a, tenant_b = scene.tenant_a, scene.tenant_b
    checked = 0
    for name, route in ROUTES.items():
        slugs = [tenant_b.slug, tenant_a.slug] if name in MIXED else [tenant_b.slug]
        for slug in slugs:
            url = reverse(f"dashboard:{name}", args=route.args(scene, slug, tenant_b))
            for method in route.methods:
                response = call(client, method, url, route, scene)
                status = response.status_code
                expected = {OBJECT: 404, FLEET: 403, LIST: 200}.get(route.kind)
                if route.kind == FILTER:
                    missing = client.get(url, {"tenant": 999_999})
                    assert status == missing.status_code and status in (400, 422), name
                    assert without_tokens(response.content) == without_tokens(missing.content)
                else:
                    assert status == expected, (name, method, slug, status)
                body = response.content.decode(errors="replace")
                for marker in B_MARKERS:
                    assert marker not in body, (name, method, marker)
                checked += 1
    assert checked > len(ROUTES)  # every route, and B's objects under A's slug too
    assert database_state() == before

    # The same URLs work for a platform admin: the refusals above were isolation, not URLs
    # that name nothing.
    admin = browser(platform_admin)
    deletes_last = sorted(ROUTES.items(), key=lambda item: item[0].endswith("-delete"))
    for name, route in deletes_last:
        url = reverse(f"dashboard:{name}", args=route.args(scene, tenant_b.slug, tenant_b))
        for method in route.methods:
            status = call(admin, method, url, route, scene).status_code
            assert status < 400 or (name, status) in ADMIN_FORM_ERRORS, (name, method, status)


# A platform admin gets a form's 422 for these (the route reached, its object found all the
# same): the matrix's data is not a whole version or deployment, and key-revoke has just
# revoked the key that key-rotate then refuses to rotate.
ADMIN_FORM_ERRORS = {("version-create", 422), ("deployments", 422), ("key-rotate", 422)}


def test_a_viewer_changes_nothing_of_its_own_tenant(viewer_a: Actor, scene: Scene) -> None:
    client = browser(viewer_a)
    before = database_state()
    tenant_a = scene.tenant_a
    for name, route in ROUTES.items():
        if route.kind != OBJECT or name == "model":
            continue
        url = reverse(f"dashboard:{name}", args=route.args(scene, tenant_a.slug, tenant_a))
        for method in route.methods:
            status = call(client, method, url, route, scene).status_code
            reads = method == "get" and name != "quota-edit"  # the edit form is for writers
            # The read-only quota card is a fragment; a plain visit goes to the tenant page.
            allowed = {200, 302} if reads else {403}
            assert status in allowed, (name, method, status)
    assert database_state() == before
