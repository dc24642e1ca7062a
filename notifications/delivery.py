"""The delivery worker: takes due deliveries from the database (so a pending one survives any
restart), delivers each by its method and records the outcome through the services.

in_app: the event already went out on commit; the delivery is ``delivered`` when the user had a
live socket (presence lease), else ``sent`` (it waits in the inbox and the event log).
email: Django's email backend (console by default, SMTP by settings).
webhook: POST of the notification as JSON to the user's URL, signed
``X-Axisor-Signature: sha256=<hex HMAC of the body with the user's secret>``; the header
``X-Axisor-Delivery`` is stable across retries so a receiver can drop a duplicate.

A failed attempt is retried with exponential backoff; after ``MAX_ATTEMPTS`` the delivery is
``failed`` with ``lastError``. A worker that dies mid-batch leaves its claims to expire; they are
then retried — at-least-once towards the outside world, never twice in our records.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import urllib.error
import urllib.request
from datetime import timedelta

from django.conf import settings
from django.core.mail import send_mail

from axisor.realtime import presence

from .events import notification_data
from .models import Delivery, DeliveryStatus, Method
from .services import delivery_claim, delivery_failed, delivery_succeeded

logger = logging.getLogger(__name__)


class PermanentFailure(Exception):
    """Retrying cannot help (no address, no endpoint)."""


def conf(name: str):
    return settings.AXISOR_NOTIFICATIONS[name]


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(conf("BACKOFF_MAX_SECONDS"), conf("BACKOFF_BASE_SECONDS") * 2 ** (attempts - 1)))


def deliver_in_app(delivery: Delivery) -> str:
    return DeliveryStatus.DELIVERED if presence.online(delivery.notification.user_id) else DeliveryStatus.SENT


def deliver_email(delivery: Delivery) -> str:
    n = delivery.notification
    if not n.user.email:
        raise PermanentFailure("the user has no email address")
    send_mail(
        subject=f"[Axisor] {n.title}",
        message=n.message,
        from_email=settings.DEFAULT_FROM_EMAIL,
        recipient_list=[n.user.email],
        fail_silently=False,
    )
    return DeliveryStatus.DELIVERED


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def deliver_webhook(delivery: Delivery) -> str:
    endpoint = getattr(delivery.notification.user, "webhook", None)
    if endpoint is None:
        raise PermanentFailure("the user has no webhook endpoint")
    body = json.dumps(notification_data(delivery.notification), separators=(",", ":")).encode()
    request = urllib.request.Request(endpoint.url, data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    request.add_header("X-Axisor-Signature", sign(endpoint.secret, body))
    request.add_header("X-Axisor-Delivery", str(delivery.pk))
    try:
        with urllib.request.urlopen(request, timeout=conf("WEBHOOK_TIMEOUT_SECONDS")) as resp:
            resp.read(1024)
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"webhook answered HTTP {exc.code}") from None
    return DeliveryStatus.DELIVERED


SENDERS = {Method.IN_APP: deliver_in_app, Method.EMAIL: deliver_email, Method.WEBHOOK: deliver_webhook}


def deliver_due(batch: int | None = None) -> int:
    """Deliver what is due now; returns how many deliveries were attempted."""
    claimed = delivery_claim(batch=batch or conf("BATCH"), lease=timedelta(seconds=conf("CLAIM_SECONDS")))
    for delivery in claimed:
        delivery = Delivery.objects.select_related("notification__user__webhook").get(pk=delivery.pk)
        try:
            status = SENDERS[delivery.method](delivery)
        except PermanentFailure as exc:
            delivery_failed(delivery=delivery, error=str(exc), retry_in=None)
        except Exception as exc:  # noqa: BLE001 - any failure of the outside world is a retry
            final = delivery.attempts >= conf("MAX_ATTEMPTS")
            logger.warning("delivery %s attempt %s failed: %s", delivery.pk, delivery.attempts, exc)
            delivery_failed(
                delivery=delivery,
                error=f"{type(exc).__name__}: {exc}",
                retry_in=None if final else backoff(delivery.attempts),
            )
        else:
            delivery_succeeded(delivery=delivery, status=status)
    return len(claimed)
