from django.apps import AppConfig


class SystemConfig(AppConfig):
    name = "system"
    verbose_name = "System notices"

    def ready(self) -> None:
        from . import receivers  # noqa: F401
