"""Shared pieces of the REST provisioning API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import django_filters
from django import forms
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from django.db.models import ProtectedError, RestrictedError
from rest_framework import pagination, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


class UtcIsoDateTimeField(django_filters.fields.IsoDateTimeField):
    """An ISO 8601 date-time, turned into UTC before it reaches the database.

    Python accepts UTC offsets up to ±23:59, PostgreSQL only up to ±15:59: a filter such as
    `created_after=2026-01-01T00:00+20:00` was a DataError (a 500). In UTC it is an ordinary
    instant; one that UTC cannot represent (year 9999 minus an offset) is a field error.
    """

    def to_python(self, value: Any) -> datetime | None:
        parsed: datetime | None = super().to_python(value)
        if parsed is None:
            return None
        try:
            return parsed.astimezone(UTC)
        except OverflowError:
            raise forms.ValidationError(
                "This date-time is out of range.", code="overflow"
            ) from None


class UtcIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UtcIsoDateTimeField


class Pagination(pagination.LimitOffsetPagination):
    default_limit = 50
    max_limit = 500


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, plus clear answers for what would otherwise be a 500.

    - deleting something that others still point to is 409 with what blocks it;
    - a database constraint that a serializer did not foresee is 400, not a half-written row
      (every write runs in a transaction, see ATOMIC_REQUESTS-like handling in the viewsets);
    - a model-level ValidationError becomes field errors.
    """
    if isinstance(exc, ProtectedError | RestrictedError):
        blockers = sorted({type(obj)._meta.verbose_name_plural for obj in exc.args[1]})
        return Response(
            {"detail": f"Cannot delete: still referenced by {', '.join(map(str, blockers))}."},
            status=status.HTTP_409_CONFLICT,
        )
    if isinstance(exc, IntegrityError):
        return Response(
            {"detail": "The change conflicts with existing data (a uniqueness or integrity rule)."},
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, DjangoValidationError):
        detail = (
            exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        )
        return Response(detail, status=status.HTTP_400_BAD_REQUEST)
    return drf_exception_handler(exc, context)
