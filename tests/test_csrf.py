"""CSRF on every form: walk every dashboard page as a platform admin (with one of everything in
the database, so every form appears), collect every `<form method=post>` and every htmx
`hx-post`/`hx-put`/`hx-patch`/`hx-delete` target, and check that

- the page carries the token: each such form has a `csrfmiddlewaretoken` field (a form must
  work without JavaScript), and a page with htmx writes sends `X-CSRFToken` through
  `hx-headers` on `<body>`;
- the same request without the token is refused by Django's CSRF check (403) and changes
  nothing in the database (every row of every project table compared);
- with the token, it is not refused (so the 403 above was the CSRF check, and the form's
  data was a real change that the check stopped).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import pytest
from django.test import Client
from django.urls import resolve, reverse

from dashboard import urls as dashboard_urls
from tests.conftest import Actor
from tests.scene import Scene, database_state

pytestmark = pytest.mark.django_db

HTMX_WRITES = ("hx-post", "hx-put", "hx-patch", "hx-delete")

# Every route of the dashboard, as reached by a form or an htmx write, or as a page only.
# A new route must be put in one of the two, so it cannot escape the walk unnoticed.
WRITE_ROUTES = {
    "tenants",  # POST creates a tenant
    "tenant-update",
    "key-create",
    "key-revoke",
    "key-rotate",
    "quota-create",
    "quota-edit",
    "quota-delete",
    "grant-create",
    "grant-delete",
    "models",  # POST creates a model
    "runtime-create",
    "version-create",
    "version-state",
    "deployments",  # POST creates a deployment
    "deployment-update",
    "deployment-delete",
    "node-action",
    "worker-action",
}
READ_ONLY_ROUTES = {
    "overview",
    "tenant",
    "quota",
    "model",
    "nodes",
    "node",
    "worker-log",
    "usage",
    "usage-csv",
    "audit",
}


@dataclass
class Target:
    method: str  # "post", "put", "patch" or "delete"
    url: str
    page: str  # where it was found
    via: str  # "form" or the htmx attribute
    data: dict[str, Any] = field(default_factory=dict)
    token: str = ""  # the form's own csrfmiddlewaretoken, if it has one

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.method, self.url, self.via)


class FormCollector(HTMLParser):
    """A page's write targets, each with its form's field values as the data to send."""

    def __init__(self, page: str, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.page = page
        self.targets: list[Target] = []
        self.body_headers: dict[str, str] = {}
        self.open: list[Target] = []  # the targets that send the current form's fields
        self.select: str | None = None
        self.textarea: str | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs_list: list[tuple[str, str | None]]) -> None:
        attrs = {k: v or "" for k, v in attrs_list}
        if tag == "body" and "hx-headers" in attrs:
            self.body_headers = json.loads(attrs["hx-headers"])
        new = [
            Target(name.removeprefix("hx-"), attrs[name], self.page, name)
            for name in HTMX_WRITES
            if name in attrs
        ]
        if tag == "form" and attrs.get("method", "get").lower() == "post":
            new.append(Target("post", attrs.get("action") or self.page, self.page, "form"))
        self.targets += new
        if tag == "form":
            self.open = new
        elif self.open:
            self.open += new  # htmx sends the enclosing form's fields along
        if not self.open:
            return
        name = attrs.get("name")
        if tag == "input" and name:
            kind = attrs.get("type", "text")
            if name == "csrfmiddlewaretoken":
                for target in self.open:
                    target.token = attrs.get("value", "")
            elif kind in ("checkbox", "radio"):
                if "checked" in attrs:
                    self._set(name, attrs.get("value", "on"))
            elif kind not in ("submit", "button"):
                self._set(name, attrs.get("value", ""))
        elif tag == "select" and name:
            self.select = name
        elif tag == "option" and self.select:
            if self.open[0].data.get(self.select) in (None, "") or "selected" in attrs:
                self._set(self.select, attrs.get("value", ""))
        elif tag == "textarea" and name:
            self.textarea = name
            self._set(name, "")

    def handle_data(self, data: str) -> None:
        if self.textarea and self.open:
            self._set(self.textarea, data.strip())

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self.select = None
        elif tag == "textarea":
            self.textarea = None
        elif tag == "form":
            self.open = []

    def _set(self, name: str, value: str) -> None:
        for target in self.open:
            target.data[name] = value


def page_urls(scene: Scene) -> list[str]:
    """Every page (GET) of the dashboard, with the scene's objects."""
    slug = scene.tenant_a.slug
    return [
        reverse("dashboard:overview"),
        reverse("dashboard:tenants"),
        reverse("dashboard:tenant", args=[slug]),
        reverse("dashboard:quota-edit", args=[slug, scene.quota_a.pk]),
        reverse("dashboard:models"),
        reverse("dashboard:model", args=[scene.model_a.pk]),
        reverse("dashboard:deployments"),
        reverse("dashboard:nodes"),
        reverse("dashboard:node", args=[scene.node.name]),
        reverse("dashboard:node", args=[scene.cordoned_node.name]),
        reverse("dashboard:worker-log", args=[scene.worker.pk]),
        reverse("dashboard:usage"),
        reverse("dashboard:audit"),
    ]


