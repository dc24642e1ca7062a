"""The transactional outbox: write an event to the log in the caller's transaction, send it to its room on commit.

Only signal receivers call this (docs/design.md, Principles: events come from one layer). A
rolled-back transaction leaves no log row and sends nothing; a committed one sends exactly once.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import connection, transaction
from django.utils import timezone

from broadcast.messages import ACCESS_CHANGED, frame_for, layer_event
from broadcast.models import EventLog, UserSequence
from broadcast.rooms import Room, parse, user_room
from broadcast.stafffeed import Batch
from core.metrics import PUBLISHED
from wire import dumps

logger = logging.getLogger(__name__)


def group_send(group: str, message: dict) -> None:
    """Send a layer message now, from sync code. Failures are logged, never raised to the caller:
    the change is committed and its event is in the log for resume."""
    group_send_many([(group, message)])


def group_send_many(sends: list[tuple[str, dict]]) -> int:
    """Several layer messages, in order: on Redis in one pipeline per layer server from the calling
    thread, else (the in-memory layer) in one trip into the event loop. Returns how many were sent.
    Failures are logged, never raised: the change is committed either way."""
    return sum(_send(sends))


def _send(sends: list[tuple[str, dict]]) -> list[bool]:
    """``group_send_many``, saying which of ``sends`` went out. A layer server that cannot be
    reached fails only the messages for its rooms; on the in-memory layer, the rest are not tried
    after the first failure."""
    layer = get_channel_layer()
    if layer is None or not sends:
        return [True] * len(sends)
    if hasattr(layer, "publish_blocking"):
        failed = layer.publish_blocking([(group, {**message, "group": group}) for group, message in sends])
        if failed:  # whatever Redis raised, the rows wait for the relay
            logger.warning(
                "group_send of %d of %d event(s) failed (%r); left for the relay",
                len(failed),
                len(sends),
                next(iter(failed.values())),
            )
        for i, (_, message) in enumerate(sends):
            if i not in failed:
                PUBLISHED.labels(message.get("channel", "")).inc()
        return [i not in failed for i in range(len(sends))]

    async def send_all() -> int:
        for sent, (group, message) in enumerate(sends):
            try:
                # the group rides along: a process's hub receives many rooms on one channel
                await layer.group_send(group, {**message, "group": group})
                PUBLISHED.labels(message.get("channel", "")).inc()
            except Exception as exc:  # noqa: BLE001 - whatever the layer raised, the rows wait for the relay
                logger.warning(
                    "group_send to %s failed (%r); %d event(s) left for the relay", group, exc, len(sends) - sent
                )
                return sent
        return len(sends)

    sent = async_to_sync(send_all)()
    return [i < sent for i in range(len(sends))]


def next_seqs(counts: dict[int, int]) -> dict[int, int]:
    """Reserve ``counts[user]`` seqs for each user; returns each user's first reserved seq. Off
    PostgreSQL (the embedded SQLite): there, ``_LOG_PERSONAL`` reserves them with the rows.
    Rows are locked in user order, so concurrent publishers cannot deadlock. Each row stays
    locked until the transaction ends: a user's seqs commit in the order they were handed out."""
    UserSequence.objects.bulk_create([UserSequence(user_id=u) for u in counts], ignore_conflicts=True)
    rows = list(UserSequence.objects.select_for_update().filter(user_id__in=list(counts)).order_by("user_id"))
    first = {row.user_id: row.last_seq + 1 for row in rows}
    for row in rows:
        row.last_seq += counts[row.user_id]
    UserSequence.objects.bulk_update(rows, ["last_seq"], batch_size=500)
    return first


def send_logged(ids: list[int], sends: list[tuple[str, dict]], feed: Batch | None = None) -> None:
    """After commit: send (and one staff-feed message for the batch, last), then mark the rows that
    were sent published; the relay sends what stays unmarked (its process died before sending, or
    the layer was unreachable)."""
    extra = feed.send() if feed is not None else None
    sent = _send([*sends, extra] if extra else sends)
    published = [pk for pk, went in zip(ids, sent, strict=False) if went]
    if published:
        _mark_published(published)


