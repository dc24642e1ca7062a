"""Every Redis client of ours comes from here (presence, tier leases, job leases, probes): one
place for the address and the timeouts."""

from __future__ import annotations

import asyncio

import redis
from django.conf import settings
from redis import asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

_clients: dict[asyncio.AbstractEventLoop, aioredis.Redis] = {}


def redis_options(*, asyncio_client: bool) -> dict:
    """Connection options for our own Redis clients (leases, presence). Timeouts are explicit and
    retries quick: redis-py 6 retries a failed call three times backing off up to 10 s, which held a
    caller (and, from sync code, the one thread all ORM work shares) for many seconds when Redis
    restarted or went away. A call now fails within about the timeouts, and callers degrade."""
    retry = AsyncRetry if asyncio_client else Retry
    return {
        "socket_timeout": settings.REDIS_SOCKET_TIMEOUT,
        "socket_connect_timeout": settings.REDIS_CONNECT_TIMEOUT,
        "retry": retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 2),
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


_sync_client: redis.Redis | None = None


def redis_sync_client() -> redis.Redis:
    """The process's blocking client for REDIS_URL (thread-safe: a connection pool), for code on
    worker threads: presence reads, the worker's leases."""
    global _sync_client
    if _sync_client is None:
        assert settings.REDIS_URL, "no REDIS_URL: callers check it first"
        _sync_client = redis.Redis.from_url(settings.REDIS_URL, **redis_options(asyncio_client=False))
    return _sync_client