def signed_in(actor: Actor) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(actor.user)
    return client


def collect(client: Client, url: str) -> FormCollector:
    response = client.get(url)
    assert response.status_code == 200, url
    return FormCollector(url, response.content.decode())


def send(client: Client, target: Target, token: str | None) -> Any:
    """The request the browser makes: a plain form post, or htmx's (HX-Request, X-CSRFToken)."""
    data = dict(target.data)
    headers: dict[str, str] = {}
    if target.via != "form":
        headers["HX-Request"] = "true"
    if token is not None:
        if target.via == "form":
            data["csrfmiddlewaretoken"] = token
        else:
            headers["X-CSRFToken"] = token
    return getattr(client, target.method)(target.url, data, headers=headers)


def test_every_route_is_either_a_write_or_a_page() -> None:
    names = {pattern.name for pattern in dashboard_urls.urlpatterns}
    assert names == WRITE_ROUTES | READ_ONLY_ROUTES
    assert not WRITE_ROUTES & READ_ONLY_ROUTES


def test_every_form_and_htmx_write_needs_the_csrf_token(
    scene: Scene, platform_admin: Actor
) -> None:
    login_url = reverse("login")

    def client_for(target: Target) -> Client:
        if target.url == login_url:
            return Client(enforce_csrf_checks=True)  # the sign-in form is for visitors
        return signed_in(platform_admin)

    pages = [collect(signed_in(platform_admin), url) for url in page_urls(scene)]
    pages.append(collect(Client(enforce_csrf_checks=True), login_url))
    targets = list({t.key: t for page in pages for t in page.targets}.values())

    # Every write route of the dashboard is reached by some form on some page.
    reached = {resolve(t.url).url_name for t in targets} - {"login", "logout"}
    assert reached == WRITE_ROUTES
    # The page carries the token: in each form (no JavaScript needed), and for htmx.
    for page in pages:
        if any(t.via != "form" for t in page.targets):
            assert len(page.body_headers.get("X-CSRFToken", "")) == 64, page.page
    for target in targets:
        if target.via == "form":
            assert len(target.token) == 64, (target.page, target.url)

    # Without the token: Django's CSRF check refuses, and nothing at all changes.
    for target in targets:
        client = client_for(target)  # signing in writes last_login: before the snapshot
        before = database_state()
        response = send(client, target, token=None)
        assert response.status_code == 403, (target.via, target.url, response.status_code)
        assert b"CSRF verification failed" in response.content, target.url
        assert database_state() == before, (target.via, target.url)

    # With the page's own token the same request gets through: the refusals above were the
    # CSRF check's, not a role's or a bad form's.
    for target in targets:
        client = client_for(target)
        # Earlier requests may have removed this very form (a revoked key has no "Revoke", a
        # deleted quota no page): any page's token will do (masked copies of one secret).
        page = collect(client, login_url if target.url == login_url else page_urls(scene)[0])
        tokens = [t.token for t in page.targets if t.token]
        token = tokens[0] if target.via == "form" else page.body_headers["X-CSRFToken"]
        if target.url == login_url:
            target.data.update(username=platform_admin.user.username, password="pw-root")
        response = send(client, target, token=token)
        assert response.status_code != 403, (target.via, target.url, response.content[:300])
