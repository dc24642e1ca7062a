"""Inbound message limits: a token bucket per connection, one per user shared by all of the user's
sockets in this process (both protocols), and an abuse budget that closes a socket which keeps
sending over either."""

from __future__ import annotations

import time
from typing import cast

from django.conf import settings

from accounts.caps import cap_for
from core.perloop import PerLoop


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

    def level(self, now: float) -> float:
        """The tokens it holds at ``now``."""
        return min(self.burst, self.tokens + (now - self.stamp) * self.rate)

    def take(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        self.tokens = self.level(now)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class UserBudgets:
    """This process's inbound budget per user: ``CAP_WS_MESSAGES_PER_SECOND_<TIER>`` messages a
    second over all of a user's sockets here, in a burst of ``WS_USER_BURST_SECONDS`` of them.

    Each socket keeps its own limit (``WS_RATE_PER_SECOND``); without this one, a user's 100 sockets
    could each send just under it, 2,000 messages a second, and one process read ~900: every other
    user's messages on that process waited behind them. The budget is per process (each process
    guards its own loop; a user's sockets on other processes do not count here) and costs no Redis.

    Buckets are kept by user id, not held by the sockets, and a bucket that has filled up again is
    dropped (``prune``): a full bucket is what a new one would be, so the budget of a user who closes
    every socket and opens them again is the same, and the map holds only users who sent lately.
    """

    __slots__ = ("buckets", "prune_at")

    def __init__(self) -> None:
        self.buckets: dict[int, TokenBucket] = {}
        self.prune_at = 1024

    def take(self, user_id: int, tier: str, now: float) -> bool:
        rate = cap_for(tier, "WS_MESSAGES_PER_SECOND")
        if rate <= 0:
            return True
        bucket = self.buckets.get(user_id)
        if bucket is None or bucket.rate != rate:  # a new user here, or one whose tier changed
            if bucket is None and len(self.buckets) >= self.prune_at:
                self.prune(now)
            seconds = cast(float, settings.AXISOR_WS["USER_BURST_SECONDS"])
            fresh = TokenBucket(rate, max(1, round(rate * seconds)), clock=lambda: now)
            if bucket is not None:
                # What is left carries over: sockets bound under two tiers (a tier changed while
                # some stayed open) would otherwise find a full bucket on each switch (the review).
                fresh.tokens = min(fresh.burst, bucket.level(now))
            bucket = self.buckets[user_id] = fresh
        return bucket.take(now)

    def prune(self, now: float) -> None:
        """Drop the buckets full again by ``now``; the next pruning when the map has doubled."""
        self.buckets = {user: b for user, b in self.buckets.items() if b.level(now) < b.burst}
        self.prune_at = max(1024, 2 * len(self.buckets))


user_budgets: PerLoop[UserBudgets] = PerLoop(lambda loop: UserBudgets())  # this process's budgets


class InboundLimiter:
    """``check()`` per inbound message: ``"ok"``, ``"refuse"`` (over the socket's rate: answer with
    an error), ``"refuse-user"`` (over the user's budget in this process, ``UserBudgets``: the same)
    or ``"close"`` (``close_after`` refusals within about ``window`` seconds: sustained flooding).
    ``bind()`` once the socket's user is known: before, only the socket's own rate applies.

    The abuse budget is a second bucket that refusals drain and time refills, so a client flooding
    at any rate above the limit is closed, not only one whose refusals come strictly in a row (a
    flood slower than the server reads would otherwise get a token now and then and never close).
    """

    __slots__ = ("abuse", "bucket", "budgets", "tier", "user_id")

    def __init__(self, *, rate: float, burst: int, close_after: int, window: float) -> None:
        self.bucket = TokenBucket(rate, burst)
        self.abuse = TokenBucket(max(close_after - 1, 0) / window, max(close_after - 1, 0))
        self.budgets: UserBudgets | None = None
        self.user_id = 0
        self.tier = ""

    def bind(self, user_id: int, tier: str) -> None:
        """Count this socket's messages against its user's budget in this process from now on."""
        self.budgets, self.user_id, self.tier = user_budgets(), user_id, tier

    def check(self) -> str:
        now = time.monotonic()
        if not self.bucket.take(now):
            verdict = "refuse"
        elif self.budgets is None or self.budgets.take(self.user_id, self.tier, now):
            return "ok"
        else:
            verdict = "refuse-user"
        return verdict if self.abuse.take(now) else "close"

    def refusal(self, verdict: str) -> str:
        """The error text of a ``"refuse"`` or ``"refuse-user"`` verdict."""
        if verdict == "refuse-user":
            rate = cap_for(self.tier, "WS_MESSAGES_PER_SECOND")
            return f"{self.tier} accounts may send {rate} messages per second over all their sockets"
        return f"at most {settings.AXISOR_WS['RATE_PER_SECOND']:g} messages per second"

    @classmethod
    def from_settings(cls) -> InboundLimiter:
        conf = settings.AXISOR_WS  # mypy reads its values as float: the counts are ints (env_int)
        return cls(
            rate=conf["RATE_PER_SECOND"],
            burst=cast(int, conf["RATE_BURST"]),
            close_after=cast(int, conf["RATE_ABUSE_CLOSE_AFTER"]),
            window=conf["RATE_ABUSE_WINDOW_SECONDS"],
        )
