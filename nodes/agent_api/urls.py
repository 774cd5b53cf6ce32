from __future__ import annotations

from django.urls import URLPattern, path

from nodes.agent_api import views

app_name = "agent"
urlpatterns: list[URLPattern] = [
    path("register", views.RegisterView.as_view(), name="register"),
    path("heartbeat", views.HeartbeatView.as_view(), name="heartbeat"),
    path("workers", views.AssignmentsView.as_view(), name="workers"),
    path(
        "workers/<int:worker_id>/transition",
        views.TransitionView.as_view(),
        name="worker-transition",
    ),
    path("workers/<int:worker_id>/logs", views.LogTailView.as_view(), name="worker-logs"),
]
