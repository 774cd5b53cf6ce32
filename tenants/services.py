"""Every write to keys and tokens, once: issue, rotate, revoke, change.

The REST API, the dashboard, the Django admin and the management commands call these and do
nothing else to a key or a token, so each change runs the same rules (the model's
`full_clean`, see controlplane/validation.py), in one transaction, and leaves the same audit
event whatever the face (`origin.via` tells them apart). A refused change raises Django's
ValidationError, which each face shows its own way: a field-level 400, a form error beside
the field, an admin message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from controlplane import validation
from controlplane.audit import Action, Origin, state_of
from models_registry.models import Model
from tenants import keys
from tenants.models import ApiKey, ApiToken, KeyStatus

# Rotation keeps the old key working this long by default, and at most this long, so a
# forgotten rotation cannot leave a leaked key alive for months.
DEFAULT_GRACE = timedelta(days=1)
MAX_GRACE = timedelta(days=30)


def issue_key(key: ApiKey, *, origin: Origin, allowed_models: Iterable[Model] = ()) -> str:
    """Save `key`, built but not saved by a face (tenant, name, expiry), with a fresh secret;
    answer the secret's plaintext, which is shown once and never stored."""
    allowed = list(allowed_models)
    secret = keys.generate(keys.API_KEY_MARKER)
    key.prefix, key.hashed_key = secret.prefix, secret.hashed
    if key.created_by_id is None and getattr(origin.actor, "is_authenticated", False):
        key.created_by = origin.actor
    validation.full_clean(key, many_to_many={"allowed_models": allowed})
    with transaction.atomic():
        key.save(force_insert=True)
        key.allowed_models.set(allowed)
        origin.created(key, Action.ISSUE)
    return secret.plaintext


def update_key(
    key: ApiKey,
    *,
    origin: Origin,
    fields: Mapping[str, Any],
    allowed_models: Iterable[Model] | None = None,
) -> ApiKey:
    """Rename a key, change its expiry or its models (None leaves the models as they are)."""
    allowed = None if allowed_models is None else list(allowed_models)
    with transaction.atomic():
        key = ApiKey.objects.select_for_update().get(pk=key.pk)
        before = state_of(key)
        for name, value in fields.items():
            setattr(key, name, value)
        validation.full_clean(
            key, many_to_many=None if allowed is None else {"allowed_models": allowed}
        )
        key.save()
        if allowed is not None:
            key.allowed_models.set(allowed)
        origin.updated(key, before)
    return key


def revoke_key(key: ApiKey, *, origin: Origin) -> bool:
    """Revoke now; revoking a revoked key changes nothing (and records nothing)."""
    with transaction.atomic():
        revoked = key.revoke()
        if revoked:
            origin.record(Action.REVOKE, key, {"revoked_at": [None, key.revoked_at]})
    return revoked


def rotation_problem(key: ApiKey) -> str | None:
    """Why this key cannot be rotated now (None if it can): the rules, once for every face."""
    if key.status == KeyStatus.REVOKED:
        return "A revoked key cannot be rotated: create a new key instead."
    if key.status == KeyStatus.EXPIRED:
        return "An expired key cannot be rotated: create a new key instead."
    if not key.tenant.active:
        return f"Tenant {key.tenant.slug} is inactive: its keys cannot be rotated."
    successor = ApiKey.objects.filter(rotated_from=key).first()
    if successor is not None:
        return f"This key was already rotated to {successor.prefix}: rotate that one."
    return None


def rotate_key(
    key: ApiKey, *, origin: Origin, grace: timedelta = DEFAULT_GRACE
) -> tuple[ApiKey, str]:
    """Issue a successor with the same models; this key keeps working for `grace` more."""
    if grace < timedelta(0) or grace > MAX_GRACE:
        raise ValidationError(
            {"grace_seconds": f"Choose between 0 and {int(MAX_GRACE.total_seconds())} seconds."}
        )
    problem = rotation_problem(key)
    if problem:
        raise ValidationError(problem)
    suffix = f" (rotated {timezone.now():%Y-%m-%d %H:%M})"
    name = key.name[: ApiKey._meta.get_field("name").max_length - len(suffix)] + suffix  # type: ignore[operator]
    successor = ApiKey(tenant=key.tenant, name=name, expires_at=key.expires_at, rotated_from=key)
    try:
        with transaction.atomic():
            plaintext = issue_key(successor, origin=origin, allowed_models=key.allowed_models.all())
            old_expiry = key.expires_at
            deadline = timezone.now() + grace
            if key.expires_at is None or key.expires_at > deadline:
                key.expires_at = deadline
                key.save(update_fields=["expires_at"])
            origin.record(
                Action.ROTATE,
                key,
                {
                    "rotated_to": successor.pk,
                    "grace_seconds": int(grace.total_seconds()),
                    "expires_at": [old_expiry, key.expires_at],
                },
            )
    except IntegrityError:  # rotated by someone else in the meantime: one successor per key
        raise ValidationError("This key was just rotated by someone else: reload it.") from None
    return successor, plaintext


def issue_token(token: ApiToken, *, origin: Origin) -> str:
    """Save `token` (its user, name and expiry set by a face) with a fresh secret; answer the
    plaintext, shown once. The token acts as its user, with the user's role."""
    if token.user_id is not None and not token.user.is_active:
        raise ValidationError(
            {"user": f"User {token.user.username} is inactive; its tokens would not work."}
        )
    secret = keys.generate(keys.API_TOKEN_MARKER)
    token.prefix, token.hashed_token = secret.prefix, secret.hashed
    validation.full_clean(token)
    with transaction.atomic():
        token.save(force_insert=True)
        origin.created(token, Action.ISSUE)
    return secret.plaintext


def revoke_token(token: ApiToken, *, origin: Origin) -> bool:
    """Revoke now; requests made with the token are refused from then on."""
    with transaction.atomic():
        revoked = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        token.refresh_from_db(fields=["revoked_at"])
        if revoked:
            origin.record(Action.REVOKE, token, {"revoked_at": [None, token.revoked_at]})
    return bool(revoked)
