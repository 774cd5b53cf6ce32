"""One change tried through every write face: the REST API, the dashboard's forms and the
Django admin. Rule tests (tests/tenants/, tests/models_registry/) use these to prove that each
face refuses the same bad input with a readable error beside the same field, and writes nothing.

Each helper answers the status and the errors by field, read from the response's data (REST)
or from the bound form in the template context (dashboard, admin), so a test asserts on fields
and words, not on HTML.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from tests.conftest import Actor

NON_FIELD = "__all__"


@pytest.fixture
def staff(db: None) -> Client:
    """A signed-in Django admin superuser."""
    get_user_model().objects.create_superuser(username="boss", password="pw-boss-12345")
    client = Client()
    assert client.login(username="boss", password="pw-boss-12345")
    return client


@pytest.fixture
def board(platform_admin: Actor) -> Client:
    """The dashboard, signed in as the platform admin."""
    client = Client()
    client.force_login(platform_admin.user)
    return client


def rest(
    actor: Actor, endpoint: str, payload: dict[str, Any], *, pk: int | None = None
) -> tuple[int, dict[str, list[str]]]:
    """POST (or PATCH, given pk) to the REST API: the status and the errors by field."""
    if pk is None:
        response = actor.client.post(f"/api/v1/{endpoint}/", payload, format="json")
    else:
        response = actor.client.patch(f"/api/v1/{endpoint}/{pk}/", payload, format="json")
    errors: dict[str, list[str]] = {}
    if response.status_code >= 400:
        for name, messages in response.data.items():
            key = NON_FIELD if name in ("non_field_errors", "detail") else name
            errors[key] = [str(m) for m in (messages if isinstance(messages, list) else [messages])]
    return response.status_code, errors


def dashboard(
    client: Client, url: str, data: dict[str, Any], form: str
) -> tuple[int, dict[str, list[str]]]:
    """POST a dashboard form (as htmx does): the status and the bound form's errors."""
    response = client.post(url, data, headers={"HX-Request": "true"})
    return response.status_code, form_errors(response, form)


def admin_add(client: Client, model: type, data: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Submit the admin's add form: 302 when saved, 200 with the form's errors when refused."""
    meta = model._meta
    response = client.post(reverse(f"admin:{meta.app_label}_{meta.model_name}_add"), data)
    return response.status_code, form_errors(response, "adminform")


def admin_change(
    client: Client, obj: Any, data: dict[str, Any]
) -> tuple[int, dict[str, list[str]]]:
    meta = obj._meta
    url = reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk])
    response = client.post(url, data)
    return response.status_code, form_errors(response, "adminform")


def form_errors(response: Any, name: str) -> dict[str, list[str]]:
    if response.context is None or name not in response.context:
        return {}
    form = response.context[name]
    form = getattr(form, "form", form)  # the admin wraps its form in an AdminForm
    return {field: [str(m) for m in messages] for field, messages in form.errors.items()}


def words(errors: dict[str, list[str]], field: str) -> str:
    """The messages on one field, as one string to look for words in."""
    return " ".join(errors.get(field, []))


def model_errors(obj: Any) -> dict[str, list[str]]:
    """The domain itself: the object's full_clean(), as every face runs it."""
    from django.core.exceptions import ValidationError

    try:
        obj.full_clean()
    except ValidationError as exc:
        return dict(exc.message_dict)
    return {}
