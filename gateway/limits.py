"""Per-account socket limits shared by all server processes: concurrent connections on /ws/orders
(the seed's tiers, and its connection attempts per minute) and on /ws (``CAP_WS_SOCKETS_<TIER>``),
and the events a user's resumes may replay per minute (``CAP_RESUME_EVENTS_PER_MINUTE_<TIER>``).

Each open connection holds a *lease* (a member of a Redis sorted set scored by its expiry) that
its process renews and releases on disconnect; a process that dies stops renewing and its slots
free themselves within the lease time. Connection attempts are counted in a sliding one-minute
window; replayed events in a fixed one-minute window. Without Redis (the embedded single-process
default) the same rules run in memory.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Any, Literal, cast

from django.conf import settings
from redis import asyncio as aioredis

from accounts.caps import cap_for
from core.redis_clients import redis_client
from wire import Close

WINDOW = 60.0
# A refused connection looks again for this long before it is refused: a client that closed a
# socket and opened another at once must not meet the lease its old socket is still releasing.
GRACE_SECONDS = 0.3
GRACE_STEP = 0.1

Kind = Literal["orders", "ws"]
ORDERS: Kind = "orders"
WS: Kind = "ws"

# KEYS: conns zset, attempts zset. ARGV: now, lease, max_conns (-1: unlimited), max_attempts
# (-1: unlimited), member, count the attempt (1) or not (0: a look again within the grace).
ACQUIRE = """
local now, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
local max_conns, max_attempts, member = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
if max_attempts >= 0 and ARGV[6] == '1' then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 60)
  if redis.call('ZCARD', KEYS[2]) >= max_attempts then return 2 end
  redis.call('ZADD', KEYS[2], now, member)
  redis.call('EXPIRE', KEYS[2], 61)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if max_conns >= 0 and redis.call('ZCARD', KEYS[1]) >= max_conns then return 1 end
redis.call('ZADD', KEYS[1], now + lease, member)
redis.call('EXPIRE', KEYS[1], math.ceil(lease) + 1)
return 0
"""

RENEW = """
redis.call('ZADD', KEYS[1], tonumber(ARGV[1]), ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""

# KEYS: this minute's counter. ARGV: events wanted, budget. Returns -1 (spent) or what was used.
SPEND = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used + tonumber(ARGV[1]) > tonumber(ARGV[2]) then return used end
redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], 61)
return -1
"""


@dataclass(frozen=True)
class Refusal:
    code: int
    reason: str


# settings.AXISOR_ORDERS mixes value types, so mypy reads its values as object: these name them.


def _limits(kind: Kind, tier: str) -> tuple[int | None, int | None]:
    """(max concurrent connections, connection attempts per minute); None: unlimited."""
    if kind == ORDERS:
        limits = cast(dict[str, tuple[int, int | None]], settings.AXISOR_ORDERS["TIER_LIMITS"])
        return limits.get(tier, limits["basic"])
    return cap_for(tier, "WS_SOCKETS") or None, None


def capped(kind: Kind, tier: str) -> bool:
    """Whether connections of this kind and tier take a lease at all."""
    return _limits(kind, tier) != (None, None)


def _lease_seconds(kind: Kind) -> float:
    if kind == ORDERS:
        return cast(float, settings.AXISOR_ORDERS["LEASE_SECONDS"])
    return settings.AXISOR_WS["LEASE_SECONDS"]


def _refusal(kind: Kind, result: int, tier: str) -> Refusal | None:
    max_conns, max_attempts = _limits(kind, tier)
    if result == 1 and kind == ORDERS:
        return Refusal(Close.TOO_MANY_CONNECTIONS, f"{tier} accounts may hold {max_conns} order-update connection(s)")
    if result == 1:
        return Refusal(
            Close.TOO_MANY_CONNECTIONS, f"{tier} accounts may hold {max_conns} /ws socket(s) at once; close one first"
        )
    if result == 2:
        return Refusal(Close.TOO_MANY_ATTEMPTS, f"{tier} accounts may connect {max_attempts} times per minute")
    return None


@dataclass(frozen=True)
class ReplayRefusal:
    """A resume that would replay more than the user's budget for this minute has left."""

    budget: int
    used: int
    wanted: int
    retry_after: int  # seconds until the window starts again

    def message(self, tier: str) -> str:
        return (
            f"{tier} accounts may replay {self.budget} events per minute; this resume needs {self.wanted}, "
            f"{max(0, self.budget - self.used)} left: retry in {self.retry_after} s or resume from a later seq"
        )


