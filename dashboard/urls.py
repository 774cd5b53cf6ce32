from __future__ import annotations

from django.urls import path

from dashboard.views import audit, fleet, overview, tenants, usage

app_name = "dashboard"

urlpatterns = [
    path("", overview.overview, name="overview"),
    # tenants, keys, quotas, grants
    path("tenants/", tenants.tenant_list, name="tenants"),
    path("tenants/<slug:slug>/", tenants.tenant_detail, name="tenant"),
    path("tenants/<slug:slug>/settings/", tenants.tenant_update, name="tenant-update"),
    path("tenants/<slug:slug>/keys/", tenants.key_create, name="key-create"),
    path("tenants/<slug:slug>/keys/<int:key_id>/revoke/", tenants.key_revoke, name="key-revoke"),
    path("tenants/<slug:slug>/keys/<int:key_id>/rotate/", tenants.key_rotate, name="key-rotate"),
    path("tenants/<slug:slug>/quotas/", tenants.quota_create, name="quota-create"),
    path("tenants/<slug:slug>/quotas/<int:quota_id>/", tenants.quota_card, name="quota"),
    path("tenants/<slug:slug>/quotas/<int:quota_id>/edit/", tenants.quota_edit, name="quota-edit"),
    path(
        "tenants/<slug:slug>/quotas/<int:quota_id>/delete/",
        tenants.quota_delete,
        name="quota-delete",
    ),
    path("tenants/<slug:slug>/grants/", tenants.grant_create, name="grant-create"),
    path(
        "tenants/<slug:slug>/grants/<int:grant_id>/delete/",
        tenants.grant_delete,
        name="grant-delete",
    ),
    # models, versions, runtimes, deployments
    path("models/", fleet.model_list, name="models"),
    path("models/runtimes/", fleet.runtime_create, name="runtime-create"),
    path("models/<int:model_id>/", fleet.model_detail, name="model"),
    path("models/<int:model_id>/versions/", fleet.version_create, name="version-create"),
    path("versions/<int:version_id>/state/", fleet.version_state, name="version-state"),
    path("deployments/", fleet.deployment_list, name="deployments"),
    path("deployments/<int:deployment_id>/", fleet.deployment_update, name="deployment-update"),
    path(
        "deployments/<int:deployment_id>/delete/",
        fleet.deployment_delete,
        name="deployment-delete",
    ),
    # nodes and workers
    path("nodes/", fleet.node_list, name="nodes"),
    path("nodes/<slug:name>/", fleet.node_detail, name="node"),
    path("nodes/<slug:name>/<str:action>/", fleet.node_action, name="node-action"),
    path("workers/<int:worker_id>/log/", fleet.worker_log, name="worker-log"),
    path("workers/<int:worker_id>/<str:action>/", fleet.worker_action, name="worker-action"),
    # usage and audit
    path("usage/", usage.usage, name="usage"),
    path("usage/export.csv", usage.usage_csv, name="usage-csv"),
    path("audit/", audit.audit_log, name="audit"),
]
