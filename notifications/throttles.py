"""The rate of a user's webhook URL saves (``PUT /api/notifications/preferences`` with a
``webhookUrl``): each save looks the name up on our resolver, and a changed URL resets the
endpoint's circuit breaker (services.preferences_set), so saves are counted per user, in the cache
the credential throttles use (accounts/throttles.py)."""

from __future__ import annotations

from django.conf import settings

from accounts.throttles import CountingThrottle, parse_rate


class WebhookUrlThrottle(CountingThrottle):
    """At most ``NOTIFY_WEBHOOK_URL_RATE`` saves of a webhook URL per user (refused ones too: each
    was a lookup); a preferences change without a URL, or clearing it, is not counted."""

    scope = "webhook_url_user"

    def __init__(self) -> None:
        self.num, self.period = parse_rate(str(settings.AXISOR_NOTIFICATIONS["WEBHOOK_URL_RATE"]))
        self.retry_after = 0.0

    def identity(self, request, view) -> str | None:
        user = request.user
        if request.method != "PUT" or user is None or not user.is_authenticated:
            return None
        data = request.data
        if not isinstance(data, dict) or not data.get("webhookUrl"):
            return None
        return str(user.pk)
