"""One router for the whole provisioning API under /api/v1/."""

from rest_framework.routers import DefaultRouter

from controlplane.api.audit import AuditEventViewSet
from metering.api import UsageRecordViewSet
from models_registry.api import views as registry
from nodes.api import views as nodes
from tenants.api import views as tenants

router = DefaultRouter()
# Each app registers its viewsets here (see tenants/api, models_registry/api, nodes/api).
router.register("tenants", tenants.TenantViewSet, basename="tenant")
router.register("users", tenants.UserViewSet, basename="user")
router.register("api-keys", tenants.ApiKeyViewSet, basename="apikey")
router.register("api-tokens", tenants.ApiTokenViewSet, basename="apitoken")
router.register("quotas", tenants.QuotaViewSet, basename="quota")
router.register("engine-runtimes", registry.EngineRuntimeViewSet, basename="engineruntime")
router.register("models", registry.ModelViewSet, basename="model")
router.register("model-versions", registry.ModelVersionViewSet, basename="modelversion")
router.register("grants", registry.ModelGrantViewSet, basename="grant")
router.register("nodes", nodes.NodeViewSet, basename="node")
router.register("gpus", nodes.GpuViewSet, basename="gpu")
router.register("deployments", nodes.DeploymentViewSet, basename="deployment")
router.register("workers", nodes.WorkerViewSet, basename="worker")
router.register("usage-records", UsageRecordViewSet, basename="usagerecord")
router.register("audit-events", AuditEventViewSet, basename="auditevent")

urlpatterns = router.urls
