"""Per-account connection limits for /ws/orders, shared by all server processes.

Each open connection holds a *lease* (a member of a Redis sorted set scored by its expiry) that
its process renews; a process that dies stops renewing and its slots free themselves within the
lease time. Connection attempts are counted in a sliding one-minute window. Without Redis (the
embedded single-process default) the same rules run in memory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, cast

from django.conf import settings
from redis import asyncio as aioredis

from core.redis_clients import redis_client
from wire import Close

WINDOW = 60.0

# KEYS: conns zset, attempts zset. ARGV: now, lease, max_conns, max_attempts (-1: unlimited), member.
ACQUIRE = """
local now, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
local max_conns, max_attempts, member = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 60)
if max_attempts >= 0 and redis.call('ZCARD', KEYS[2]) >= max_attempts then return 2 end
redis.call('ZADD', KEYS[2], now, member)
redis.call('EXPIRE', KEYS[2], 61)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= max_conns then return 1 end
redis.call('ZADD', KEYS[1], now + lease, member)
redis.call('EXPIRE', KEYS[1], math.ceil(lease) + 1)
return 0
"""

RENEW = """
redis.call('ZADD', KEYS[1], tonumber(ARGV[1]), ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""


@dataclass(frozen=True)
class Refusal:
    code: int
    reason: str


# settings.AXISOR_ORDERS mixes value types, so mypy reads its values as object: these name them.


def _limits(tier: str) -> tuple[int, int | None]:
    limits = cast(dict[str, tuple[int, int | None]], settings.AXISOR_ORDERS["TIER_LIMITS"])
    return limits.get(tier, limits["basic"])


def _lease_seconds() -> float:
    return cast(float, settings.AXISOR_ORDERS["LEASE_SECONDS"])


def _refusal(result: int, tier: str) -> Refusal | None:
    max_conns, max_attempts = _limits(tier)
    if result == 1:
        return Refusal(Close.TOO_MANY_CONNECTIONS, f"{tier} accounts may hold {max_conns} order-update connection(s)")
    if result == 2:
        return Refusal(Close.TOO_MANY_ATTEMPTS, f"{tier} accounts may connect {max_attempts} times per minute")
    return None


class RedisLimiter:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def _client(self) -> aioredis.Redis:
        return redis_client()

    def _keys(self, user_id: int) -> list[str]:
        return [f"{self.prefix}:orders:conns:{user_id}", f"{self.prefix}:orders:attempts:{user_id}"]

    async def _eval(self, script: str, keys: list[str], *args: str | int | float) -> Any:
        # redis-py types ``eval`` for its sync and asyncio clients at once (``Awaitable[str] | str``),
        # and its arguments as str though it encodes numbers as Redis expects.
        return await self._client().eval(script, len(keys), *keys, *args)  # type: ignore[misc, arg-type]

    async def acquire(self, user_id: int, tier: str, member: str) -> Refusal | None:
        max_conns, max_attempts = _limits(tier)
        lease = _lease_seconds()
        result = await self._eval(
            ACQUIRE,
            self._keys(user_id),
            time.time(),
            lease,
            max_conns,
            -1 if max_attempts is None else max_attempts,
            member,
        )
        return _refusal(int(result), tier)

    async def renew(self, user_id: int, member: str) -> None:
        lease = _lease_seconds()
        await self._eval(RENEW, self._keys(user_id)[:1], time.time() + lease, member, int(lease) + 1)

    async def release(self, user_id: int, member: str) -> None:
        await self._client().zrem(self._keys(user_id)[0], member)


class MemoryLimiter:
    """The same rules for a single process without Redis."""

    def __init__(self) -> None:
        self.conns: dict[int, dict[str, float]] = {}
        self.attempts: dict[int, list[float]] = {}

    async def acquire(self, user_id: int, tier: str, member: str) -> Refusal | None:
        max_conns, max_attempts = _limits(tier)
        now = time.time()
        attempts = [t for t in self.attempts.get(user_id, []) if t > now - WINDOW]
        self.attempts[user_id] = attempts
        if max_attempts is not None and len(attempts) >= max_attempts:
            return _refusal(2, tier)
        attempts.append(now)
        conns = {m: exp for m, exp in self.conns.get(user_id, {}).items() if exp > now}
        self.conns[user_id] = conns
        if len(conns) >= max_conns:
            return _refusal(1, tier)
        conns[member] = now + _lease_seconds()
        return None

    async def renew(self, user_id: int, member: str) -> None:
        self.conns.setdefault(user_id, {})[member] = time.time() + _lease_seconds()

    async def release(self, user_id: int, member: str) -> None:
        self.conns.get(user_id, {}).pop(member, None)


_limiter: RedisLimiter | MemoryLimiter | None = None


def limiter() -> RedisLimiter | MemoryLimiter:
    global _limiter
    if _limiter is None:
        prefix = settings.CHANNEL_LAYER_PREFIX
        assert prefix is not None  # settings.py gives it a default
        _limiter = RedisLimiter(prefix) if settings.REDIS_URL else MemoryLimiter()
    return _limiter
