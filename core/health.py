"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.http import JsonResponse

from core.redis_clients import layer_clients, redis_client


def healthz(request):
    return JsonResponse({"status": "ok"})


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


async def _check_channel_layer() -> None:
    if not settings.REDIS_ENABLED:
        return  # the in-memory layer lives in this process
    # The factory's client: with Sentinel it asks the sentinels for the master, so the probe fails
    # while no master answers and passes again once the new one does.
    await redis_client().ping()


async def readyz(request):
    """Ready when the database and the channel layer's Redis answer. With a sharded layer
    (CHANNEL_LAYER_HOSTS) the configured Redis is ``redis`` and each layer server is reported on
    its own (``channelLayer.0``, ... in CHANNEL_LAYER_HOSTS order); the process stays ready while
    any of them answers: one server's loss affects only its rooms, whose sockets are told to
    reconnect (core/internals.py), and an unready fleet would serve no room at all."""
    probes: list[tuple[str, Callable[[], Awaitable[object]]]] = [("database", sync_to_async(_check_database))]
    shards: list[tuple[str, Callable[[], Awaitable[object]]]] = []
    if settings.CHANNEL_LAYER_HOSTS:
        probes.append(("redis", _check_channel_layer))
        shards = [(f"channelLayer.{i}", client.ping) for i, client in enumerate(layer_clients())]
    else:
        probes.append(("channelLayer", _check_channel_layer))
    # side by side: a server that stopped answering costs its timeouts once, not once per server
    results = await asyncio.gather(*(check() for _, check in probes + shards), return_exceptions=True)
    checks = {
        name: f"error: {type(result).__name__}" if isinstance(result, BaseException) else "ok"
        for (name, _), result in zip(probes + shards, results, strict=True)
    }
    ready = all(checks[name] == "ok" for name, _ in probes) and (
        not shards or any(checks[name] == "ok" for name, _ in shards)
    )
    degraded = ready and any(v != "ok" for v in checks.values())
    status = "degraded" if degraded else "ready" if ready else "unavailable"
    return JsonResponse({"status": status, "checks": checks}, status=200 if ready else 503)
