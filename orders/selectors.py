"""Reads of orders shared by the REST API, the consumers and the admin."""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import User
from core.errors import NotFound

from .models import LIVE, Order, OrderSession, OrderUpdate, Trade


def order_list(
    *,
    user: User,
    status: str | None = None,
    symbol: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    client_order_id: str | None = None,
) -> QuerySet[Order]:
    qs = Order.objects.filter(user=user).select_related("instrument")
    if client_order_id:
        qs = qs.filter(client_order_id=client_order_id)
    if status:
        qs = qs.filter(order_status=status)
    if symbol:
        qs = qs.filter(instrument__symbol=symbol)
    if since:
        qs = qs.filter(created_at__gte=since)
    if until:
        qs = qs.filter(created_at__lt=until)
    return qs.order_by("-created_at", "-id")


def order_get(*, user: User, order_id: str) -> Order:
    """The caller's order; another user's order is as good as missing (404)."""
    order = Order.objects.select_related("instrument").filter(user=user, order_id=order_id).first()
    if order is None:
        raise NotFound(f"no order {order_id}")
    return order


def trade_list(*, user: User, symbol: str | None = None, order_id: str | None = None) -> QuerySet[Trade]:
    qs = Trade.objects.filter(user=user).select_related("order", "order__instrument")
    if symbol:
        qs = qs.filter(order__instrument__symbol=symbol)
    if order_id:
        qs = qs.filter(order__order_id=order_id)
    return qs.order_by("-time", "-id")


def order_session_alive(session_pk: int) -> bool:
    found = OrderSession.objects.select_related("user").filter(pk=session_pk).first()
    return found is not None and found.revoked_at is None and found.expires_at > timezone.now() and found.user.is_active


def open_order_snapshots(*, user_id: int) -> list[dict]:
    """Each live order's latest update, exactly as it was sent, oldest order first."""

    latest: dict[int, dict] = {}
    for update in OrderUpdate.objects.filter(order__user_id=user_id, order__order_status__in=sorted(LIVE)).order_by(
        "order_id", "version"
    ):
        latest[update.order_id] = update.snapshot
    return [latest[k] for k in sorted(latest)]
