"""Checks shared by the models, the REST serializers and the dashboard forms."""

from __future__ import annotations


def string_map_problem(value: object) -> str | None:
    """Why `value` is not an object of string names to string values (None if it is)."""
    if not isinstance(value, dict):
        return "Expected an object of string names to string values."
    bad = [str(k) for k, v in value.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        return f"Values must be strings; not so for: {', '.join(sorted(bad))}."
    return None
