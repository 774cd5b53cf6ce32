"""The OpenAI-compatible inference gateway (see docs/gateway.md, "The way of a request").

app (ASGI dispatch) → request (body, ParsedRequest) → auth (the key) → admission (quotas.py's
checks) → upstream (worker, retry, relay; sse.py for streams) → settle (cost, usage event,
metrics). state.py holds what lives between requests (snapshot.py's snapshots, the quota
store, background tasks); context.py the RequestContext every step passes on.
"""
