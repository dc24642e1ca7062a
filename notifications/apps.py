from django.apps import AppConfig
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class NotificationsConfig(AppConfig):
    name = "notifications"

    def ready(self) -> None:
        from accounts.throttles import parse_rate
        from core.worker import rank_outbound_by

        from . import receivers  # noqa: F401
        from .tasks import rank_outbound

        rank_outbound_by(rank_outbound)
        # A rate that does not parse stops the process at start-up, not the first save.
        try:
            parse_rate(str(settings.AXISOR_NOTIFICATIONS["WEBHOOK_URL_RATE"]))
        except ValueError as exc:
            raise ImproperlyConfigured(f"NOTIFY_WEBHOOK_URL_RATE: {exc}") from None
