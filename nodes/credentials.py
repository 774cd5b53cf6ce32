"""Node credentials (``cpn-…``): shown once, stored as prefix + keyed hash on the Node."""

from __future__ import annotations

from nodes.models import Node
from tenants import keys


def issue(node: Node) -> str:
    """Give the node a new credential (replacing any old one) and return its plaintext."""
    secret = keys.generate(keys.NODE_CREDENTIAL_MARKER)
    node.credential_prefix = secret.prefix
    node.credential_hash = secret.hashed
    node.save(update_fields=["credential_prefix", "credential_hash", "updated_at"])
    return secret.plaintext


def authenticate(plaintext: str) -> Node | None:
    if not keys.looks_like(plaintext, keys.NODE_CREDENTIAL_MARKER):
        return None
    prefix = keys.prefix_of(plaintext, keys.NODE_CREDENTIAL_MARKER)
    node = Node.objects.filter(credential_prefix=prefix).first()
    if node is None or not node.credential_hash:
        return None
    if not keys.matches(plaintext, node.credential_hash):
        return None
    return node
