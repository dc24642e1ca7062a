"""The outbox: write an event to the log in the caller's transaction, send it to its room on commit.

Only signal receivers call this (STYLE.md: "only one layer produces events"). A rolled-back
transaction leaves no log row and sends nothing; a committed one sends exactly once.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from django.db.models import F

from .models import EventLog, UserSequence
from .rooms import Room, user_room

logger = logging.getLogger(__name__)

# Layer message types (namespaced; the consumer handler is the name with "." → "_").
EVENT_MESSAGE = "event.message"
ACCESS_CHANGED = "access.changed"


def iso(dt: datetime | None) -> str | None:
    """ISO-8601 UTC with a trailing Z, milliseconds precision, as the seeds print them."""
    if dt is None:
        return None
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_iso() -> str:
    return iso(datetime.now(UTC))


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return iso(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def dumps(payload: dict) -> str:
    return json.dumps(payload, default=_json_default, separators=(",", ":"))


def next_seq(user_id: int) -> int:
    """Hand out the user's next seq. The row lock serialises a user's writers until commit."""
    updated = UserSequence.objects.filter(user_id=user_id).update(last_seq=F("last_seq") + 1)
    if not updated:
        UserSequence.objects.get_or_create(user_id=user_id)
        UserSequence.objects.filter(user_id=user_id).update(last_seq=F("last_seq") + 1)
    return UserSequence.objects.values_list("last_seq", flat=True).get(user_id=user_id)


def group_send(group: str, message: dict) -> None:
    """Send a layer message now, from sync code. Failures are logged, never raised to the caller:
    the change is committed and its event is in the log for resume."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, message)
    except Exception:
        logger.exception("group_send to %s failed", group)


@transaction.atomic
def publish(*, room: Room, type: str, channel: str, data: dict, user_id: int | None = None) -> EventLog:
    """Log an event and send it to ``room`` when the current transaction commits.

    With ``user_id`` the event is personal: it gets the user's next ``seq`` and goes to the
    user's room whatever ``room`` says.
    """
    message: dict[str, Any] = {"type": type, "channel": channel, "data": data}
    seq = None
    if user_id is not None:
        room = user_room(user_id)
        seq = next_seq(user_id)
        message["seq"] = seq
    text = dumps(message)
    entry = EventLog.objects.create(
        user_id=user_id, seq=seq, room=room.name, type=type, channel=channel, payload=json.loads(text)
    )
    layer_message = {"type": EVENT_MESSAGE, "channel": channel, "personal": seq is not None, "text": text}
    group = room.group
    transaction.on_commit(lambda: group_send(group, layer_message))
    return entry


def signal_access_changed(*, user_id: int, reason: str) -> None:
    """Tell every socket of the user, on commit, to re-check its credentials."""
    group = user_room(user_id).group
    transaction.on_commit(lambda: group_send(group, {"type": ACCESS_CHANGED, "reason": reason}))
