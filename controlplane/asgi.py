"""The ASGI entry point: the whole control plane in one application.

`/v1/...` and `/metrics` go to the gateway's lean ASGI app (no Django request machinery on the
hot path); everything else to Django. Lifespan events start and stop the gateway's background
tasks (snapshot refresh, invalidation subscription, usage flushing); servers without lifespan
support get them started lazily on the first gateway request.
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")

from django.core.asgi import get_asgi_application

django_application = get_asgi_application()

from gateway.app import Gateway  # noqa: E402

gateway = Gateway()


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await gateway(scope, receive, send)
        return
    path = scope.get("path", "")
    if path.startswith("/v1/") or path == "/v1" or path == "/metrics":
        await gateway(scope, receive, send)
        return
    await django_application(scope, receive, send)
