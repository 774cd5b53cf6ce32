"""Template context for every page: who is looking, so the navigation follows the role."""

from __future__ import annotations

from django.http import HttpRequest

from tenants.roles import Actor, actor_of


def dashboard(request: HttpRequest) -> dict[str, Actor]:
    return {"who": actor_of(getattr(request, "user", None))}
