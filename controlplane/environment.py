"""Reading settings from the environment: each helper names the variable when it cannot read it.

A setting that cannot be read stops the start with a message that names the variable and what
it accepts, rather than running with a guess. Unset and empty both mean the default.
Standard library and Django's ImproperlyConfigured only: settings.py imports it first.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from urllib.parse import urlparse

from django.core.exceptions import ImproperlyConfigured

__all__ = ["env_bool", "env_choice", "env_float", "env_int", "env_list", "env_str", "env_url"]


def env_str(name: str, default: str) -> str:
    """The one place that reads os.environ: unset and empty are the default."""
    return os.environ.get(name) or default


def env_bool(name: str, default: bool) -> bool:
    value = env_str(name, "")
    if value == "":
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {value!r}")


def _check_minimum(name: str, number: float, minimum: float | None, above: float | None) -> None:
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum:g}, got {number:g}")
    if above is not None and number <= above:
        raise ImproperlyConfigured(f"{name} must be more than {above:g}, got {number:g}")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    value = env_str(name, "")
    if value == "":
        return default
    try:
        number = int(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from exc
    _check_minimum(name, number, minimum, None)
    return number


def env_float(
    name: str, default: float, *, minimum: float | None = None, above: float | None = None
) -> float:
    """A finite number; `minimum` is allowed, `above` is not (a timeout of 0 means nothing)."""
    value = env_str(name, "")
    if value == "":
        return default
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise ImproperlyConfigured(f"{name} must be a number, got {value!r}")
    _check_minimum(name, number, minimum, above)
    return number


def env_choice(name: str, choices: Sequence[str], default: str) -> str:
    """One of `choices`, spelled exactly: a near miss is refused rather than guessed."""
    assert default in choices, f"{name}: the default {default!r} is not a choice"
    value = env_str(name, default)
    if value not in choices:
        allowed = ", ".join(repr(choice) for choice in choices)
        raise ImproperlyConfigured(f"{name} must be one of {allowed}, got {value!r}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    value = env_str(name, "")
    if value == "":
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def env_url(name: str, default: str, schemes: Sequence[str] | None = None) -> str:
    """A URL `scheme://…`, of one of `schemes` when given; empty when the default is empty."""
    value = env_str(name, default)
    if value == "":
        return value
    scheme = urlparse(value).scheme
    if "://" not in value or (schemes is not None and scheme not in schemes):
        wanted = " or ".join(f"{s}://" for s in schemes) if schemes else "scheme://"
        raise ImproperlyConfigured(f"{name} must be a URL starting {wanted}, got {value!r}")
    return value
