"""The OpenAI-compatible inference gateway (see docs/gateway.md)."""
