"""Liveness and readiness probes."""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.http import JsonResponse

from core.redis_clients import redis_client


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
    """Ready when the database and the channel layer's Redis answer."""
    checks = {}
    for name, check in (("database", sync_to_async(_check_database)), ("channelLayer", _check_channel_layer)):
        try:
            await check()
            checks[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - report any failure, never crash the probe
            checks[name] = f"error: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JsonResponse({"status": "ready" if ready else "unavailable", "checks": checks}, status=200 if ready else 503)
