"""A quota's scope, defined once: what a `tenants.Quota` applies to.

A quota row names a tenant and, optionally, an API key and a model; which of the two it names
is its scope. The database keeps one quota per scope (the partial unique indexes on Quota), the
gateway looks up every scope that applies to a request (`QuotaScope.ids_for`) and names its
counters after the scope's ids (`counter_name`). Pure Python, no Django: the gateway's hot
path imports it.
"""

from __future__ import annotations

from enum import StrEnum


class QuotaScope(StrEnum):
    TENANT = "tenant"
    KEY = "key"
    MODEL = "model"
    KEY_MODEL = "key+model"

    @property
    def names_key(self) -> bool:
        return self in (QuotaScope.KEY, QuotaScope.KEY_MODEL)

    @property
    def names_model(self) -> bool:
        return self in (QuotaScope.MODEL, QuotaScope.KEY_MODEL)

    def ids_for(self, api_key_id: int, model_id: int) -> tuple[int | None, int | None]:
        """The (api_key_id, model_id) a quota of this scope has, for a request of this key and
        model: the ids the scope does not name are None."""
        return (
            api_key_id if self.names_key else None,
            model_id if self.names_model else None,
        )


def scope_of(api_key_id: int | None, model_id: int | None) -> QuotaScope:
    """The scope of a quota that names this key (or None) and this model (or None)."""
    if api_key_id is None:
        return QuotaScope.TENANT if model_id is None else QuotaScope.MODEL
    return QuotaScope.KEY if model_id is None else QuotaScope.KEY_MODEL


def counter_name(tenant_id: int, api_key_id: int | None, model_id: int | None) -> str:
    """The quota counters' name for a scope's ids: `t1`, `t1:k2`, `t1:m3`, `t1:k2:m3`."""
    name = f"t{tenant_id}"
    if api_key_id is not None:
        name += f":k{api_key_id}"
    if model_id is not None:
        name += f":m{model_id}"
    return name
