"""Two real daphne processes on PostgreSQL and Redis: an event published through one reaches a
socket held by the other."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import websockets
from channels.db import database_sync_to_async

from tests.conftest import jwt_for
from tests.integration.http import call


async def recv_json(sock, timeout: float = 10) -> dict:
    return json.loads(await asyncio.wait_for(sock.recv(), timeout))


async def test_event_published_through_one_process_reaches_socket_on_the_other(daphne, make_user, instruments):
    a, b = await asyncio.to_thread(daphne), await asyncio.to_thread(daphne)
    staff = await database_sync_to_async(make_user)("ops", superuser=True)
    watcher = await database_sync_to_async(make_user)("watcher")

    status, ready = await asyncio.to_thread(call, "GET", f"{a.http}/readyz")
    assert status == 200 and ready["checks"] == {"database": "ok", "channelLayer": "ok"}

    async with websockets.connect(
        f"{b.ws}/ws", additional_headers={"Authorization": f"Bearer {jwt_for(watcher)}"}
    ) as sock:
        hello = await recv_json(sock)
        assert hello["type"] == "connection" and hello["userId"] == str(watcher.pk)

        start = datetime.now(UTC) + timedelta(hours=1)
        body = {
            "kind": "maintenance",
            "message": "across processes",
            "startTime": start.isoformat(),
            "endTime": (start + timedelta(hours=1)).isoformat(),
        }
        status, created = await asyncio.to_thread(
            call, "POST", f"{a.http}/api/system/notices", body, token=jwt_for(staff)
        )
        assert status == 201, created

        event = await recv_json(sock)
        assert event["type"] == "server_maintenance" and event["data"]["id"] == created["id"]
        assert event["data"]["message"] == "across processes"


async def test_seed_style_auth_message_client_against_real_server(daphne, make_user, instruments):
    """The seed's AxisorWebSocketClient flow: connect, send auth, wait for `connection`, subscribe."""
    server = await asyncio.to_thread(daphne)
    user = await database_sync_to_async(make_user)("seedclient")
    async with websockets.connect(f"{server.ws}/ws") as sock:
        await sock.send(json.dumps({"type": "auth", "token": jwt_for(user)}))
        assert (await recv_json(sock))["status"] == "connected"
        await sock.send(json.dumps({"type": "subscribe", "channel": "market:BTC_USD"}))
        reply = await recv_json(sock)
        assert reply["type"] == "room_subscription" and reply["status"] == "subscribed"


def test_browser_client_is_served_by_daphne(daphne):
    import urllib.request

    server = daphne()
    body = urllib.request.urlopen(f"{server.http}/static/axisor-ws.js", timeout=10).read()
    assert b"function AxisorSocket" in body
