"""Every write to notifications. All producers (orders, price alerts, margin guard, system, staff)
call ``notification_create`` or ``notification_broadcast``; the delivery jobs are enqueued here, in
the same transaction, and record their attempts in ``notifications/tasks.py``."""

from __future__ import annotations

import logging

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from accounts.models import Tier, User
from core import outbound
from core.errors import BadRequest

from .delivery import signing_key
from .models import (
    Category,
    Delivery,
    DeliveryStatus,
    Method,
    Notification,
    NotificationPreference,
    NotificationType,
    WebhookEndpoint,
)
from .signals import notification_created, notifications_read
from .tasks import endpoint_url_changed, enqueue_deliveries

logger = logging.getLogger(__name__)

DEFAULT_METHODS: dict[str, bool] = {Method.IN_APP: True, Method.EMAIL: False, Method.WEBHOOK: False}


def _validate(*, title: str, message: str, type: str, category: str, data: object) -> None:
    errors: dict[str, str] = {}
    if type not in NotificationType.values:
        errors["type"] = f"must be one of {', '.join(NotificationType.values)}"
    if category not in Category.values:
        errors["category"] = f"must be one of {', '.join(Category.values)}"
    if not title or len(title) > 200:
        errors["title"] = "1 to 200 characters"
    if not message or len(message) > 2000:
        errors["message"] = "1 to 2000 characters"
    if data is not None and not isinstance(data, dict):
        errors["data"] = "must be a JSON object"
    if errors:
        raise ValidationError(errors)


def methods_for(user_ids: list[int], category: str) -> dict[int, list[str]]:
    """Enabled delivery methods per user for a category (in-app always on for margin_guard)."""
    enabled = {uid: dict(DEFAULT_METHODS) for uid in user_ids}
    for pref in NotificationPreference.objects.filter(user_id__in=user_ids, category=category):
        enabled[pref.user_id] = {Method.IN_APP: pref.in_app, Method.EMAIL: pref.email, Method.WEBHOOK: pref.webhook}
    if category == Category.MARGIN_GUARD:
        for methods in enabled.values():
            methods[Method.IN_APP] = True
    return {uid: [m for m, on in methods.items() if on] for uid, methods in enabled.items()}


def _create_many(
    *, user_ids: list[int], title: str, message: str, type: str, category: str, data: dict | None
) -> list[Notification]:
    return _create_each(
        [
            {"user_id": uid, "title": title, "message": message, "type": type, "category": category, "data": data}
            for uid in user_ids
        ]
    )


def _create_each(items: list[dict]) -> list[Notification]:
    """Bulk-create notifications (each its own user and text) with their deliveries, then signal."""
    for item in items:
        _validate(
            title=item["title"],
            message=item["message"],
            type=item["type"],
            category=item["category"],
            data=item["data"],
        )
    created = Notification.objects.bulk_create(
        [Notification(**{**item, "data": item["data"] or {}}) for item in items], batch_size=2000
    )
    methods: dict[tuple[int, str], list[str]] = {}
    for category in {n.category for n in created}:
        ids = sorted({n.user_id for n in created if n.category == category})
        for uid, enabled in methods_for(ids, category).items():
            methods[(uid, category)] = enabled
    now = timezone.now()
    deliveries = Delivery.objects.bulk_create(
        [
            Delivery(notification=n, method=m, next_attempt_at=now)
            for n in created
            for m in methods[(n.user_id, n.category)]
        ],
        batch_size=2000,
    )
    enqueue_deliveries(deliveries)
    in_app = {n.pk for n in created if Method.IN_APP in methods[(n.user_id, n.category)]}
    notification_created.send(sender=Notification, notifications=created, in_app=in_app)
    return created


@transaction.atomic
def notification_create_each(items: list[dict]) -> list[Notification]:
    """Many different notifications at once: ``[{"user_id", "title", "message", "type", "category", "data"}]``."""
    return _create_each(items)


@transaction.atomic
def notification_create(
    *,
    user: User | int,
    title: str,
    message: str,
    type: str = NotificationType.INFO,
    category: str,
    data: dict | None = None,
) -> Notification:
    """Persist a notification and its deliveries; on commit the user gets ``in_app_notification``."""
    user_id = user if isinstance(user, int) else user.pk
    return _create_many(user_ids=[user_id], title=title, message=message, type=type, category=category, data=data)[0]


