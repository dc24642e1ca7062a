"""Reads of system notices."""

from __future__ import annotations

from channels.db import database_sync_to_async
from django.db.models import Q, QuerySet
from django.utils import timezone

from axisor.realtime.publish import dumps

from .events import notice_event
from .models import NoticeKind, ServiceStatus, SystemNotice


def notices_in_force() -> QuerySet[SystemNotice]:
    """Maintenance windows not yet over, and service problems not yet resolved."""
    return (
        SystemNotice.objects.filter(ended_at__isnull=True)
        .filter(
            Q(kind=NoticeKind.MAINTENANCE, end_time__gt=timezone.now())
            | Q(kind=NoticeKind.SERVICE_STATUS) & ~Q(status=ServiceStatus.OPERATIONAL)
        )
        .order_by("created_at", "id")
    )


def notices_in_force_texts() -> list[str]:
    """The notices in force as ready-to-send event texts, oldest first."""
    texts = []
    for notice in notices_in_force():
        type_, data = notice_event(notice)
        texts.append(dumps({"type": type_, "channel": "system", "data": data}))
    return texts


@database_sync_to_async
def connection_start(user_id: int) -> tuple[int, list[str]]:
    """What a new /ws connection needs, in one trip to the database: the user's latest seq (its
    stream starts after it) and the system notices in force."""
    from axisor.realtime.eventlog import last_seq

    return last_seq(user_id), notices_in_force_texts()
