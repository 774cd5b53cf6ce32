"""The serializer base every model serializer builds on, and the fields for tenant-owned
objects: a tenant is chosen only among those the actor may write to."""

from __future__ import annotations

import copy
from typing import Any, TypeVar

from django.core.exceptions import NON_FIELD_ERRORS
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models
from django.db.models import QuerySet
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.settings import api_settings

from controlplane import validation
from tenants.models import Tenant
from tenants.roles import actor_of

M = TypeVar("M", bound=models.Model)


def field_errors(exc: DjangoValidationError) -> dict[str, Any] | list[str]:
    """A model's ValidationError as DRF's field errors (`__all__` as `non_field_errors`)."""
    if not hasattr(exc, "error_dict"):
        return {api_settings.NON_FIELD_ERRORS_KEY: exc.messages}
    return {
        api_settings.NON_FIELD_ERRORS_KEY if name == NON_FIELD_ERRORS else name: messages
        for name, messages in exc.message_dict.items()
    }


class ValidatedModelSerializer(serializers.ModelSerializer[M]):
    """Runs the model's own rules on every write: `validate()` builds the instance as it would
    be saved and runs its `full_clean()` (NetBox's ValidatedModelSerializer; DRF leaves model
    validation out, see DRF issue #3144). The API then refuses exactly what the model refuses,
    with the model's words, as field-level 400s; a serializer holds no copy of a rule.

    DRF's own validators for the model's unique constraints are left out: `full_clean` checks
    the constraints, with the messages written beside them."""

    def get_validators(self) -> list[Any]:
        return []

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        model: type[models.Model] = self.Meta.model
        many_names = {field.name for field in model._meta.many_to_many}
        many = {name: value for name, value in attrs.items() if name in many_names}
        plain = {name: value for name, value in attrs.items() if name not in many_names}
        if self.instance is None:
            instance = model(**plain)
        else:
            # A copy: a refused change must not linger on the object the view holds.
            instance = copy.copy(self.instance)
            for name, value in plain.items():
                setattr(instance, name, value)
        try:
            written = [f.source or name for name, f in self.fields.items() if not f.read_only]
            exclude = validation.filled_later(instance, written)
            validation.full_clean(instance, many_to_many=many, exclude=exclude)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(field_errors(exc)) from exc
        return attrs


def allowed_tenants(request: Request) -> QuerySet[Tenant]:
    """The tenants the requesting actor may write to: all for platform admins, its own
    for a tenant admin. A serializer's `tenant` field uses this, so that naming another
    tenant is a field error ("object does not exist"), never a cross-tenant write."""
    actor = actor_of(request.user)
    if actor.is_platform_admin:
        return Tenant.objects.all()
    if actor.tenant is None:
        return Tenant.objects.none()
    return Tenant.objects.filter(pk=actor.tenant.pk)


class TenantField(serializers.PrimaryKeyRelatedField[Tenant]):
    """A tenant chosen by id, limited to the tenants the actor may write to."""

    def get_queryset(self) -> QuerySet[Tenant]:
        request = self.context.get("request")
        if request is None:
            return Tenant.objects.none()
        return allowed_tenants(request)


def default_tenant(serializer: serializers.Serializer[Any], attrs: dict[str, Any]) -> Tenant:
    """The tenant a new tenant-owned object belongs to: the one given, else the actor's own."""
    tenant = attrs.get("tenant")
    if tenant is None and serializer.instance is not None:
        tenant = serializer.instance.tenant
    if tenant is None:
        request = serializer.context.get("request")
        actor = actor_of(request.user) if request is not None else None
        tenant = actor.tenant if actor is not None else None
    if tenant is None:
        raise serializers.ValidationError({"tenant": "This field is required."})
    return tenant
