"""Reads of the event log for resume (sockets and REST), and its retention."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Min
from django.utils import timezone

from broadcast.messages import frame_for
from broadcast.models import EventLog, UserSequence
from wire import dumps


@dataclass(frozen=True)
class Logged:
    seq: int
    type: str
    channel: str
    text: str
    payload: dict
    frame: str | None = None  # the type's second socket shape, if it has one (broadcast.messages)


class ResumeRefused(Exception):
    """``reason`` is ``too_old`` (the log no longer holds what follows ``since``) or ``ahead``."""

    def __init__(self, reason: str, *, last_seq: int, oldest_seq: int | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.last_seq = last_seq
        self.oldest_seq = oldest_seq

    def as_message(self) -> dict:
        return {
            "type": "resume_failed",
            "reason": self.reason,
            "snapshotRequired": self.reason == "too_old",
            "lastSeq": self.last_seq,
            "oldestSeq": self.oldest_seq,
        }


def last_seq(user_id: int) -> int:
    return UserSequence.objects.filter(user_id=user_id).values_list("last_seq", flat=True).first() or 0


def check_resume(user_id: int, since: int) -> int:
    """Raise ResumeRefused unless every event after ``since`` is still in the log; returns lastSeq."""
    current = last_seq(user_id)
    oldest = EventLog.objects.filter(user_id=user_id).aggregate(m=Min("seq"))["m"]
    if since > current:
        raise ResumeRefused("ahead", last_seq=current, oldest_seq=oldest)
    if since < current and (oldest is None or since + 1 < oldest):
        raise ResumeRefused("too_old", last_seq=current, oldest_seq=oldest)
    return current


def events_after(user_id: int, since: int, *, upto: int | None = None, limit: int = 500) -> list[Logged]:
    qs = EventLog.objects.filter(user_id=user_id, seq__gt=since)
    if upto is not None:
        qs = qs.filter(seq__lte=upto)
    return [
        Logged(
            seq=e.seq,
            type=e.type,
            channel=e.channel,
            text=dumps(e.payload),
            payload=e.payload,
            frame=frame_for(e.type, e.payload.get("data") or {}, e.seq),
        )
        for e in qs.order_by("seq")[:limit]
        if e.seq is not None  # always: seq__gt matches no NULL seq
    ]


@transaction.atomic
def prune(*, now=None) -> int:
    """Drop events past the retention window: older than RETENTION_DAYS, or more than
    RETENTION_EVENTS behind the user's latest. Returns rows deleted."""
    now = now or timezone.now()
    conf = settings.AXISOR_EVENTS
    deleted, _ = EventLog.objects.filter(created_at__lt=now - timedelta(days=conf["RETENTION_DAYS"])).delete()
    log, seqs = EventLog._meta.db_table, UserSequence._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {log} WHERE user_id IS NOT NULL"
            f" AND seq <= (SELECT s.last_seq FROM {seqs} s WHERE s.user_id = {log}.user_id) - %s",
            [conf["RETENTION_EVENTS"]],
        )
        deleted += cursor.rowcount
    return deleted