@transaction.atomic
def notification_broadcast(
    *,
    audience: str,
    title: str,
    message: str,
    type: str = NotificationType.INFO,
    category: str,
    data: dict | None = None,
) -> int:
    """One notification per active user of ``audience`` (``all`` or a tier), in bulk."""

    users = get_user_model().objects.filter(is_active=True)
    if audience != "all":
        if audience not in Tier.values:
            raise ValidationError({"audience": f"must be 'all' or a tier: {', '.join(Tier.values)}"})
        users = users.filter(tier=audience)
    user_ids = list(users.order_by("pk").values_list("pk", flat=True))
    if not user_ids:
        return 0
    return len(_create_many(user_ids=user_ids, title=title, message=message, type=type, category=category, data=data))


@transaction.atomic
def notification_mark_read(*, notification: Notification) -> Notification:
    """Idempotent: a second call changes nothing and sends nothing."""
    updated = Notification.objects.filter(pk=notification.pk, read=False).update(read=True, read_at=timezone.now())
    notification.refresh_from_db()
    if updated:
        notifications_read.send(sender=Notification, user_id=notification.user_id, notifications=[notification])
    return notification


@transaction.atomic
def notification_mark_all_read(*, user: User) -> int:
    unread = list(Notification.objects.select_for_update().filter(user=user, read=False).order_by("id"))
    now = timezone.now()
    Notification.objects.filter(pk__in=[n.pk for n in unread]).update(read=True, read_at=now)
    for n in unread:
        n.read, n.read_at = True, now
    if unread:
        notifications_read.send(sender=Notification, user_id=user.pk, notifications=unread)
    return len(unread)


@transaction.atomic
def notification_resend(*, notification: Notification) -> int:
    """Deliver again by every method it had (staff action). Returns deliveries reset."""
    deliveries = list(Delivery.objects.select_for_update().filter(notification=notification))
    now = timezone.now()
    for d in deliveries:
        d.status, d.attempts, d.last_error, d.error_detail = DeliveryStatus.PENDING, 0, "", ""
        d.delivered_at, d.claimed_until, d.next_attempt_at = None, None, now
    Delivery.objects.bulk_update(
        deliveries,
        ["status", "attempts", "last_error", "error_detail", "delivered_at", "claimed_until", "next_attempt_at"],
    )
    enqueue_deliveries(deliveries)
    return len(deliveries)


# ---- preferences ----------------------------------------------------------------------------


def preferences_set(*, user: User, categories: dict[str, dict[str, bool]], webhook: dict | None = None) -> None:
    """Replace the given categories' method switches; set or clear the webhook endpoint. The URL is
    checked first, outside the transaction: its DNS lookup may take seconds."""
    if webhook and webhook.get("url"):
        try:
            outbound.check_url(webhook["url"], owner=f"user:{user.pk}")
        except outbound.OutboundError as exc:
            # The public code only: which internal names resolve is not the user's to learn.
            logger.info("webhook URL of user %s refused: %s (%s)", user.pk, exc.code, exc.detail)
            raise BadRequest(f"webhookUrl is not allowed: {exc.public_code}", code="webhook_url_not_allowed") from None
        try:
            signing_key(webhook.get("secret", ""))
        except ValueError as exc:
            raise BadRequest(f"webhookSecret: {exc}", code="webhook_secret_invalid") from None
    _preferences_write(user=user, categories=categories, webhook=webhook)


@transaction.atomic
def _preferences_write(*, user: User, categories: dict[str, dict[str, bool]], webhook: dict | None) -> None:
    for category, methods in categories.items():
        values = {m: methods.get(m, DEFAULT_METHODS[m]) for m in Method.values}
        if category == Category.MARGIN_GUARD and not values[Method.IN_APP]:
            raise ValidationError({"categories": "in-app notifications are always on for margin_guard"})
        NotificationPreference.objects.update_or_create(user=user, category=category, defaults=values)
    if webhook is not None:
        if webhook.get("url"):
            # The endpoint row before the user's deliveries, as the delivery jobs lock them (tasks._claim).
            endpoint, created = WebhookEndpoint.objects.select_for_update().get_or_create(user=user, defaults=webhook)
            if not created:
                moved = outbound.origin(endpoint.url) != outbound.origin(webhook["url"])
                endpoint.url, endpoint.secret = webhook["url"], webhook.get("secret", "")
                endpoint.save(update_fields=["url", "secret"])
                if moved:
                    # Another host is a new endpoint: it does not wait out the old one's breaker.
                    # Another path on the same host is not (the breaker counts the host's silences:
                    # an answer, even an error, closes it), so it cannot be used to reset it.
                    endpoint_url_changed(endpoint)
        else:
            WebhookEndpoint.objects.filter(user=user).delete()
