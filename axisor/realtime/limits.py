"""Per-account connection limits for /ws/orders, shared by all server processes.

Each open connection holds a *lease* (a member of a Redis sorted set scored by its expiry) that
its process renews; a process that dies stops renewing and its slots free themselves within the
lease time. Connection attempts are counted in a sliding one-minute window. Without Redis (the
embedded single-process default) the same rules run in memory.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from django.conf import settings
from redis import asyncio as aioredis

from .protocol import Close

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


def _limits(tier: str) -> tuple[int, int | None]:
    return settings.AXISOR_ORDERS["TIER_LIMITS"].get(tier, settings.AXISOR_ORDERS["TIER_LIMITS"]["basic"])


def _refusal(result: int, tier: str) -> Refusal | None:
    max_conns, max_attempts = _limits(tier)
    if result == 1:
        return Refusal(Close.TOO_MANY_CONNECTIONS, f"{tier} accounts may hold {max_conns} order-update connection(s)")
    if result == 2:
        return Refusal(Close.TOO_MANY_ATTEMPTS, f"{tier} accounts may connect {max_attempts} times per minute")
    return None


_clients: dict[asyncio.AbstractEventLoop, aioredis.Redis] = {}


def redis_options(*, asyncio_client: bool) -> dict:
    """Connection options for our own Redis clients (leases, presence). Timeouts are explicit and
    retries quick: redis-py 6 retries a failed call three times backing off up to 10 s, which held a
    caller (and, from sync code, the one thread all ORM work shares) for many seconds when Redis
    restarted or went away. A call now fails within about the timeouts, and callers degrade."""
    from redis.backoff import ExponentialWithJitterBackoff

    if asyncio_client:
        from redis.asyncio.retry import Retry
    else:
        from redis.retry import Retry
    return {
        "socket_timeout": settings.REDIS_SOCKET_TIMEOUT,
        "socket_connect_timeout": settings.REDIS_CONNECT_TIMEOUT,
        "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 2),
    }


def redis_client() -> aioredis.Redis:
    """This event loop's client for REDIS_URL (redis.asyncio clients are bound to their loop)."""
    global _clients
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = aioredis.from_url(settings.REDIS_URL, **redis_options(asyncio_client=True))
        _clients = {lp: c for lp, c in _clients.items() if not lp.is_closed()}
        _clients[loop] = client
    return client


_sync_client = None


def redis_sync_client():
    """The process's blocking client for REDIS_URL (thread-safe: a connection pool), for code on
    worker threads: presence reads, the worker's leases."""
    global _sync_client
    if _sync_client is None:
        import redis

        _sync_client = redis.Redis.from_url(settings.REDIS_URL, **redis_options(asyncio_client=False))
    return _sync_client


class RedisLimiter:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def _client(self) -> aioredis.Redis:
        return redis_client()

    def _keys(self, user_id: int) -> list[str]:
        return [f"{self.prefix}:orders:conns:{user_id}", f"{self.prefix}:orders:attempts:{user_id}"]

    async def acquire(self, user_id: int, tier: str, member: str) -> Refusal | None:
        max_conns, max_attempts = _limits(tier)
        lease = settings.AXISOR_ORDERS["LEASE_SECONDS"]
        result = await self._client().eval(
            ACQUIRE,
            2,
            *self._keys(user_id),
            time.time(),
            lease,
            max_conns,
            -1 if max_attempts is None else max_attempts,
            member,
        )
        return _refusal(int(result), tier)

    async def renew(self, user_id: int, member: str) -> None:
        lease = settings.AXISOR_ORDERS["LEASE_SECONDS"]
        await self._client().eval(RENEW, 1, self._keys(user_id)[0], time.time() + lease, member, int(lease) + 1)

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
        conns[member] = now + settings.AXISOR_ORDERS["LEASE_SECONDS"]
        return None

    async def renew(self, user_id: int, member: str) -> None:
        self.conns.setdefault(user_id, {})[member] = time.time() + settings.AXISOR_ORDERS["LEASE_SECONDS"]

    async def release(self, user_id: int, member: str) -> None:
        self.conns.get(user_id, {}).pop(member, None)


_limiter: RedisLimiter | MemoryLimiter | None = None


def limiter() -> RedisLimiter | MemoryLimiter:
    global _limiter
    if _limiter is None:
        _limiter = RedisLimiter(settings.CHANNEL_LAYER_PREFIX) if settings.REDIS_URL else MemoryLimiter()
    return _limiter
