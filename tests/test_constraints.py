"""Rules the database itself enforces, whatever code (or `.update()`) writes to it."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction

from controlplane.models import UsageRecord
from models_registry.models import ModelGrant, ModelVersion
from nodes.models import Deployment, Gpu, Node, Worker
from tenants.models import ApiKey, Membership, Quota, Role, Tenant
from tests import factories

pytestmark = pytest.mark.django_db


def refused(action: object) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        action()  # type: ignore[operator]


def test_a_duplicate_tenant_wide_quota_is_refused(tenant_a: Tenant) -> None:
    factories.quota(tenant_a)
    refused(lambda: Quota.objects.create(tenant=tenant_a, requests_per_minute=1))


def test_a_duplicate_quota_per_key_per_model_and_per_key_and_model_is_refused(
    tenant_a: Tenant,
) -> None:
    key = factories.api_key(tenant_a)
    model = factories.grant(tenant_a).model
    for scope in ({"api_key": key}, {"model": model}, {"api_key": key, "model": model}):
        Quota.objects.create(tenant=tenant_a, **scope)
        refused(lambda scope=scope: Quota.objects.create(tenant=tenant_a, **scope))
    # Four scopes, four quotas: each shape of scope is unique on its own.
    factories.quota(tenant_a)
    assert Quota.objects.filter(tenant=tenant_a).count() == 4


def test_a_negative_price_written_by_update_is_refused() -> None:
    version = factories.version()
    for field in (
        "price_input_per_million",
        "price_cached_input_per_million",
        "price_output_per_million",
    ):
        refused(
            lambda field=field: ModelVersion.objects.filter(pk=version.pk).update(
                **{field: Decimal("-1")}
            )
        )


def test_a_negative_quota_cost_written_by_update_is_refused(tenant_a: Tenant) -> None:
    quota = factories.quota(tenant_a)
    refused(lambda: Quota.objects.filter(pk=quota.pk).update(cost_per_day=Decimal("-0.5")))


def test_an_unknown_state_or_task_is_refused() -> None:
    version = factories.version()
    node = factories.node()
    refused(lambda: ModelVersion.objects.filter(pk=version.pk).update(state="deleted"))
    refused(lambda: Node.objects.filter(pk=node.pk).update(state="exploded"))
    refused(lambda: version.model.__class__.objects.filter(pk=version.model_id).update(task="x"))


def test_two_live_workers_on_a_node_cannot_share_a_port() -> None:
    node = factories.node()
    factories.worker(node=node, port=8100, state="ready")
    refused(lambda: factories.worker(node=node, port=8100, state="starting"))
    # A stopped worker's port is free again.
    factories.worker(node=node, port=8101, state="stopped")
    factories.worker(node=node, port=8101, state="pending")
    assert Worker.objects.filter(node=node).count() == 3


def test_a_gpu_index_is_unique_per_node() -> None:
    gpu = factories.gpu()
    refused(
        lambda: Gpu.objects.create(
            node=gpu.node, index=gpu.index, uuid="GPU-other", name="x", memory_total_bytes=1
        )
    )


def test_a_deployment_needs_at_least_one_gpu_per_replica() -> None:
    deployment = factories.deployment()
    refused(lambda: Deployment.objects.filter(pk=deployment.pk).update(gpus_per_replica=0))


def test_a_grant_is_unique_per_tenant_and_model(tenant_a: Tenant) -> None:
    grant = factories.grant(tenant_a)
    refused(lambda: ModelGrant.objects.create(tenant=tenant_a, model=grant.model))


def test_two_active_keys_of_a_tenant_cannot_share_a_name_but_a_revoked_one_can(
    tenant_a: Tenant,
) -> None:
    key = factories.api_key(tenant_a, name="prod")
    refused(lambda: factories.api_key(tenant_a, name="prod"))
    key.revoke()
    factories.api_key(tenant_a, name="prod")
    assert ApiKey.objects.filter(name="prod").count() == 2


def test_a_membership_role_must_match_its_tenant(tenant_a: Tenant) -> None:
    user = get_user_model().objects.create_user(username="u")
    refused(lambda: Membership.objects.create(user=user, role=Role.PLATFORM_ADMIN, tenant=tenant_a))
    refused(lambda: Membership.objects.create(user=user, role=Role.TENANT_ADMIN, tenant=None))


def test_usage_cost_and_cached_tokens_are_checked(tenant_a: Tenant) -> None:
    record = factories.usage(tenant_a, prompt_tokens=10)
    refused(lambda: UsageRecord.objects.filter(pk=record.pk).update(cost=Decimal("-1")))
    refused(lambda: UsageRecord.objects.filter(pk=record.pk).update(cached_tokens=11))
    refused(lambda: factories.usage(tenant_a, request_id=record.request_id))


def test_a_tenant_with_usage_cannot_be_deleted(tenant_a: Tenant) -> None:
    from django.db.models import ProtectedError

    factories.usage(tenant_a)
    with pytest.raises(ProtectedError):
        tenant_a.delete()
