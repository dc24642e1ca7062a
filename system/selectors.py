"""Reads of system notices."""

from __future__ import annotations

from django.db.models import Q, QuerySet
from django.utils import timezone

from wire import dumps

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
        texts.append(dumps(notice_event(notice)))
    return texts
