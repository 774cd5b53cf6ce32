"""Per-worker engine keys, derived rather than stored.

Each vLLM engine runs with ``--api-key``, so its port answers only callers that know the key:
the gateway (to proxy) and the node agent that runs it (to probe). Both get it from here or,
for the agent, from its authenticated assignment feed. The key never appears in the
provisioning API or in logs.
"""

from __future__ import annotations

import hashlib
import hmac

from django.conf import settings


def worker_api_key(worker_id: int) -> str:
    secret = settings.WORKER_KEY_SECRET.encode()
    digest = hmac.new(secret, f"worker:{worker_id}".encode(), hashlib.sha256).hexdigest()
    return f"cpw-{digest[:48]}"


def prefix_cache_salt(tenant_id: int) -> str:
    """A tenant's salt for vLLM's prefix cache (the gateway adds it to every request): stable,
    secret, never shared across tenants, so one tenant's prompts never warm another's cache."""
    secret = settings.WORKER_KEY_SECRET.encode()
    return hmac.new(secret, f"cache-salt:{tenant_id}".encode(), hashlib.sha256).hexdigest()[:32]
