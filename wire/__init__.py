"""The wire format, shared by every layer: how times, numbers and JSON are written, the event
envelope, and the close and error codes the sockets send. Pure Python: it imports nothing of ours
and nothing of Django's, so anything may import it."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, overload

# ---- values -------------------------------------------------------------------------------------


@overload
def iso(dt: datetime) -> str: ...
@overload
def iso(dt: None) -> None: ...
@overload
def iso(dt: datetime | None) -> str | None: ...
def iso(dt: datetime | None) -> str | None:
    """ISO-8601 UTC with a trailing Z, milliseconds precision, as the seeds print them."""
    if dt is None:
        return None
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_iso() -> str:
    return iso(datetime.now(UTC))


def num(value: Decimal | int | float | None) -> int | float:
    """Numbers as JSON numbers: integral values as ints (100, not 100.0), absent prices as 0."""
    if value is None:
        return 0
    value = Decimal(value)
    if value == value.to_integral_value():
        return int(value)
    return float(value)


def whole_number(raw: object, *, digits: int = 18) -> int | None:
    """``raw`` as an int when it is a string of 1 to ``digits`` ASCII digits (18 fit a bigint), else
    None. ``str.isdigit()`` alone is not the check: it is true of "²" and other Unicode digits that
    ``int()`` refuses or reads as other numbers."""
    if isinstance(raw, str) and 0 < len(raw) <= digits and raw.isascii() and raw.isdigit():
        return int(raw)
    return None


_PLAIN_NUMBER = re.compile(r"\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*", re.ASCII)


def plain_number(text: str) -> bool:
    """Whether ``text`` is a number written plainly in ASCII digits (``"0.5"``, ``"-1e-3"``): what a
    quantity, a price or an amount given as a string must be. ``Decimal()`` and ``float()`` also
    read ``"1_0"`` (10), other scripts' digits (``"١٠"``), ``"NaN"`` and ``"Infinity"``."""
    return _PLAIN_NUMBER.fullmatch(text) is not None


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return iso(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def dumps(payload: dict | list) -> str:
    """Compact JSON, as every frame is sent."""
    return json.dumps(payload, default=_json_default, separators=(",", ":"))


# ---- the event envelope -------------------------------------------------------------------------


def envelope(type: str, channel: str, data: dict) -> dict:
    """An event as ``/ws`` clients receive it (the outbox adds ``seq`` to personal events).
    Each app's ``events.py`` calls this with its own type constants: the only place a type string
    of an event is written."""
    return {"type": type, "channel": channel, "data": data}


# ---- socket protocol ----------------------------------------------------------------------------


class Close:
    """Close codes we send (documented in docs/reference/close-codes.md). Plain ints, not an IntEnum:
    daphne hands the code to autobahn, whose sendClose() accepts exactly ``int`` and nothing else."""

    AUTHENTICATION_FAILED = 4001  # bad/expired/missing credentials, or a message before auth
    TOKEN_EXPIRED = 4002  # the token expired on an open socket and no fresh `auth` came
    ACCESS_REVOKED = 4003  # account deactivated, password changed, role changed, session revoked
    DISCONNECTED = 4004  # a staff member disconnected the user's sockets (/panel/); the client may reconnect
    RATE_LIMITED = 4008  # sustained flooding after RATE_LIMIT_EXCEEDED errors
    SLOW_CONSUMER = 4009  # the client reads too slowly for events that may not be dropped; resume
    TOO_MANY_CONNECTIONS = 4029  # the tier's concurrent-connection limit (/ws/orders: the seed's; /ws: CAP_WS_SOCKETS)
    TOO_MANY_ATTEMPTS = 4030  # /ws/orders: tier's reconnect rate limit
    IDLE_TIMEOUT = 4040  # /ws/orders: nothing heard from the client for too long
    TRY_AGAIN_LATER = 4013  # the server cannot reach its channel layer (Redis) right now (cf. 1013)


class Code:
    """Error codes in {"type":"error","code":...}."""

    AUTHENTICATION_FAILED = "AUTHENTICATION_FAILED"
    RATE_LIMIT_EXCEEDED = "RATE_LIMIT_EXCEEDED"
    INVALID_ROOM = "INVALID_ROOM"
    FORBIDDEN = "FORBIDDEN"
    INVALID_MESSAGE = "INVALID_MESSAGE"
    MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"
    TOKEN_EXPIRED = "TOKEN_EXPIRED"
    ACCESS_REVOKED = "ACCESS_REVOKED"
    DISCONNECTED = "DISCONNECTED"
    SLOW_CONSUMER = "SLOW_CONSUMER"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"


def error(code: str, message: str, **extra) -> dict:
    return {"type": "error", "code": code, "message": message, **extra}


def connection(*, user_id: int, session_id: str) -> dict:
    return {
        "type": "connection",
        "status": "connected",
        "userId": str(user_id),
        "sessionId": session_id,
        "serverTime": now_iso(),
    }
