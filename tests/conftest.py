"""Shared fixtures: named actors, so every isolation test is one line of setup."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from tenants.models import ApiToken, Membership, Role, Tenant
from tests import scene as scenes


@dataclass
class Actor:
    user: Any
    token: str
    client: APIClient


def make_actor(username: str, role: Role, tenant: Tenant | None) -> Actor:
    user = get_user_model().objects.create_user(username=username, password="pw-" + username)
    Membership.objects.create(user=user, role=role, tenant=tenant)
    _, token = ApiToken.issue(user=user, name=f"{username} automation")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return Actor(user=user, token=token, client=client)


@pytest.fixture
def tenant_a(db: None) -> Tenant:
    return Tenant.objects.create(slug="acme", name="Acme")


@pytest.fixture
def tenant_b(db: None) -> Tenant:
    return Tenant.objects.create(slug="globex", name="Globex")


@pytest.fixture
def platform_admin(db: None) -> Actor:
    return make_actor("root", Role.PLATFORM_ADMIN, None)


@pytest.fixture
def admin_a(tenant_a: Tenant) -> Actor:
    return make_actor("alice", Role.TENANT_ADMIN, tenant_a)


@pytest.fixture
def viewer_a(tenant_a: Tenant) -> Actor:
    return make_actor("victor", Role.TENANT_VIEWER, tenant_a)


@pytest.fixture
def admin_b(tenant_b: Tenant) -> Actor:
    return make_actor("bob", Role.TENANT_ADMIN, tenant_b)


@pytest.fixture
def scene(tenant_a: Tenant, tenant_b: Tenant) -> scenes.Scene:
    """One of everything, for two tenants (tests/scene.py)."""
    return scenes.build(tenant_a, tenant_b)