def _mark_published(ids: list[int]) -> None:
    if connection.vendor == "postgresql":
        # Every request that logs an event ends with this statement: written out, it skips the
        # ORM's compile of an UPDATE (~0.2 ms of a placement's CPU), with the same effect.
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {EventLog._meta.db_table} SET published_at = %s WHERE id = ANY(%s::bigint[])",
                [timezone.now(), ids],
            )
        return
    EventLog.objects.filter(pk__in=ids).update(published_at=timezone.now())


def relay_unpublished(*, older_than_seconds: float = 2.0, batch: int = 500) -> int:
    """Send committed events that never reached the layer (their process died between commit and
    send). Clients drop duplicates by seq, and our consumers do it for them."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    rows = list(EventLog.objects.filter(published_at__isnull=True, created_at__lt=cutoff).order_by("id")[:batch])
    if rows:
        sends = [
            (
                group_for_logged(row),
                layer_event(
                    channel=row.channel,
                    seq=row.seq,
                    text=dumps(row.payload),
                    frame=frame_for(row.type, row.payload.get("data") or {}, row.seq),
                ),
            )
            for row in rows
        ]
        feed = Batch()
        for row in rows:
            feed.add(
                type=row.type,
                channel=row.channel,
                room=row.room,
                user_id=row.user_id,
                seq=row.seq,
                data=row.payload.get("data") or {},
            )
        extra = feed.send(relayed=True)
        send_logged([row.pk for row in rows], [*sends, extra] if extra else sends)
        logger.warning("relayed %d unpublished event(s)", len(rows))
    return len(rows)


def group_for_logged(row: EventLog) -> str:
    return user_room(row.user_id).layer_group if row.user_id else parse(row.room).layer_group


@transaction.atomic(savepoint=False)  # part of the caller's transaction: no savepoint of its own
def publish(*, room: Room, event: dict) -> EventLog:
    """Log a room-wide event (an envelope from the owning app's events.py) and send it to ``room``
    when the current transaction commits."""
    text = dumps(event)
    type_, channel = event["type"], event["channel"]
    entry = EventLog.objects.create(room=room.name, type=type_, channel=channel, payload=json.loads(text))
    layer_message = layer_event(channel=channel, seq=None, text=text)
    group = room.layer_group
    feed = Batch()
    feed.add(type=type_, channel=channel, room=room.name, user_id=None, seq=None, data=event["data"])
    transaction.on_commit(lambda: send_logged([entry.pk], [(group, layer_message)], feed))
    return entry


@transaction.atomic(savepoint=False)
def publish_personal_many(events: list[tuple[int, dict]]) -> list[EventLog]:
    """Log personal events ``(user_id, envelope)``: on PostgreSQL the seqs reserved and the rows
    written in one statement, else one seq reservation and one bulk insert. Send them all to their
    users' rooms on commit. Events of one user keep their list order."""
    if not events:
        return []
    events = [(int(user_id), event) for user_id, event in events]
    on_postgresql = connection.vendor == "postgresql"
    logged: list[tuple[int | None, int, datetime | None]]  # (pk, seq, created_at) per event, once written
    if on_postgresql:
        logged = [row for start in range(0, len(events), 2000) for row in _log_personal(events[start : start + 2000])]
    else:
        counts: dict[int, int] = {}
        for user_id, _ in events:
            counts[user_id] = counts.get(user_id, 0) + 1
        seqs = next_seqs(counts)
        logged = []
        for user_id, _ in events:
            logged.append((None, seqs[user_id], None))
            seqs[user_id] += 1
    rows, sends, feed = [], [], Batch()
    for (user_id, event), (pk, seq, created_at) in zip(events, logged, strict=True):
        type_, channel = event["type"], event["channel"]
        text = dumps({**event, "seq": seq})
        room = user_room(user_id)
        payload = json.loads(text)
        row = EventLog(
            id=pk,
            user_id=user_id,
            seq=seq,
            room=room.name,
            type=type_,
            channel=channel,
            payload=payload,
        )
        if created_at is not None:  # else bulk_create's auto_now_add sets it
            row.created_at = created_at
        rows.append(row)
        frame = frame_for(type_, payload["data"], seq)
        sends.append((room.layer_group, layer_event(channel=channel, seq=seq, text=text, frame=frame)))
        feed.add(type=type_, channel=channel, room=room.name, user_id=user_id, seq=seq, data=payload["data"])
    if on_postgresql:
        for row in rows:  # written by _log_personal: saved rows, as bulk_create leaves them
            row._state.adding, row._state.db = False, connection.alias
    else:
        rows = EventLog.objects.bulk_create(rows, batch_size=2000)
    ids = [row.pk for row in rows]
    transaction.on_commit(lambda: send_logged(ids, sends, feed))
    return rows


# The seqs' reservation and the rows in one statement: one upsert takes each user's sequence row
# (locked in user order, so concurrent publishers cannot deadlock; it stays locked to COMMIT, so a
# user's seqs commit in the order they were handed out) and reserves n seqs; each user's rows take
# last_seq - n + 1 … last_seq in list order, their payloads with the seq added. One round trip and
# no ORM compile of the INSERT. The rows' time is taken once the locks are held, as the ORM's
# auto_now_add took it after next_seqs: the relay sends what is still unmarked 2 s after it.
_LOG_PERSONAL = f"""
WITH c AS (
    SELECT (e->>'user')::bigint AS user_id, e->>'room' AS room, e->'event'->>'type' AS type,
           e->'event'->>'channel' AS channel, e->'event' AS payload, i
    FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS t(e, i)
), n AS (
    SELECT user_id, count(*) AS n FROM c GROUP BY user_id
), s AS (
    INSERT INTO {UserSequence._meta.db_table} AS s (user_id, last_seq)
    SELECT user_id, n FROM n ORDER BY user_id
    ON CONFLICT (user_id) DO UPDATE SET last_seq = s.last_seq + EXCLUDED.last_seq
    RETURNING s.user_id, s.last_seq
), r AS (
    SELECT c.*, s.last_seq - n.n + row_number() OVER (PARTITION BY c.user_id ORDER BY c.i) AS seq
    FROM c JOIN s USING (user_id) JOIN n USING (user_id)
)
INSERT INTO {EventLog._meta.db_table} (user_id, seq, room, type, channel, payload, created_at)
SELECT user_id, seq, room, type, channel, payload || jsonb_build_object('seq', seq), clock_timestamp()
FROM r ORDER BY i
RETURNING id, user_id, seq, created_at
"""


def _log_personal(events: list[tuple[int, dict]]) -> list[tuple[int | None, int, datetime | None]]:
    """PostgreSQL: reserve the seqs and write the rows in one statement. Returns (pk, seq,
    created_at) per event, in list order. The stored payload is the envelope with its seq, as the
    other path stores it."""
    with connection.cursor() as cursor:
        # one JSON document, not one array per column: psycopg escapes a str for the statement in
        # C, an array's elements one by one in Python
        rows = [{"user": user_id, "room": user_room(user_id).name, "event": event} for user_id, event in events]
        cursor.execute(_LOG_PERSONAL, [dumps(rows)])
        written = cursor.fetchall()
    # each user's seqs ascend in list order
    by_user: dict[int, list[tuple[int | None, int, datetime | None]]] = {}
    for pk, user_id, seq, created_at in sorted(written, key=lambda r: -r[2]):
        by_user.setdefault(user_id, []).append((pk, seq, created_at))
    return [by_user[user_id].pop() for user_id, _ in events]


def signal_access_changed(*, user_id: int, reason: str, disconnect: list[str] | None = None) -> None:
    """Tell every socket of the user, on commit, to re-check its credentials. With ``disconnect``
    (endpoints, e.g. ``["/ws", "/ws/orders"]``) the user's sockets on those endpoints close with
    4004 whatever the check says: staff's "disconnect", on whichever process holds them."""
    group = user_room(user_id).layer_group
    message: dict[str, Any] = {"type": ACCESS_CHANGED, "reason": reason}
    if disconnect:
        message["disconnect"] = list(disconnect)
    transaction.on_commit(lambda: group_send(group, message))
