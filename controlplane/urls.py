from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from controlplane import signin

urlpatterns = [
    # Both password sign-ins count failed attempts (controlplane/signin.py); the admin's own
    # login URL is answered here first, with the admin's template and a 429 when locked.
    path("admin/login/", signin.admin_login),
    path("admin/", admin.site.urls),
    path("accounts/login/", signin.SignInView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/v1/", include("controlplane.api.urls")),
    path("api/agent/v1/", include("nodes.agent_api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("", include("dashboard.urls")),
]