def _minute() -> tuple[int, int]:
    """This fixed window's number, and the whole seconds until the next one."""
    now = time.time()
    return int(now // WINDOW), max(1, math.ceil(WINDOW - now % WINDOW))


class RedisLimiter:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def _client(self) -> aioredis.Redis:
        return redis_client()

    def _keys(self, kind: Kind, user_id: int) -> list[str]:
        return [f"{self.prefix}:{kind}:conns:{user_id}", f"{self.prefix}:{kind}:attempts:{user_id}"]

    async def _eval(self, script: str, keys: list[str], *args: str | int | float) -> Any:
        # redis-py types ``eval`` for its sync and asyncio clients at once (``Awaitable[str] | str``),
        # and its arguments as str though it encodes numbers as Redis expects.
        return await self._client().eval(script, len(keys), *keys, *args)  # type: ignore[misc, arg-type]

    async def _acquire(self, kind: Kind, user_id: int, tier: str, member: str, count: bool) -> int:
        max_conns, max_attempts = _limits(kind, tier)
        result = await self._eval(
            ACQUIRE,
            self._keys(kind, user_id),
            time.time(),
            _lease_seconds(kind),
            -1 if max_conns is None else max_conns,
            -1 if max_attempts is None else max_attempts,
            member,
            int(count),
        )
        return int(result)

    async def renew(self, kind: Kind, user_id: int, member: str) -> None:
        lease = _lease_seconds(kind)
        await self._eval(RENEW, self._keys(kind, user_id)[:1], time.time() + lease, member, int(lease) + 1)

    async def release(self, kind: Kind, user_id: int, member: str) -> None:
        await self._client().zrem(self._keys(kind, user_id)[0], member)

    async def _spend(self, user_id: int, window: int, events: int, budget: int) -> int:
        key = f"{self.prefix}:replay:{user_id}:{window}"
        return int(await self._eval(SPEND, [key], events, budget))


class MemoryLimiter:
    """The same rules for a single process without Redis."""

    def __init__(self) -> None:
        self.conns: dict[tuple[Kind, int], dict[str, float]] = {}
        self.attempts: dict[tuple[Kind, int], list[float]] = {}
        self.replayed: dict[int, tuple[int, int]] = {}  # user → (window, events)

    async def _acquire(self, kind: Kind, user_id: int, tier: str, member: str, count: bool) -> int:
        max_conns, max_attempts = _limits(kind, tier)
        now = time.time()
        if max_attempts is not None and count:
            attempts = [t for t in self.attempts.get((kind, user_id), []) if t > now - WINDOW]
            self.attempts[kind, user_id] = attempts
            if len(attempts) >= max_attempts:
                return 2
            attempts.append(now)
        conns = {m: exp for m, exp in self.conns.get((kind, user_id), {}).items() if exp > now}
        self.conns[kind, user_id] = conns
        if max_conns is not None and len(conns) >= max_conns:
            return 1
        conns[member] = now + _lease_seconds(kind)
        return 0

    async def renew(self, kind: Kind, user_id: int, member: str) -> None:
        self.conns.setdefault((kind, user_id), {})[member] = time.time() + _lease_seconds(kind)

    async def release(self, kind: Kind, user_id: int, member: str) -> None:
        self.conns.get((kind, user_id), {}).pop(member, None)

    async def _spend(self, user_id: int, window: int, events: int, budget: int) -> int:
        at, used = self.replayed.get(user_id, (window, 0))
        used = used if at == window else 0
        if used + events > budget:
            return used
        self.replayed[user_id] = (window, used + events)
        return -1


async def acquire(kind: Kind, user_id: int, tier: str, member: str) -> Refusal | None:
    """Take a connection slot for ``member``; a Refusal if the tier has none free (after looking
    again for GRACE_SECONDS, not counted as further attempts) or too many attempts this minute.
    Raises OSError/RedisError when Redis cannot be reached."""
    store = limiter()
    result = await store._acquire(kind, user_id, tier, member, True)
    waited = 0.0
    while result == 1 and waited < GRACE_SECONDS:
        await asyncio.sleep(GRACE_STEP)  # another process's release: nothing here to await
        waited += GRACE_STEP
        result = await store._acquire(kind, user_id, tier, member, False)
    return _refusal(kind, result, tier)


async def renew(kind: Kind, user_id: int, member: str) -> None:
    await limiter().renew(kind, user_id, member)


async def release(kind: Kind, user_id: int, member: str) -> None:
    await limiter().release(kind, user_id, member)


def lease_seconds(kind: Kind) -> float:
    return _lease_seconds(kind)


async def replay_spend(user_id: int, tier: str, events: int) -> ReplayRefusal | None:
    """Charge ``events`` replayed events to the user's budget for this minute, all or nothing.
    Raises OSError/RedisError when Redis cannot be reached."""
    budget = cap_for(tier, "RESUME_EVENTS_PER_MINUTE")
    if budget <= 0 or events <= 0:
        return None
    window, retry_after = _minute()
    used = await limiter()._spend(user_id, window, events, budget)
    if used < 0:
        return None
    return ReplayRefusal(budget=budget, used=used, wanted=events, retry_after=retry_after)


_limiter: RedisLimiter | MemoryLimiter | None = None


def limiter() -> RedisLimiter | MemoryLimiter:
    global _limiter
    if _limiter is None:
        prefix = settings.CHANNEL_LAYER_PREFIX
        assert prefix is not None  # settings.py gives it a default
        _limiter = RedisLimiter(prefix) if settings.REDIS_ENABLED else MemoryLimiter()
    return _limiter
