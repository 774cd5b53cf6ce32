"""One router for the whole provisioning API under /api/v1/."""

from rest_framework.routers import DefaultRouter

router = DefaultRouter()
# Each app registers its viewsets here (see tenants/api, models_registry/api, nodes/api).

urlpatterns = router.urls
