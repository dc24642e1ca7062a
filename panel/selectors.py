"""Reads for the staff panel (server-rendered first paint; live updates come over /ws)."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.db.models import Count, Prefetch
from django.db.models.functions import TruncMinute
from django.utils import timezone

from broadcast import presence
from broadcast.models import EventLog
from core import health
from ledger.models import Account
from margin.account import account_figures
from margin.models import MarginGuardExecution
from market.models import Instrument, MarketState
from notifications.models import Delivery, DeliveryStatus, Notification
from orders.models import Order, OrderSession
from system.models import SystemNotice
from system.selectors import notices_in_force

HISTORY_MINUTES = 10


LABELS = {"database": "Database", "channelLayer": "Channel layer", "redis": "Redis"}


def readiness() -> dict:
    """/readyz's verdict and checks (core.health.readiness), each check with a label for the page."""
    found = health.readiness()
    rows = [
        (name, LABELS.get(name) or f"Channel layer server {name.rsplit('.', 1)[-1]}", value)
        for name, value in found["checks"].items()
    ]
    return {"status": found["status"], "rows": rows}


ROOM_KINDS = ("user", "system", "admin", "market")


def connection_totals(processes: list[dict]) -> dict:
    """Sums over the live processes, as ``[(name, count)]`` lists ready for a template."""
    endpoints = dict.fromkeys(presence.ENDPOINTS, 0)
    rooms = dict.fromkeys(ROOM_KINDS, 0)
    for proc in processes:
        for name, count in proc.get("connections", {}).items():
            endpoints[name] = endpoints.get(name, 0) + count
        for name, count in proc.get("rooms", {}).items():
            rooms[name] = rooms.get(name, 0) + count
    return {"endpoints": list(endpoints.items()), "rooms": list(rooms.items())}


def process_rows(processes: list[dict]) -> list[dict]:
    return [
        {
            "process": p["process"],
            "started_at": p.get("startedAt"),
            "seen": p.get("time"),
            "ws": p.get("connections", {}).get("/ws", 0),
            "orders": p.get("connections", {}).get("/ws/orders", 0),
            "market_rooms": p.get("marketRooms", 0),
            "slow_closes": p.get("slowCloses", 0),
        }
        for p in processes
    ]


def event_history(minutes: int = HISTORY_MINUTES) -> dict:
    """Logged events per type and minute over the last ``minutes`` (indexed on created_at)."""
    since = timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=minutes - 1)
    rows = (
        EventLog.objects.filter(created_at__gte=since)
        .annotate(minute=TruncMinute("created_at"))
        .values("type", "minute")
        .annotate(n=Count("id"))
    )
    by_type: dict[str, dict[str, int]] = defaultdict(dict)
    for row in rows:
        by_type[row["type"]][row["minute"].strftime("%Y-%m-%dT%H:%MZ")] = row["n"]
    return {"since": since.strftime("%Y-%m-%dT%H:%MZ"), "minutes": minutes, "counts": dict(by_type)}


def delivery_failures(hours: int = 24, limit: int = 10) -> dict:
    since = timezone.now() - timedelta(hours=hours)
    failed = Delivery.objects.filter(status=DeliveryStatus.FAILED, updated_at__gte=since)
    recent = failed.select_related("notification", "notification__user").order_by("-updated_at")[:limit]
    return {"hours": hours, "count": failed.count(), "recent": list(recent)}


def dashboard(*, failures: bool, notices: bool, history: bool) -> dict:
    """The dashboard's figures; the parts read from a model's rows only when asked (the staff
    member's permissions, panel/permissions.py): processes and readiness are every staff member's."""
    processes = presence.processes()
    return {
        "processes": process_rows(processes),
        "totals": connection_totals(processes),
        "notices": list(notices_in_force()) if notices else [],
        "failures": delivery_failures() if failures else {"hours": 24, "count": 0, "recent": []},
        "readiness": readiness(),
        "history": event_history() if history else {"since": None, "minutes": HISTORY_MINUTES, "counts": {}},
        "lease_seconds": presence.LEASE_SECONDS,
    }


def recent_events(limit: int = 50) -> list[EventLog]:
    return list(EventLog.objects.order_by("-id")[:limit])


ORDER_STATUSES = [s for s, _ in Order._meta.get_field("order_status").choices]


def orders_blotter(*, status: str = "", username: str = "", symbol: str = "", limit: int = 100) -> list[Order]:
    qs = Order.objects.select_related("user", "instrument")
    if status:
        qs = qs.filter(order_status=status)
    if username:
        qs = qs.filter(user__username=username)
    if symbol:
        qs = qs.filter(instrument__symbol=symbol)
    return list(qs.order_by("-created_at", "-id")[:limit])


def recent_notifications(limit: int = 50) -> list[Notification]:
    return list(
        Notification.objects.select_related("user")
        .prefetch_related(Prefetch("deliveries", queryset=Delivery.objects.order_by("method")))
        .order_by("-id")[:limit]
    )


def notices(limit: int = 30) -> dict:
    in_force = list(notices_in_force())
    ids = {n.pk for n in in_force}
    recent = [n for n in SystemNotice.objects.order_by("-created_at", "-id")[:limit] if n.pk not in ids]
    return {"in_force": in_force, "recent": recent}


def users_page(*, query: str = "", money: bool = True, limit: int = 50) -> list[dict]:
    qs = get_user_model().objects.order_by("username")
    if query:
        qs = qs.filter(username__icontains=query)
    users = list(qs[:limit])
    conns = presence.connections_by_user([u.pk for u in users])
    ids = [u.pk for u in users] if money else []
    balances = dict(Account.objects.filter(user_id__in=ids).values_list("user_id", "balance"))
    return [{"user": u, "connections": conns[u.pk], "balance": balances.get(u.pk, Decimal(0))} for u in users]


def user_connections(user) -> dict[str, int]:
    """Open sockets of the user by endpoint, across processes (the user page polls it)."""
    return presence.connections_by_user([user.pk])[user.pk]


def user_detail(user, *, money: bool = True, sessions: bool = True, orders: bool = True) -> dict:
    """The user page's figures; money, sessions and orders only when asked (the permissions)."""
    now = timezone.now()
    live = OrderSession.objects.filter(user=user, revoked_at__isnull=True, expires_at__gt=now)
    return {
        "connections": user_connections(user),
        "sessions": list(live.order_by("-created_at")) if sessions else [],
        "order_count": Order.objects.filter(user=user).count() if orders else None,
        "money": account_figures(user_id=user.pk) if money else None,
    }


def market_snapshots() -> list[dict]:
    states = {s.instrument_id: s for s in MarketState.objects.all()}
    instruments = Instrument.objects.filter(active=True).order_by("symbol")
    return [{"instrument": i, "state": states.get(i.pk)} for i in instruments]


def guard_executions(*, limit: int = 20) -> list:
    """The latest Margin Guard runs, newest first."""

    return list(MarginGuardExecution.objects.select_related("user")[:limit])
