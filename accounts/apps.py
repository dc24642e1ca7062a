from django.apps import AppConfig
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class AccountsConfig(AppConfig):
    name = "accounts"

    def ready(self) -> None:
        from . import receivers  # noqa: F401
        from .authentication import check_hmac_keys_once
        from .throttles import parse_rate

        check_hmac_keys_once()

        # A rate that does not parse stops the process at start-up, not the first sign-in.
        for scope, rate in settings.AXISOR_AUTH_THROTTLES.items():
            try:
                parse_rate(rate)
            except ValueError as exc:
                raise ImproperlyConfigured(f"THROTTLE_{scope.upper()}: {exc}") from None
