"""CRUD through the REST API for every resource, as a platform admin.

`ResourceCase` holds the tests; each concrete class only declares its endpoint, its model and
its sample data. Every write must answer with the documented status, change the database,
and leave an audit event (via="api").
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, ClassVar

import pytest
from django.contrib.auth import get_user_model
from django.db import models
from rest_framework.test import APIClient

from controlplane.models import AuditEvent, UsageRecord
from models_registry.models import EngineRuntime, Model, ModelGrant, ModelVersion
from nodes.models import Deployment, Gpu, Node, Worker
from tenants.models import ApiKey, ApiToken, Quota, Tenant
from tests import factories
from tests.conftest import Actor

pytestmark = pytest.mark.django_db


class ResourceCase:
    endpoint: ClassVar[str]
    model: ClassVar[type[models.Model]]
    creatable: ClassVar[bool] = True
    updatable: ClassVar[bool] = True
    deletable: ClassVar[bool] = True

    tenant: Tenant
    admin: Actor

    @pytest.fixture(autouse=True)
    def _actors(self, tenant_a: Tenant, platform_admin: Actor) -> None:
        self.tenant = tenant_a
        self.admin = platform_admin

    # --- what a concrete class declares -------------------------------------------------
    # The audit action of a creation and of a deletion (controlplane.audit.Action).
    create_action, update_action, delete_action = "create", "update", "delete"

    def sample(self) -> models.Model:
        raise NotImplementedError

    def create_payload(self) -> dict[str, Any]:
        raise NotImplementedError

    def update_payload(self) -> dict[str, Any]:
        raise NotImplementedError

    # --- helpers ------------------------------------------------------------------------
    @property
    def client(self) -> APIClient:
        return self.admin.client

    def url(self, pk: Any = None) -> str:
        base = f"/api/v1/{self.endpoint}/"
        return base if pk is None else f"{base}{pk}/"

    def audited(self, action: str, obj_id: Any) -> bool:
        return AuditEvent.objects.filter(
            action=action,
            via="api",
            object_type=self.model._meta.label,
            object_id=str(obj_id),
            actor=self.admin.user,
        ).exists()

    # --- the tests ----------------------------------------------------------------------
    def test_it_lists_with_limit_offset_pagination(self) -> None:
        obj = self.sample()
        response = self.client.get(self.url(), {"limit": 1000})
        assert response.status_code == 200, response.data
        assert {"count", "next", "previous", "results"} <= set(response.data)
        assert obj.pk in [row["id"] for row in response.data["results"]]

    def test_it_retrieves_one(self) -> None:
        obj = self.sample()
        response = self.client.get(self.url(obj.pk))
        assert response.status_code == 200, response.data
        assert response.data["id"] == obj.pk

    def test_it_creates_one_and_audits_it(self) -> None:
        payload = self.create_payload()
        before = self.model._default_manager.count()
        response = self.client.post(self.url(), payload, format="json")
        if not self.creatable:
            assert response.status_code == 405
            assert self.model._default_manager.count() == before
            return
        assert response.status_code == 201, response.data
        assert self.model._default_manager.count() == before + 1
        assert self.audited(self.create_action, response.data["id"])

    def test_it_updates_one_and_audits_the_change(self) -> None:
        obj = self.sample()
        payload = self.update_payload()
        response = self.client.patch(self.url(obj.pk), payload, format="json")
        if not self.updatable:
            assert response.status_code == 405
            return
        assert response.status_code == 200, response.data
        for name, value in payload.items():
            assert response.data[name] == value
        event = AuditEvent.objects.get(
            action=self.update_action, object_type=self.model._meta.label, object_id=str(obj.pk)
        )
        assert set(payload) & set(event.changes), event.changes

    def test_it_deletes_one_and_audits_it(self) -> None:
        obj = self.sample()
        response = self.client.delete(self.url(obj.pk))
        if not self.deletable:
            assert response.status_code == 405
            assert self.model._default_manager.filter(pk=obj.pk).exists()
            return
        assert response.status_code == 204, getattr(response, "data", None)
        assert not self.model._default_manager.filter(pk=obj.pk).exists()
        assert self.audited(self.delete_action, obj.pk)

    def test_it_refuses_anonymous_callers(self) -> None:
        obj = self.sample()
        anonymous = APIClient()
        assert anonymous.get(self.url()).status_code == 401
        assert anonymous.get(self.url(obj.pk)).status_code == 401
        assert anonymous.post(self.url(), self.create_payload(), format="json").status_code == 401

    def test_it_refuses_an_invalid_token(self) -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION="Bearer cpt-not-a-real-token")
        assert client.get(self.url()).status_code == 401


class TestTenants(ResourceCase):
    endpoint, model = "tenants", Tenant

    def sample(self) -> models.Model:
        return factories.api_key(self.tenant).tenant

    def create_payload(self) -> dict[str, Any]:
        return {"slug": "initech", "name": "Initech", "priority_class": "high"}

    def update_payload(self) -> dict[str, Any]:
        return {"name": "Acme Corporation", "active": False}


class TestUsers(ResourceCase):
    endpoint, model = "users", get_user_model()

    def sample(self) -> models.Model:
        from tenants.models import Role
        from tests.conftest import make_actor

        return make_actor("wendy", Role.TENANT_VIEWER, self.tenant).user

    def create_payload(self) -> dict[str, Any]:
        return {
            "username": "carol",
            "password": "a long pass phrase 9",
            "role": "tenant_admin",
            "tenant": self.tenant.pk,
        }

    def update_payload(self) -> dict[str, Any]:
        return {"role": "tenant_admin", "email": "wendy@example.com"}

    def test_a_created_user_has_its_role_and_password_but_no_password_in_the_response(
        self,
    ) -> None:
        response = self.client.post(self.url(), self.create_payload(), format="json")
        assert response.status_code == 201, response.data
        assert "password" not in response.data
        user = get_user_model().objects.get(username="carol")
        assert user.check_password("a long pass phrase 9")
        assert user.membership.role == "tenant_admin"
        assert user.membership.tenant == self.tenant


class TestApiKeys(ResourceCase):
    endpoint, model = "api-keys", ApiKey
    deletable = False  # keys are revoked, so usage stays attributed
    create_action = "issue"

    def sample(self) -> models.Model:
        return factories.api_key(self.tenant)

    def create_payload(self) -> dict[str, Any]:
        return {"tenant": self.tenant.pk, "name": "ci"}

    def update_payload(self) -> dict[str, Any]:
        return {"name": "ci-renamed"}


class TestApiTokens(ResourceCase):
    endpoint, model = "api-tokens", ApiToken
    updatable = False
    deletable = False  # tokens are revoked
    create_action = "issue"

    def sample(self) -> models.Model:
        token, _ = ApiToken.issue(user=self.admin.user, name="terraform")
        return token

    def create_payload(self) -> dict[str, Any]:
        return {"name": "terraform"}

    def update_payload(self) -> dict[str, Any]:
        return {"name": "renamed"}


class TestQuotas(ResourceCase):
    endpoint, model = "quotas", Quota

    def sample(self) -> models.Model:
        return factories.quota(self.tenant, api_key=factories.api_key(self.tenant))

    def create_payload(self) -> dict[str, Any]:
        return {"tenant": self.tenant.pk, "requests_per_minute": 100, "cost_per_day": "25.0000"}

    def update_payload(self) -> dict[str, Any]:
        return {"tokens_per_minute": 50000}


class TestEngineRuntimes(ResourceCase):
    endpoint, model = "engine-runtimes", EngineRuntime

    def sample(self) -> models.Model:
        return factories.runtime()

    def create_payload(self) -> dict[str, Any]:
        return {
            "name": "vllm-cpu",
            "version": "0.32.0",
            "python_path": "/opt/engine/bin/python",
            "environment": {"VLLM_CPU_KVCACHE_SPACE": "1"},
        }

    def update_payload(self) -> dict[str, Any]:
        return {"version": "0.33.0"}


class TestModels(ResourceCase):
    endpoint, model = "models", Model

    def sample(self) -> models.Model:
        return factories.model()

    def create_payload(self) -> dict[str, Any]:
        return {"name": "qwen2.5-0.5b-instruct", "task": "chat", "description": "small"}

    def update_payload(self) -> dict[str, Any]:
        return {"description": "a tiny chat model"}


class TestModelVersions(ResourceCase):
    endpoint, model = "model-versions", ModelVersion

    def sample(self) -> models.Model:
        return factories.version()

    def create_payload(self) -> dict[str, Any]:
        return {
            "model": factories.model().pk,
            "runtime": factories.runtime().pk,
            "label": "2026-12",
            "weights_source": "/models/tiny-llama",
            "max_model_len": 2048,
            "extra_args": {"max-num-seqs": 8, "enforce-eager": True},
            "price_input_per_million": "0.100000",
            "price_output_per_million": "0.400000",
        }

    def update_payload(self) -> dict[str, Any]:
        return {"state": "active", "price_output_per_million": "0.500000"}


class TestGrants(ResourceCase):
    endpoint, model = "grants", ModelGrant
    updatable = False  # a grant is created or deleted, not edited
    create_action, delete_action = "grant", "ungrant"

    def sample(self) -> models.Model:
        return factories.grant(self.tenant)

    def create_payload(self) -> dict[str, Any]:
        return {"tenant": self.tenant.pk, "model": factories.model().pk}

    def update_payload(self) -> dict[str, Any]:
        return {"model": factories.model().pk}


class TestNodes(ResourceCase):
    endpoint, model = "nodes", Node

    def sample(self) -> models.Model:
        return factories.node()

    def create_payload(self) -> dict[str, Any]:
        return {"name": "gpu-node-1", "address": "10.0.0.5", "labels": {"zone": "a"}}

    def update_payload(self) -> dict[str, Any]:
        return {"state": "cordoned", "labels": {"zone": "b"}}


class TestGpus(ResourceCase):
    endpoint, model = "gpus", Gpu
    creatable = updatable = deletable = False  # reported by the node agents

    def sample(self) -> models.Model:
        return factories.gpu()

    def create_payload(self) -> dict[str, Any]:
        node = factories.node()
        return {"node": node.pk, "index": 0, "uuid": "GPU-1", "name": "x", "memory_total_bytes": 1}

    def update_payload(self) -> dict[str, Any]:
        return {"name": "renamed"}


class TestDeployments(ResourceCase):
    endpoint, model = "deployments", Deployment
    update_action = "scale"  # replicas: nodes.services.scale_deployment, as on the dashboard

    def sample(self) -> models.Model:
        return factories.deployment()

    def create_payload(self) -> dict[str, Any]:
        return {
            "name": "tiny-chat",
            "model_version": factories.version().pk,
            "replicas": 2,
            "label_selector": {"zone": "a"},
        }

    def update_payload(self) -> dict[str, Any]:
        return {"replicas": 3}


class TestWorkers(ResourceCase):
    endpoint, model = "workers", Worker
    creatable = updatable = deletable = False  # the scheduler and the node agents own them

    def sample(self) -> models.Model:
        return factories.worker(port=8100, state="ready")

    def create_payload(self) -> dict[str, Any]:
        return {"deployment": factories.deployment().pk}

    def update_payload(self) -> dict[str, Any]:
        return {"state": "stopped"}


class TestUsageRecords(ResourceCase):
    endpoint, model = "usage-records", UsageRecord
    creatable = updatable = deletable = False  # written by the gateway's metering

    def sample(self) -> models.Model:
        return factories.usage(self.tenant, cost=Decimal("0.25"))

    def create_payload(self) -> dict[str, Any]:
        return {"tenant": self.tenant.pk, "request_id": "r1", "endpoint": "completions"}

    def update_payload(self) -> dict[str, Any]:
        return {"cost": "0"}


class TestAuditEvents(ResourceCase):
    endpoint, model = "audit-events", AuditEvent
    creatable = updatable = deletable = False  # an audit log is append-only

    def sample(self) -> models.Model:
        return factories.audit_event(self.tenant)

    def create_payload(self) -> dict[str, Any]:
        return {"action": "forged", "via": "api", "object_type": "x"}

    def update_payload(self) -> dict[str, Any]:
        return {"action": "forged"}
