"""Describe the API-token authentication to drf-spectacular (imported by tenants.api.views)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "tenants.authentication.ApiTokenAuthentication"
    name = "apiToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API token (cpt-…) from POST /api/v1/api-tokens/ or "
            "`manage.py createapitoken`.",
        }
