"""How each delivery method delivers one notification. The jobs in ``notifications/tasks.py`` claim
a delivery, call its sender here (outside any transaction: it may wait on the network) and record
the outcome.

in_app: the event already went out on commit; the delivery is ``delivered`` when the user had a
live socket (presence lease), else ``sent`` (it waits in the inbox and the event log).
email: Django's email backend (console by default, SMTP by settings, ``EMAIL_TIMEOUT`` bounded).
webhook: a POST of the notification as JSON to the user's URL through ``core.outbound`` (the
outbound policy: public addresses only, no redirects, capped time and size), signed the Standard
Webhooks way: ``webhook-id`` (stable across retries, so a receiver drops a duplicate),
``webhook-timestamp`` and ``webhook-signature`` = ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime

from django.conf import settings
from django.core.mail import send_mail
from standardwebhooks import Webhook

from broadcast import presence
from core import outbound

from .events import notification_data
from .models import Delivery, DeliveryStatus

SECRET_PREFIX = "whsec_"


class DeliveryError(Exception):
    """A failed attempt: ``code`` is what the user sees, ``detail`` what staff see; ``final``
    when retrying cannot help (no address, no endpoint)."""

    def __init__(self, code: str, detail: str = "", *, final: bool = False) -> None:
        super().__init__(code)
        self.code, self.detail, self.final = code, detail, final


def in_app_statuses(deliveries: list[Delivery]) -> dict[int, str]:
    """``delivered`` for each delivery whose user has a live ``/ws`` socket, else ``sent``."""
    users = sorted({d.notification.user_id for d in deliveries})
    live = presence.connections_by_user(users) if users else {}
    return {
        d.pk: DeliveryStatus.DELIVERED if live[d.notification.user_id]["/ws"] > 0 else DeliveryStatus.SENT
        for d in deliveries
    }


def deliver_email(delivery: Delivery) -> str:
    n = delivery.notification
    if not n.user.email:
        raise DeliveryError("no_email_address", "the user has no email address", final=True)
    try:
        send_mail(
            subject=f"[Axisor] {n.title}",
            message=n.message,
            from_email=settings.DEFAULT_FROM_EMAIL,
            recipient_list=[n.user.email],
            fail_silently=False,
        )
    except Exception as exc:  # noqa: BLE001 - whatever the mail server did, the attempt failed
        raise DeliveryError("email_error", f"{type(exc).__name__}: {exc}") from None
    return DeliveryStatus.DELIVERED


MIN_KEY_BYTES = 24  # Standard Webhooks: keys of 24 to 64 random bytes


def signing_key(secret: str) -> bytes:
    """A ``whsec_``-prefixed secret is a base64 key (the Standard Webhooks form); any other
    secret signs with its UTF-8 bytes. ValueError for a ``whsec_`` secret that is not one."""
    if not secret.startswith(SECRET_PREFIX):
        return secret.encode()
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except binascii.Error:
        raise ValueError("a whsec_ secret must be base64") from None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"a whsec_ secret must hold at least {MIN_KEY_BYTES} bytes")
    return key


def webhook_headers(*, secret: str, message_id: str, body: str, at: datetime | None = None) -> dict[str, str]:
    at = at or datetime.now(UTC)
    return {
        "Content-Type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(signing_key(secret)).sign(message_id, at, body),
    }


def webhook_id(delivery: Delivery) -> str:
    return f"dlv_{delivery.pk}"


def deliver_webhook(delivery: Delivery) -> str:
    endpoint = getattr(delivery.notification.user, "webhook", None)
    if endpoint is None:
        raise DeliveryError("no_webhook_endpoint", "the user has no webhook endpoint", final=True)
    body = json.dumps(notification_data(delivery.notification), separators=(",", ":"))
    try:
        headers = webhook_headers(secret=endpoint.secret, message_id=webhook_id(delivery), body=body)
    except ValueError as exc:  # a secret saved before secrets were checked
        raise DeliveryError("invalid_secret", str(exc), final=True) from None
    try:
        outbound.post(endpoint.url, body=body.encode(), headers=headers, owner=f"user:{endpoint.user_id}")
    except outbound.OutboundError as exc:
        # The user sees the public code (lastError, the status event); staff the code and detail.
        detail = exc.detail if exc.public_code == exc.code else f"{exc.code}: {exc.detail}"
        raise DeliveryError(exc.public_code, detail) from None
    return DeliveryStatus.DELIVERED


SENDERS = {"email": deliver_email, "webhook": deliver_webhook}
