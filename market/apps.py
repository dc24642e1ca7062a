from django.apps import AppConfig


class MarketConfig(AppConfig):
    name = "market"

    def ready(self) -> None:
        from . import receivers  # noqa: F401
