"""The rules of versions, runtimes, grants and deployments, each proved once against every face
that writes them: the REST API, the dashboard's forms, the Django admin and the model itself
(`full_clean`, which the others run) or its service (models_registry/services.py). Each face
refuses with a readable error beside the same field and writes nothing.

The rules live in models_registry/models.py (ModelVersion, EngineRuntime, ModelGrant) and in
Deployment.clean (nodes/models.py); string maps in controlplane/validation.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse

from controlplane import audit
from controlplane.models import AuditEvent
from models_registry import services
from models_registry.models import EngineRuntime, ModelGrant, ModelVersion
from nodes.models import Deployment
from tenants.models import Tenant
from tests import factories
from tests.conftest import Actor
from tests.faces import admin_add, dashboard, model_errors, rest, words

pytestmark = pytest.mark.django_db

REFUSED = {"rest": 400, "dashboard": 422, "admin": 200, "model": 0}


def assert_refused(answers: dict[str, Any], field: str, phrase: str) -> None:
    for face, (status, errors) in answers.items():
        assert status == REFUSED[face], (face, status, errors)
        assert phrase in words(errors, field), (face, errors)


# --- deployments ---------------------------------------------------------------------------


def deployment_everywhere(
    admin: Actor, board: Client, staff: Client, **fields: Any
) -> dict[str, tuple[int, dict[str, list[str]]]]:
    version = fields["model_version"]
    selector = fields.get("label_selector", {})
    form = {
        "name": "chat",
        "model_version": version.pk,
        "replicas": "1",
        "gpus_per_replica": "1",
        "placement_strategy": "binpack",
        "label_selector": json.dumps(selector),
        "traffic_weight": "100",
    }
    return {
        "rest": rest(
            admin,
            "deployments",
            {"name": "chat", "model_version": version.pk, "label_selector": selector},
        ),
        "dashboard": dashboard(board, reverse("dashboard:deployments"), form, "form"),
        "admin": admin_add(
            staff,
            Deployment,
            form | {"desired_state": "running", "unschedulable_reason": ""},
        ),
        "model": (0, model_errors(Deployment(name="chat", **fields))),
    }


def test_a_retired_version_cannot_be_deployed_by_any_face(
    platform_admin: Actor, board: Client, staff: Client
) -> None:
    retired = factories.version(state="retired")
    answers = deployment_everywhere(platform_admin, board, staff, model_version=retired)
    # The dashboard does not offer retired versions at all.
    assert "Select a valid choice" in words(answers.pop("dashboard")[1], "model_version")
    assert_refused(answers, "model_version", "is retired: deploy a draft or active version")
    assert not Deployment.objects.exists()
    assert not AuditEvent.objects.exists()


def test_a_deployment_of_a_version_retired_later_can_still_be_scaled_down(
    platform_admin: Actor,
) -> None:
    deployment = factories.deployment(replicas=2)
    services.set_version_state(deployment.model_version, "retired", origin=audit.SYSTEM)
    status, errors = rest(platform_admin, "deployments", {"replicas": 0}, pk=deployment.pk)
    assert (status, errors) == (200, {})


def test_a_label_selector_must_map_strings_to_strings_on_every_face(
    platform_admin: Actor, board: Client, staff: Client
) -> None:
    version = factories.version(state="active")
    answers = deployment_everywhere(
        platform_admin, board, staff, model_version=version, label_selector={"zone": 1}
    )
    assert_refused(answers, "label_selector", "Values must be strings; not so for: zone")
    assert not Deployment.objects.exists()


# --- versions and runtimes -----------------------------------------------------------------


def version_everywhere(
    admin: Actor, board: Client, staff: Client, **fields: Any
) -> dict[str, tuple[int, dict[str, list[str]]]]:
    model, runtime = fields["model"], fields["runtime"]
    form = {
        "label": fields.get("label", "v1"),
        "weights_source": "/models/tiny",
        "weights_revision": "",
        "weights_size_bytes": "",
        "runtime": runtime.pk,
        "dtype": "auto",
        "quantization": "",
        "max_model_len": "",
        "enable_prefix_caching": "on",
        "kv_cache_bytes": str(1 << 30),
        "extra_args": json.dumps(fields.get("extra_args", {})),
        "speculative_config": "",
        "price_input_per_million": "0",
        "price_cached_input_per_million": "0",
        "price_output_per_million": "0",
        "state": "draft",
    }
    payload = {
        "model": model.pk,
        "runtime": runtime.pk,
        "label": form["label"],
        "weights_source": "/models/tiny",
        "extra_args": fields.get("extra_args", {}),
    }
    version = ModelVersion(weights_source="/models/tiny", **{"label": "v1"} | fields)
    return {
        "rest": rest(admin, "model-versions", payload),
        "dashboard": dashboard(
            board, reverse("dashboard:version-create", args=[model.pk]), form, "version_form"
        ),
        "admin": admin_add(staff, ModelVersion, form | {"model": model.pk}),
        "model": (0, model_errors(version)),
    }


def test_a_vllm_argument_outside_the_allow_list_is_refused_by_every_face(
    platform_admin: Actor, board: Client, staff: Client
) -> None:
    model, runtime = factories.model(), factories.runtime()
    answers = version_everywhere(
        platform_admin, board, staff, model=model, runtime=runtime, extra_args={"port": 9000}
    )
    assert_refused(answers, "extra_args", "set by the control plane")
    assert not ModelVersion.objects.exists()


def test_a_second_version_with_the_same_label_is_refused_beside_the_label_by_every_face(
    platform_admin: Actor, board: Client, staff: Client
) -> None:
    existing = factories.version(label="v1")
    answers = version_everywhere(
        platform_admin, board, staff, model=existing.model, runtime=existing.runtime
    )
    assert_refused(answers, "label", "already has a version with this label")
    assert ModelVersion.objects.count() == 1


def test_a_runtime_environment_must_map_strings_to_strings_on_every_face(
    platform_admin: Actor, board: Client, staff: Client
) -> None:
    form = {
        "name": "r",
        "engine": "vllm",
        "version": "1",
        "python_path": "/usr/bin/python3",
        "environment": json.dumps({"THREADS": 4}),
    }
    answers = {
        "rest": rest(platform_admin, "engine-runtimes", form | {"environment": {"THREADS": 4}}),
        "dashboard": dashboard(board, reverse("dashboard:runtime-create"), form, "runtime_form"),
        "admin": admin_add(staff, EngineRuntime, form),
        "model": (
            0,
            model_errors(
                EngineRuntime(
                    name="r", version="1", python_path="/usr/bin/python3", environment={"T": 4}
                )
            ),
        ),
    }
    assert_refused(answers, "environment", "Values must be strings")
    assert not EngineRuntime.objects.exists()


# --- grants --------------------------------------------------------------------------------


def test_a_model_is_granted_to_a_tenant_once_whatever_the_face(
    platform_admin: Actor, board: Client, staff: Client, tenant_a: Tenant
) -> None:
    grant = factories.grant(tenant_a)
    model = grant.model
    answers = {
        "rest": rest(platform_admin, "grants", {"tenant": tenant_a.pk, "model": model.pk}),
        "dashboard": dashboard(
            board,
            reverse("dashboard:grant-create", args=["acme"]),
            {"model": model.pk},
            "grant_form",
        ),
        "admin": admin_add(staff, ModelGrant, {"tenant": tenant_a.pk, "model": model.pk}),
    }
    # The dashboard offers only models not granted yet.
    assert "Select a valid choice" in words(answers.pop("dashboard")[1], "model")
    assert_refused(answers, "model", "already granted this model")
    with pytest.raises(ValidationError, match="already granted"):
        services.grant_model(ModelGrant(tenant=tenant_a, model=model), origin=audit.SYSTEM)
    assert ModelGrant.objects.count() == 1
