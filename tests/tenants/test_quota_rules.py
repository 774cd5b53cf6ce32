"""A quota's rules, each proved once against every face that writes quotas: the REST API, the
dashboard's form, the Django admin and the model itself (`Quota.full_clean`, which the other
three run). Each face refuses with a readable error beside the same field and writes nothing.

The rules live in tenants/models.py: `Quota.clean` (limits, key, model) and `Quota.Meta`
(one quota per scope).
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from controlplane.models import AuditEvent
from tenants.models import Quota, Tenant
from tests import factories
from tests.conftest import Actor
from tests.faces import NON_FIELD, admin_add, dashboard, model_errors, rest, words

pytestmark = pytest.mark.django_db

NO_LIMITS = {name: "" for name in Quota.LIMIT_FIELDS}


def every_face(
    platform_admin: Actor,
    board: Client,
    staff: Client,
    tenant: Tenant,
    scope: dict[str, Any],
    limits: dict[str, Any],
) -> dict[str, tuple[int, dict[str, list[str]]]]:
    """The same quota submitted through each face: {face: (status, errors by field)}."""
    ids = {name: getattr(value, "pk", value) for name, value in scope.items()}
    answers = {
        "rest": rest(platform_admin, "quotas", {"tenant": tenant.pk, **ids, **limits}),
        "dashboard": dashboard(
            board,
            reverse("dashboard:quota-create", args=[tenant.slug]),
            {"api_key": "", "model": "", **NO_LIMITS, **ids, **limits},
            "quota_form",
        ),
        "admin": admin_add(
            staff,
            Quota,
            {"tenant": tenant.pk, "api_key": "", "model": "", **NO_LIMITS, **ids, **limits},
        ),
        "model": (0, model_errors(Quota(tenant=tenant, **scope, **limits))),
    }
    return answers


REFUSED = {"rest": 400, "dashboard": 422, "admin": 200, "model": 0}


def assert_refused(
    answers: dict[str, tuple[int, dict[str, list[str]]]], field: str, phrase: str
) -> None:
    for face, (status, errors) in answers.items():
        assert status == REFUSED[face], (face, status, errors)
        assert phrase in words(errors, field), (face, errors)


def test_a_quota_without_any_limit_is_refused_by_every_face(
    platform_admin: Actor, board: Client, staff: Client, tenant_a: Tenant
) -> None:
    answers = every_face(platform_admin, board, staff, tenant_a, {}, {})
    assert_refused(answers, NON_FIELD, "Set at least one limit")
    assert not Quota.objects.exists()
    assert not AuditEvent.objects.exists()


def test_a_quota_for_a_model_the_tenant_is_not_granted_is_refused_by_every_face(
    platform_admin: Actor, board: Client, staff: Client, tenant_a: Tenant
) -> None:
    model = factories.model(name="tiny-chat")
    answers = every_face(
        platform_admin, board, staff, tenant_a, {"model": model}, {"requests_per_minute": 5}
    )
    assert_refused(answers, "model", "acme is not granted tiny-chat")
    assert not Quota.objects.exists()
    assert not AuditEvent.objects.exists()


def test_a_quota_for_another_tenants_key_is_refused_by_every_face(
    platform_admin: Actor, board: Client, staff: Client, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    key_b = factories.api_key(tenant_b)
    answers = every_face(
        platform_admin, board, staff, tenant_a, {"api_key": key_b}, {"requests_per_minute": 5}
    )
    # The dashboard offers only the tenant's own keys: another's is not even a choice.
    assert "Select a valid choice" in words(answers.pop("dashboard")[1], "api_key")
    assert_refused(answers, "api_key", "belongs to tenant globex, not acme")
    assert not Quota.objects.exists()


def test_a_second_quota_for_the_same_scope_is_refused_by_every_face(
    platform_admin: Actor, board: Client, staff: Client, tenant_a: Tenant
) -> None:
    factories.quota(tenant_a)
    answers = every_face(platform_admin, board, staff, tenant_a, {}, {"tokens_per_day": 1000})
    assert_refused(answers, NON_FIELD, "A quota for this scope already exists")
    assert Quota.objects.count() == 1


def test_a_negative_limit_is_refused_beside_its_field_by_every_face(
    platform_admin: Actor, board: Client, staff: Client, tenant_a: Tenant
) -> None:
    answers = every_face(platform_admin, board, staff, tenant_a, {}, {"cost_per_day": "-1"})
    assert_refused(answers, "cost_per_day", "greater than or equal to 0")
    assert not Quota.objects.exists()


def test_a_quota_with_one_limit_for_a_granted_model_is_accepted_by_every_face(
    platform_admin: Actor, board: Client, staff: Client, tenant_a: Tenant
) -> None:
    """The control case: the rules above refuse only what they say."""
    grant = factories.grant(tenant_a)
    assert (
        rest(platform_admin, "quotas", {"tenant": tenant_a.pk, "requests_per_minute": 1})[0] == 201
    )
    Quota.objects.all().delete()
    status, _ = dashboard(
        board,
        reverse("dashboard:quota-create", args=["acme"]),
        {**NO_LIMITS, "api_key": "", "model": grant.model_id, "tokens_per_day": "5"},
        "quota_form",
    )
    assert status == 200
    status, errors = admin_add(
        staff,
        Quota,
        {**NO_LIMITS, "tenant": tenant_a.pk, "api_key": "", "model": ""}
        | {"requests_per_minute": "7"},
    )
    assert status == 302, errors
    assert Quota.objects.count() == 2
