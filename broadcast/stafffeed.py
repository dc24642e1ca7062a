"""The staff feed on ``admin:staff``: a compact copy of logged events, and per-process stats.

Cost stays off the hot path: a committed batch of logged events (one transaction's worth, however
many recipients) adds **one** group message, carrying at most ``MAX_ENTRIES`` compact entries and
exact counts by type; market fan-out is not copied at all, only counted in process memory and
reported in the process's once-per-second ``admin_stats`` (see ``presence.Registry``).
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from broadcast.messages import layer_event
from broadcast.rooms import admin_room
from wire import dumps, envelope

FEED_TYPE = "admin_events"
STATS_TYPE = "admin_stats"
CHANNEL = "admin"
MAX_ENTRIES = 50

# The fields of an event's data the panel shows live (orders blotter, notifications, notices),
# by type. The app that owns a type registers it in its events.py (``show``); other types travel as
# type/channel/room/user/seq/time only.
_shown: dict[str, tuple[str, ...] | None] = {}


def show(type: str, fields: tuple[str, ...] | None = None) -> None:
    """Copy ``fields`` of this type's data into the staff feed (None: all of it)."""
    _shown[type] = fields


def _now_ms() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def entry(*, type: str, channel: str, room: str, user_id: int | None, seq: int | None, data: dict) -> dict:
    """One compact entry: who, where, what; the data fields the panel needs for known types."""
    item: dict[str, Any] = {
        "type": type,
        "channel": channel,
        "room": room,
        "userId": None if user_id is None else str(user_id),
    }
    if seq is not None:
        item["seq"] = seq
    if type in _shown:
        fields = _shown[type]
        item["data"] = dict(data) if fields is None else {k: data[k] for k in fields if k in data}
    return item


class Batch:
    """Collects one transaction's events; ``message()`` is the single feed message for them."""

    def __init__(self) -> None:
        self.entries: list[dict] = []
        self.counts: Counter[str] = Counter()

    def add(self, *, type: str, channel: str, room: str, user_id: int | None, seq: int | None, data: dict) -> None:
        self.counts[type] += 1
        if len(self.entries) < MAX_ENTRIES:
            self.entries.append(entry(type=type, channel=channel, room=room, user_id=user_id, seq=seq, data=data))

    def send(self, *, relayed: bool = False) -> tuple[str, dict] | None:
        """``(group, layer message)`` for the feed, or None when the batch is empty."""
        if not self.counts:
            return None
        data = {
            "time": _now_ms(),
            "counts": dict(self.counts),
            "total": sum(self.counts.values()),
            "events": self.entries,
        }
        if relayed:
            data["relayed"] = True
        text = dumps(envelope(FEED_TYPE, CHANNEL, data))
        return admin_room("staff").layer_group, layer_event(channel=CHANNEL, seq=None, text=text)


# ---- per-process fan-out counters (read and reset by the process's stats loop) -------------------

fanout_counts: Counter[str] = Counter()
slow_closes = 0
# publishes are counted on the event loop, on request threads and on the conflater's thread
_fanout_lock = threading.Lock()


def count_fanout(channel: str) -> None:
    with _fanout_lock:
        fanout_counts[channel] += 1


def count_slow_close() -> None:
    global slow_closes
    slow_closes += 1


def take_fanout() -> dict[str, int]:
    with _fanout_lock:
        taken = dict(fanout_counts)
        fanout_counts.clear()
    return taken
