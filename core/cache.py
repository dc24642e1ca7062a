"""Django's Redis cache backend on our Redis client (core/redis_clients.py), so the cache follows
the one Redis configuration, Sentinel failovers included, like every other Redis user. Its client
goes through the server's breaker: while Redis hangs, every cache call fails at once with
``ServerTripped`` (a ``ConnectionError``) instead of waiting out a timeout."""

from __future__ import annotations

from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient

from core.redis_clients import guarded_sync_client


class _Client(RedisCacheClient):
    def get_client(self, key=None, *, write=False):
        return guarded_sync_client()


class RedisCache(DjangoRedisCache):
    """``django.core.cache.backends.redis.RedisCache`` whose every call goes to the configured Redis
    (``LOCATION`` and connection ``OPTIONS`` are not used: the factory holds the address, the timeouts
    and the breaker)."""

    def __init__(self, server, params) -> None:
        super().__init__(server or "", params)
        self._class = _Client

    def count_in_window(self, key: str, timeout: int) -> int:
        """Add one to the counter ``key`` and return it; a new counter expires ``timeout`` seconds
        after its first count. ``add`` then ``incr`` as one transaction in one round trip (the
        REST throttles count every request: two round trips, and a key could expire between them)."""
        name = self.make_and_validate_key(key)
        pipe = guarded_sync_client().pipeline(transaction=True)
        pipe.set(name, 0, ex=timeout, nx=True)
        pipe.incr(name)
        return pipe.execute()[1]
