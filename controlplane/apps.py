from django.apps import AppConfig


class ControlplaneConfig(AppConfig):
    name = "controlplane"
    verbose_name = "Control plane (metering and audit)"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from controlplane import signals

        signals.connect()
