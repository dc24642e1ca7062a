"""Who is online: each authenticated /ws connection holds a renewable lease per user, in Redis
when configured (so every process sees every connection) or in memory. The notification worker
asks ``online(user_id)`` to tell an in-app delivery `delivered` (pushed to a live socket) from
`sent` (kept in the inbox and the event log)."""

from __future__ import annotations

import time

from django.conf import settings

from .limits import redis_client

LEASE_SECONDS = 60.0


def _key(user_id: int) -> str:
    return f"{settings.CHANNEL_LAYER_PREFIX}:presence:{user_id}"


def _online_key() -> str:
    """Every user with a lease, scored by its latest expiry (for value streams sent only to users
    who can see them: position_status_update)."""
    return f"{settings.CHANNEL_LAYER_PREFIX}:presence:users"


_memory: dict[int, dict[str, float]] = {}


async def join(user_id: int, member: str) -> None:
    expires = time.time() + LEASE_SECONDS
    if settings.REDIS_URL:
        client = redis_client()
        async with client.pipeline(transaction=False) as pipe:
            pipe.zadd(_key(user_id), {member: expires})
            pipe.expire(_key(user_id), int(LEASE_SECONDS) + 1)
            pipe.zadd(_online_key(), {str(user_id): expires})
            await pipe.execute()
    else:
        _memory.setdefault(user_id, {})[member] = expires


async def leave(user_id: int, member: str) -> None:
    if settings.REDIS_URL:
        await redis_client().zrem(_key(user_id), member)
    else:
        _memory.get(user_id, {}).pop(member, None)


def online(user_id: int) -> bool:
    """Sync: is any connection of the user alive now (any process)?"""
    now = time.time()
    if settings.REDIS_URL:
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=settings.REDIS_SOCKET_TIMEOUT)
        try:
            return bool(client.zcount(_key(user_id), now, "+inf"))
        finally:
            client.close()
    return any(exp > now for exp in _memory.get(user_id, {}).values())


async def online_users() -> set[int]:
    """Users with a live connection lease, on any process (a user who just left may linger for
    up to a lease)."""
    now = time.time()
    if settings.REDIS_URL:
        client = redis_client()
        async with client.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(_online_key(), "-inf", now)
            pipe.zrange(_online_key(), 0, -1)
            _, members = await pipe.execute()
        return {int(m) for m in members}
    return {uid for uid, leases in _memory.items() if any(exp > now for exp in leases.values())}
