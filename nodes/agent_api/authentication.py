"""`Authorization: Bearer cpn-…`: the caller is a node agent, and request.auth is its Node."""

from __future__ import annotations

import hmac
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from rest_framework import authentication, exceptions, permissions
from rest_framework.request import Request

from nodes import credentials
from nodes.models import Node
from tenants import keys


class BootstrapToken:
    """request.auth when an agent presents NODE_BOOTSTRAP_TOKEN (may only register)."""


def _bearer(request: Request) -> str | None:
    header = authentication.get_authorization_header(request).decode("latin-1")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


class NodeCredentialAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        value = _bearer(request)
        if value is None:
            return None
        if value.startswith(keys.NODE_CREDENTIAL_MARKER):
            node = credentials.authenticate(value)
            if node is None:
                raise exceptions.AuthenticationFailed("Invalid node credential.")
            return AnonymousUser(), node
        token = settings.NODE_BOOTSTRAP_TOKEN
        if token and hmac.compare_digest(value.encode(), token.encode()):
            return AnonymousUser(), BootstrapToken()
        raise exceptions.AuthenticationFailed("Invalid node credential.")

    def authenticate_header(self, request: Request) -> str:
        return "Bearer"


class IsNodeAgent(permissions.BasePermission):
    message = "This needs a node credential (Authorization: Bearer cpn-…)."

    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.auth, Node)


class IsNodeAgentOrBootstrap(permissions.BasePermission):
    message = "This needs a node credential or the node bootstrap token."

    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.auth, Node | BootstrapToken)
