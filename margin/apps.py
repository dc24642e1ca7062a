from django.apps import AppConfig


class MarginConfig(AppConfig):
    name = "margin"

    def ready(self) -> None:
        from . import receivers  # noqa: F401
