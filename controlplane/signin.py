"""Sign-in rate limiting: a bounded number of failed password sign-ins per username and per
client address, counted in Django's cache (Redis when REDIS_URL is set, so every process of
the control plane shares the counts).

Counts live in fixed windows of LOGIN_FAILURE_WINDOW_SECONDS (an atomic increment per failure,
no read-modify-write that parallel attempts could race). Once a counter reaches its limit,
every further sign-in with that username (or from that address) is refused until the window
ends, with HTTP 429 and the same words whether or not the username exists, and the password is
not even checked: a locked account cannot be guessed through. A successful sign-in clears the
username's counter, not the address's, so an attacker cannot reset an address's count by
signing in to an account of their own between guesses.

Both password forms use it: the dashboard's `/accounts/login/` and the Django admin's
`/admin/login/`. API tokens are long random secrets and are not limited here.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse

logger = logging.getLogger(__name__)

LOCKED_MESSAGE = "Too many failed sign-in attempts. Wait {wait}, then try again."


def _key(kind: str, value: str, window: int) -> str:
    # Hashed: a username is user input of any length and any characters.
    digest = hashlib.sha256(value.encode()).hexdigest()[:32]
    return f"signin-failures:{kind}:{digest}:{window}"


class SignInGuard:
    """The failure counters of one sign-in attempt: its username and its client address."""

    def __init__(self, request: HttpRequest | None, username: str) -> None:
        self.window_seconds = max(int(settings.LOGIN_FAILURE_WINDOW_SECONDS), 1)
        now = time.time()
        self.window = int(now // self.window_seconds)
        self.seconds_left = max(math.ceil((self.window + 1) * self.window_seconds - now), 1)
        # Django's usernames are case-sensitive; the count is not, so "Alice" and "alice"
        # share one budget of guesses.
        self.username = username.strip().casefold()
        self.address = str(request.META.get("REMOTE_ADDR", "")) if request is not None else ""
        self.limits: list[tuple[str, str, int]] = []
        if self.username and settings.LOGIN_FAILURES_PER_USERNAME > 0:
            self.limits.append(("username", self.username, settings.LOGIN_FAILURES_PER_USERNAME))
        if self.address and settings.LOGIN_FAILURES_PER_IP > 0:
            self.limits.append(("address", self.address, settings.LOGIN_FAILURES_PER_IP))

    def locked_for(self) -> int:
        """Seconds until a sign-in is allowed again; 0 when it is allowed now."""
        keys = {_key(kind, value, self.window): limit for kind, value, limit in self.limits}
        if not keys:
            return 0
        try:
            counts = cache.get_many(list(keys))
        except Exception:  # the cache is down: do not lock everybody out
            logger.warning("sign-in limits unavailable: the cache cannot be read", exc_info=True)
            return 0
        if any(int(counts.get(key, 0)) >= limit for key, limit in keys.items()):
            return self.seconds_left
        return 0

    def failed(self) -> None:
        for kind, value, limit in self.limits:
            key = _key(kind, value, self.window)
            try:
                cache.add(key, 0, timeout=self.window_seconds + 60)
                count = cache.incr(key)
            except Exception:
                logger.warning("sign-in limits unavailable: the cache cannot be written")
                return
            if count == limit:
                # Neither the username nor the password: a username is sometimes a password
                # typed into the wrong box.
                logger.warning(
                    "sign-in locked by %s after %d failed attempts (client %s) for %d s",
                    kind,
                    count,
                    self.address or "unknown",
                    self.seconds_left,
                )

    def succeeded(self) -> None:
        self.reset(kinds=("username",))

    def reset(self, kinds: tuple[str, ...] = ("username", "address")) -> None:
        """Forget this window's failures (a success forgets the username's only)."""
        keys = [_key(kind, value, self.window) for kind, value, _ in self.limits if kind in kinds]
        try:
            cache.delete_many(keys)
        except Exception:
            logger.warning("sign-in limits unavailable: the cache cannot be written")


def _wait_words(seconds: int) -> str:
    minutes = math.ceil(seconds / 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


class SignInForm(AuthenticationForm):
    """Django's sign-in form, counting failures and refusing while locked."""

    locked_for = 0

    def clean(self) -> dict[str, Any]:
        guard = SignInGuard(self.request, str(self.data.get("username", "")))
        wait = guard.locked_for()
        if wait:
            self.locked_for = wait
            raise ValidationError(LOCKED_MESSAGE.format(wait=_wait_words(wait)), code="locked")
        try:
            cleaned = super().clean()
        except ValidationError:
            guard.failed()
            raise
        guard.succeeded()
        return cleaned


class AdminSignInForm(SignInForm, AdminAuthenticationForm):
    """The Django admin's sign-in form (staff only), with the same limits."""


def with_lockout_status(response: HttpResponse) -> HttpResponse:
    """A locked sign-in form answers 429 Too Many Requests, with Retry-After."""
    context = getattr(response, "context_data", None) or {}
    wait = getattr(context.get("form"), "locked_for", 0)
    if wait:
        response.status_code = 429
        response["Retry-After"] = str(wait)
    return response


class SignInView(LoginView):
    authentication_form = SignInForm

    def form_invalid(self, form: Any) -> HttpResponse:
        return with_lockout_status(super().form_invalid(form))


def admin_login(request: HttpRequest) -> HttpResponse:
    """The admin's own login view (its template and context), with the admin form above."""
    return with_lockout_status(admin.site.login(request))
