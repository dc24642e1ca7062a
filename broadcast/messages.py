"""The channel-layer messages the broadcast layer sends and the gateway handles: primitives only
(channels_redis serialises with msgpack), each client text serialised once per event."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.db import connection

# Layer message types (namespaced; the consumer handler is the name with "." -> "_").
EVENT_MESSAGE = "event.message"
ACCESS_CHANGED = "access.changed"

# An event type's second socket shape, built once per event beside the /ws text. The app that owns
# the type registers it in its events.py (orders: the flat /ws/orders update); the broadcast layer
# never imports an app.
FrameBuilder = Callable[[dict, int], str]  # (the event's data, its seq) -> frame text
_frames: dict[str, FrameBuilder] = {}


def register_frame(type: str, builder: FrameBuilder) -> None:
    _frames[type] = builder


def frame_for(type: str, data: dict, seq: int | None) -> str | None:
    builder = _frames.get(type)
    return builder(data, seq) if builder is not None and seq is not None else None


def db_clock() -> float:
    """Now by the database's clock, as epoch seconds: one clock for every process on every machine,
    so that conflated values' versions compare across them. On SQLite (the embedded default, one
    process), this process's."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT extract(epoch FROM clock_timestamp())::float8")
            return cursor.fetchone()[0]
    return time.time()


def layer_event(
    *,
    channel: str,
    seq: int | None,
    text: str,
    key: str | None = None,
    frame: str | None = None,
    version: float | None = None,
) -> dict:
    """The channel-layer message for an event. ``key`` marks room events a connection may conflate
    (a newer one replaces it); ``version`` orders a key's values (epoch seconds by the database's
    clock: when the state was read, or written under its row's lock): a process's hub passes none
    on that is older than one of its key it already did, whichever process sent each. ``frame``
    is the event's second socket shape, if its type has one."""
    message = {"type": EVENT_MESSAGE, "channel": channel, "personal": seq is not None, "seq": seq, "text": text}
    if key is not None:
        message["key"] = key
    if version is not None:
        message["version"] = version
    if frame is not None:
        message["frame"] = frame
    return message
