"""The Django admin: every model registered, every page renders, no hash is ever shown."""

from __future__ import annotations

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from controlplane.models import AuditEvent
from tenants.models import ApiKey, Tenant
from tests import factories

pytestmark = pytest.mark.django_db

PROJECT_APPS = ("controlplane", "tenants", "models_registry", "nodes")


@pytest.fixture
def staff(db: None) -> Client:
    get_user_model().objects.create_superuser(username="boss", password="pw-boss-12345")
    client = Client()
    assert client.login(username="boss", password="pw-boss-12345")
    return client


def project_models() -> list[type]:
    return [m for label in PROJECT_APPS for m in apps.get_app_config(label).get_models()]


def test_every_model_of_the_project_is_in_the_admin() -> None:
    missing = [m._meta.label for m in project_models() if not admin.site.is_registered(m)]
    assert missing == []


def test_every_changelist_and_add_page_renders(staff: Client, tenant_a: Tenant) -> None:
    factories.api_key(tenant_a)
    factories.quota(tenant_a)
    factories.worker(port=8100)
    factories.gpu()
    factories.usage(tenant_a)
    factories.audit_event(tenant_a)
    factories.grant(tenant_a)
    for model in project_models():
        meta = model._meta
        changelist = staff.get(reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist"))
        assert changelist.status_code == 200, meta.label
        add = staff.get(reverse(f"admin:{meta.app_label}_{meta.model_name}_add"))
        assert add.status_code in (200, 403), meta.label  # 403: records only the system writes
        obj = model._default_manager.first()
        if obj is not None:
            change = staff.get(
                reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk])
            )
            assert change.status_code == 200, meta.label


def test_adding_a_key_in_the_admin_shows_the_plaintext_once_and_never_the_hash(
    staff: Client, tenant_a: Tenant
) -> None:
    response = staff.post(
        reverse("admin:tenants_apikey_add"), {"tenant": tenant_a.pk, "name": "prod"}, follow=True
    )
    assert response.status_code == 200
    key = ApiKey.objects.get(name="prod")
    shown = [str(m) for m in response.context["messages"] if "The new key is" in str(m)]
    assert len(shown) == 1
    plaintext = shown[0].split("The new key is ")[1].split(" ")[0]
    assert ApiKey.authenticate(plaintext) == key
    change_page = staff.get(reverse("admin:tenants_apikey_change", args=[key.pk])).content.decode()
    changelist = staff.get(reverse("admin:tenants_apikey_changelist")).content.decode()
    for page in (change_page, changelist):
        assert key.hashed_key not in page
        assert plaintext not in page
    event = AuditEvent.objects.get(via="admin", action="issue", object_id=str(key.pk))
    assert key.hashed_key not in str(event.changes)


def test_a_node_credential_issued_in_the_admin_works_and_its_hash_is_not_shown(
    staff: Client,
) -> None:
    from tenants import keys

    node = factories.node()
    response = staff.post(
        reverse("admin:nodes_node_changelist"),
        {"action": "issue_credential", "_selected_action": [node.pk]},
        follow=True,
    )
    node.refresh_from_db()
    messages = [str(m) for m in response.context["messages"]]
    plaintext = next(m for m in messages if "cpn-" in m).split(": ")[1].split(" ")[0]
    assert keys.matches(plaintext, node.credential_hash)
    page = staff.get(reverse("admin:nodes_node_change", args=[node.pk])).content.decode()
    assert node.credential_hash not in page


def test_a_user_without_staff_status_cannot_open_the_admin(db: None) -> None:
    get_user_model().objects.create_user(username="plain", password="pw-plain-12345")
    client = Client()
    client.login(username="plain", password="pw-plain-12345")
    response = client.get(reverse("admin:tenants_apikey_changelist"))
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
