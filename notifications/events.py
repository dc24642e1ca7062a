"""Payload builders for the seed's notification events (channel ``notifications``)."""

from __future__ import annotations

from broadcast import stafffeed
from wire import envelope, iso

IN_APP_NOTIFICATION = "in_app_notification"
NOTIFICATION_STATUS_UPDATE = "notification_status_update"
CHANNEL = "notifications"


def notification_data(n) -> dict:
    return {
        "id": str(n.pk),
        "userId": str(n.user_id),
        "title": n.title,
        "message": n.message,
        "type": n.type,
        "category": n.category,
        "data": n.data,
        "read": n.read,
        "readAt": iso(n.read_at),
        "createdAt": iso(n.created_at),
    }


def delivery_status_data(delivery) -> dict:
    return {
        "id": str(delivery.notification_id),
        "status": delivery.status,
        "deliveredAt": iso(delivery.delivered_at),
        "deliveryMethod": delivery.method,
        "attempts": delivery.attempts,
        **({"error": delivery.last_error} if delivery.status == "failed" else {}),
    }


def read_status_data(n) -> dict:
    return {
        "id": str(n.pk),
        "status": "read",
        "deliveredAt": None,
        "readAt": iso(n.read_at),
        "deliveryMethod": "in_app",
    }


def in_app_event(n) -> dict:
    return envelope(IN_APP_NOTIFICATION, CHANNEL, notification_data(n))


def delivery_status_event(delivery) -> dict:
    return envelope(NOTIFICATION_STATUS_UPDATE, CHANNEL, delivery_status_data(delivery))


def read_status_event(n) -> dict:
    return envelope(NOTIFICATION_STATUS_UPDATE, CHANNEL, read_status_data(n))


stafffeed.show(IN_APP_NOTIFICATION, ("id", "userId", "title", "type", "category", "createdAt"))
stafffeed.show(
    NOTIFICATION_STATUS_UPDATE, ("id", "status", "deliveryMethod", "attempts", "deliveredAt", "readAt", "error")
)
