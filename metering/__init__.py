"""Metering: every inference request's usage, from the gateway's buffer to a UsageRecord row,
and the read-only usage API. The UsageRecord model stays in `controlplane.models` (see
docs/architecture.md: moving a model between apps is a migration of its own, for no gain)."""
