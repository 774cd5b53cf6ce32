"""The rules of API keys and API tokens, each proved once against every face that writes them:
the REST API, the dashboard's form, the Django admin and the service (tenants/services.py),
which the other three call. Each refuses with a readable error beside the same field and
writes nothing.

The rules live in tenants/models.py (ApiKey.Meta, ApiKey.clean, ApiKey.clean_many_to_many,
ApiToken.clean); rotation's preconditions in tenants/services.rotation_problem.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from controlplane import audit
from controlplane.models import AuditEvent
from tenants import services
from tenants.models import ApiKey, ApiToken, Tenant
from tests import factories
from tests.conftest import Actor
from tests.faces import NON_FIELD, admin_add, dashboard, rest, words

pytestmark = pytest.mark.django_db

REFUSED = {"rest": 400, "dashboard": 422, "admin": 200, "service": 0}


def service_errors(call: Any) -> dict[str, list[str]]:
    try:
        call()
    except ValidationError as exc:
        return dict(exc.message_dict) if hasattr(exc, "error_dict") else {NON_FIELD: exc.messages}
    return {}


def new_key_everywhere(
    admin: Actor,
    board: Client,
    staff: Client,
    tenant: Tenant,
    *,
    own_names: bool = False,
    **fields: Any,
) -> dict[str, tuple[int, dict[str, list[str]]]]:
    """The same new key through each face: {face: (status, errors by field)}. With
    `own_names`, each face names its key after itself, so that every one can succeed."""
    models = fields.pop("allowed_models", [])
    name = fields.pop("name")

    def named(face: str) -> str:
        return f"{name}-{face}" if own_names else name

    when = fields.get("expires_at")
    local = timezone.localtime(when).strftime("%Y-%m-%dT%H:%M") if when else ""
    return {
        "rest": rest(
            admin,
            "api-keys",
            {
                "tenant": tenant.pk,
                "name": named("rest"),
                **fields,
                "allowed_models": [m.pk for m in models],
            },
        ),
        "dashboard": dashboard(
            board,
            reverse("dashboard:key-create", args=[tenant.slug]),
            {"name": named("board"), "expires_at": local, "allowed_models": [m.pk for m in models]},
            "key_form",
        ),
        "admin": admin_add(
            staff,
            ApiKey,
            {
                "tenant": tenant.pk,
                "name": named("admin"),
                "expires_at_0": timezone.localtime(when).strftime("%Y-%m-%d") if when else "",
                "expires_at_1": timezone.localtime(when).strftime("%H:%M:%S") if when else "",
                "allowed_models": [m.pk for m in models],
            },
        ),
        "service": (
            0,
            service_errors(
                lambda: services.issue_key(
                    ApiKey(tenant=tenant, name=named("service"), **fields),
                    allowed_models=models,
                    origin=audit.SYSTEM,
                )
            ),
        ),
    }


def assert_refused(answers: dict[str, Any], field: str, phrase: str) -> None:
    for face, (status, errors) in answers.items():
        assert status == REFUSED[face], (face, status, errors)
        assert phrase in words(errors, field), (face, errors)


def test_a_second_active_key_of_the_same_name_is_refused_by_every_face(
    platform_admin: Actor, board: Client, staff: Client, tenant_a: Tenant
) -> None:
    factories.api_key(tenant_a, name="prod")
    answers = new_key_everywhere(platform_admin, board, staff, tenant_a, name="prod")
    assert_refused(answers, "name", "already has an active key with this name")
    assert ApiKey.objects.count() == 1
    assert not AuditEvent.objects.exists()


def test_the_name_of_a_revoked_key_can_be_used_again(
    platform_admin: Actor, tenant_a: Tenant
) -> None:
    factories.api_key(tenant_a, name="prod").revoke()
    assert rest(platform_admin, "api-keys", {"tenant": tenant_a.pk, "name": "prod"})[0] == 201


def test_a_key_expiring_in_the_past_is_refused_by_every_face(
    platform_admin: Actor, board: Client, staff: Client, tenant_a: Tenant
) -> None:
    past = timezone.now() - timedelta(hours=1)
    answers = new_key_everywhere(
        platform_admin, board, staff, tenant_a, name="prod", expires_at=past
    )
    assert_refused(answers, "expires_at", "must be in the future")
    assert not ApiKey.objects.exists()


def test_a_key_narrowed_to_a_model_its_tenant_is_not_granted_is_refused_by_every_face(
    platform_admin: Actor, board: Client, staff: Client, tenant_a: Tenant
) -> None:
    model = factories.model(name="tiny-chat")
    answers = new_key_everywhere(
        platform_admin, board, staff, tenant_a, name="prod", allowed_models=[model]
    )
    # The dashboard offers only granted models: another is not even a choice.
    assert "Select a valid choice" in words(answers.pop("dashboard")[1], "allowed_models")
    assert_refused(answers, "allowed_models", "Not granted to tenant acme: tiny-chat")
    assert not ApiKey.objects.exists()


def test_a_key_narrowed_to_granted_models_is_issued_by_every_face(
    platform_admin: Actor, board: Client, staff: Client, tenant_a: Tenant
) -> None:
    """The control case: the refusals above are about the rule, not the form."""
    model = factories.grant(tenant_a).model
    future = timezone.now() + timedelta(days=3)
    answers = new_key_everywhere(
        platform_admin,
        board,
        staff,
        tenant_a,
        own_names=True,
        name="prod",
        expires_at=future,
        allowed_models=[model],
    )
    for face, (status, errors) in answers.items():
        assert status == {"rest": 201, "dashboard": 200, "admin": 302, "service": 0}[face], (
            face,
            errors,
        )
        assert errors == {}, (face, errors)
    assert ApiKey.objects.count() == 4
    assert set(ApiKey.objects.values_list("allowed_models", flat=True)) == {model.pk}


def test_a_key_cannot_move_to_another_tenant(
    platform_admin: Actor, staff: Client, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    key = factories.api_key(tenant_a)
    status, errors = rest(platform_admin, "api-keys", {"tenant": tenant_b.pk}, pk=key.pk)
    assert status == 400
    assert "cannot move to another tenant" in words(errors, "tenant")
    key.tenant = tenant_b
    assert "tenant" in service_errors(
        lambda: services.update_key(key, fields={"tenant": tenant_b}, origin=audit.SYSTEM)
    )
    assert ApiKey.objects.get(pk=key.pk).tenant == tenant_a


def test_a_token_expiring_in_the_past_is_refused_by_every_face(
    platform_admin: Actor, staff: Client
) -> None:
    past = timezone.now() - timedelta(minutes=1)
    answers = {
        "rest": rest(platform_admin, "api-tokens", {"name": "ci", "expires_at": past.isoformat()}),
        "admin": admin_add(
            staff,
            ApiToken,
            {
                "user": platform_admin.user.pk,
                "name": "ci",
                "expires_at_0": timezone.localtime(past).strftime("%Y-%m-%d"),
                "expires_at_1": timezone.localtime(past).strftime("%H:%M:%S"),
            },
        ),
        "service": (
            0,
            service_errors(
                lambda: services.issue_token(
                    ApiToken(user=platform_admin.user, name="ci", expires_at=past),
                    origin=audit.CLI,
                )
            ),
        ),
    }
    assert_refused(answers, "expires_at", "must be in the future")
    assert ApiToken.objects.filter(name="ci").count() == 0


@pytest.mark.parametrize("state", ["revoked", "expired", "rotated"])
def test_a_key_that_is_not_active_or_was_rotated_cannot_be_rotated_by_any_face(
    platform_admin: Actor, board: Client, tenant_a: Tenant, state: str
) -> None:
    key = factories.api_key(tenant_a)
    if state == "revoked":
        key.revoke()
    elif state == "expired":
        ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
        key.refresh_from_db()
    else:
        services.rotate_key(key, origin=audit.SYSTEM)
    count = ApiKey.objects.count()
    phrase = {"revoked": "revoked key", "expired": "expired key", "rotated": "already rotated"}[
        state
    ]
    status, errors = rest(platform_admin, f"api-keys/{key.pk}/rotate", {})
    assert status == 400 and phrase in words(errors, NON_FIELD), errors
    status, errors = dashboard(
        board,
        reverse("dashboard:key-rotate", args=["acme", key.pk]),
        {"grace": "3600"},
        "rotate_form",
    )
    assert status == 422 and phrase in words(errors, NON_FIELD), errors
    assert phrase in words(
        service_errors(lambda: services.rotate_key(key, origin=audit.SYSTEM)), NON_FIELD
    )
    assert ApiKey.objects.count() == count
