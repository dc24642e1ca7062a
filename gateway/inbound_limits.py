"""Inbound message limits for one connection: a token bucket, and an abuse budget that closes a
socket which keeps sending over the limit."""

from __future__ import annotations

import time
from typing import cast

from django.conf import settings


def over_size(text_data: str | None, bytes_data: bytes | None) -> int | None:
    """``WS_MAX_MESSAGE_BYTES`` when an inbound message is larger (its UTF-8 bytes), else None."""
    most = cast(int, settings.AXISOR_WS["MAX_MESSAGE_BYTES"])
    size = len(text_data.encode()) if text_data is not None else len(bytes_data or b"")
    return most if size > most else None


class TokenBucket:
    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int, clock=time.monotonic) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = clock()

    def take(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class InboundLimiter:
    """``check()`` per inbound message: ``"ok"``, ``"refuse"`` (over the rate: answer with an error)
    or ``"close"`` (``close_after`` refusals within about ``window`` seconds: sustained flooding).

    The abuse budget is a second bucket that refusals drain and time refills, so a client flooding
    at any rate above the limit is closed, not only one whose refusals come strictly in a row (a
    flood slower than the server reads would otherwise get a token now and then and never close).
    """

    __slots__ = ("abuse", "bucket")

    def __init__(self, *, rate: float, burst: int, close_after: int, window: float) -> None:
        self.bucket = TokenBucket(rate, burst)
        self.abuse = TokenBucket(max(close_after - 1, 0) / window, max(close_after - 1, 0))

    def check(self) -> str:
        now = time.monotonic()
        if self.bucket.take(now):
            return "ok"
        return "refuse" if self.abuse.take(now) else "close"

    @classmethod
    def from_settings(cls) -> InboundLimiter:
        conf = settings.AXISOR_WS  # mypy reads its values as float: the counts are ints (env_int)
        return cls(
            rate=conf["RATE_PER_SECOND"],
            burst=cast(int, conf["RATE_BURST"]),
            close_after=cast(int, conf["RATE_ABUSE_CLOSE_AFTER"]),
            window=conf["RATE_ABUSE_WINDOW_SECONDS"],
        )
