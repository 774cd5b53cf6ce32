"""The provisioning API's exception handler: clear answers for what would be a 500."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from django.db.models import ProtectedError, RestrictedError
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


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
        # A rule a service enforces (tenants/services.py, ...) that no serializer ran first.
        from controlplane.api.serializers import field_errors

        return Response(field_errors(exc), status=status.HTTP_400_BAD_REQUEST)
    return drf_exception_handler(exc, context)
