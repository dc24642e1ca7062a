"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.http import JsonResponse

from core import tier
from core.redis_clients import guarded_sync_client, layer_clients, redis_client, sync_layer_clients


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


def _verdict(checks: dict[str, str], shards: list[str]) -> str:
    """``ready``, ``degraded`` (ready, something failing) or ``unavailable``: every check but the
    shards must pass, and at least one shard when there are any."""
    ready = all(v == "ok" for name, v in checks.items() if name not in shards) and (
        not shards or any(checks[name] == "ok" for name in shards)
    )
    if not ready:
        return "unavailable"
    return "degraded" if any(v != "ok" for v in checks.values()) else "ready"


def _failure(exc: BaseException) -> str:
    return f"error: {type(exc).__name__}"


def readiness() -> dict:
    """What /readyz answers, ``{"status", "checks"}``, from sync code (the staff panel on gunicorn):
    the same checks under the same names, one after another with the blocking clients."""
    probes: list[tuple[str, Callable[[], object]]] = [("database", _check_database)]
    layer = "redis" if settings.CHANNEL_LAYER_HOSTS else "channelLayer"
    # Through the server's breaker: a hung Redis costs the first probe one timeout (not redis-py's
    # three, 15 s of a gunicorn worker per probe), and the next ones none while it stays tripped.
    probes.append((layer, lambda: settings.REDIS_ENABLED and guarded_sync_client().ping()))
    shards: list[tuple[str, Callable[[], object]]] = []
    if settings.CHANNEL_LAYER_HOSTS:
        shards = [(f"channelLayer.{i}", client.ping) for i, client in enumerate(sync_layer_clients())]
    checks = {}
    for name, check in probes + shards:
        try:
            check()
            checks[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - reported, never raised into the page
            checks[name] = _failure(exc)
    return {"status": _verdict(checks, [name for name, _ in shards]), "checks": checks}


async def readyz(request):
    """Ready when the database and the channel layer's Redis answer. With a sharded layer
    (CHANNEL_LAYER_HOSTS) the configured Redis is ``redis`` and each layer server is reported on
    its own (``channelLayer.0``, ... in CHANNEL_LAYER_HOSTS order); the process stays ready while
    any of them answers: one server's loss affects only its rooms, whose sockets are told to
    reconnect (core/internals.py), and an unready fleet would serve no room at all.

    On the REST tier (gunicorn) the same checks run as ``readiness()``, through the Redis server's
    breaker: a load balancer probing a worker while Redis hangs would otherwise hold it a socket
    timeout per probe (the second review)."""
    if tier.TIER == "wsgi":
        found = await sync_to_async(readiness)()
        return JsonResponse(found, status=503 if found["status"] == "unavailable" else 200)
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
        name: _failure(result) if isinstance(result, BaseException) else "ok"
        for (name, _), result in zip(probes + shards, results, strict=True)
    }
    status = _verdict(checks, [name for name, _ in shards])
    return JsonResponse({"status": status, "checks": checks}, status=503 if status == "unavailable" else 200)
