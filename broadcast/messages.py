"""The channel-layer messages the broadcast layer sends and the gateway handles: primitives only
(channels_redis serialises with msgpack), the client text serialised once."""

from __future__ import annotations

# Layer message types (namespaced; the consumer handler is the name with "." -> "_").
EVENT_MESSAGE = "event.message"


ACCESS_CHANGED = "access.changed"


def layer_event(*, channel: str, seq: int | None, text: str, key: str | None = None) -> dict:
    """The channel-layer message for an event: primitives only, the client text serialised once.
    ``key`` marks room events a connection may conflate (a newer one replaces it)."""
    message = {"type": EVENT_MESSAGE, "channel": channel, "personal": seq is not None, "seq": seq, "text": text}
    if key is not None:
        message["key"] = key
    return message
