"""Reads of notifications shared by the API, the admin and the panel."""

from __future__ import annotations

from django.db.models import QuerySet

from accounts.models import User
from core.errors import NotFound

from .models import Category, Method, Notification, NotificationPreference, WebhookEndpoint
from .services import DEFAULT_METHODS


def notification_list(*, user: User, read: bool | None = None, category: str | None = None) -> QuerySet[Notification]:
    qs = Notification.objects.filter(user=user)
    if read is not None:
        qs = qs.filter(read=read)
    if category:
        qs = qs.filter(category=category)
    return qs.order_by("-id")


def notification_get(*, user: User, notification_id: int) -> Notification:
    found = Notification.objects.filter(user=user, pk=notification_id).first()
    if found is None:
        raise NotFound(f"no notification {notification_id}")
    return found


def unread_count(*, user: User) -> int:
    return Notification.objects.filter(user=user, read=False).count()


def preferences_get(*, user: User) -> dict:
    stored = {p.category: p for p in NotificationPreference.objects.filter(user=user)}
    categories = {}
    for category in Category.values:
        pref = stored.get(category)
        methods = (
            {Method.IN_APP: pref.in_app, Method.EMAIL: pref.email, Method.WEBHOOK: pref.webhook}
            if pref
            else dict(DEFAULT_METHODS)
        )
        if category == Category.MARGIN_GUARD:
            methods[Method.IN_APP] = True
        categories[category] = {str(m): v for m, v in methods.items()}
    endpoint = WebhookEndpoint.objects.filter(user=user).first()
    return {"categories": categories, "webhookUrl": endpoint.url if endpoint else None}
