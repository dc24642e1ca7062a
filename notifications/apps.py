from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"

    def ready(self) -> None:
        from core.worker import rank_outbound_by

        from . import receivers  # noqa: F401
        from .tasks import rank_outbound

        rank_outbound_by(rank_outbound)
