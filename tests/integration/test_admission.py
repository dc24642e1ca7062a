"""Connects in progress at once (core/internals.py, Admission): a real daphne process with
CONNECTS_IN_PROGRESS=1 and its connect read held on a table lock."""

from __future__ import annotations

import asyncio

import psycopg
import websockets
from channels.db import database_sync_to_async

from tests.conftest import jwt_for
from tests.hardening.conftest import recv_json
from tests.integration.conftest import subprocess_database_url
from tests.integration.http import call
from tests.integration.test_stopping import waiting_on
from tests.polling import until

VALVE = "none finished in 1 s"


async def test_a_connection_waits_for_a_connect_in_progress_and_the_valve_lets_a_health_check_through(
    daphne, make_user
):
    """While the limit's worth of connects is in progress, a new connection is accepted but not
    read; it is read as one finishes. None finishing for a second (a database that hangs), a few
    are read anyway: a health check is answered."""
    server = await asyncio.to_thread(daphne, AXISOR_BACKGROUND="0", AXISOR_SIMULATE="", CONNECTS_IN_PROGRESS="1")
    users = [await database_sync_to_async(make_user)(f"admitted{i}") for i in range(2)]
    url = subprocess_database_url()
    holder = await asyncio.to_thread(psycopg.connect, url)
    sockets = []

    async def connect(user):
        bearer = {"Authorization": f"Bearer {jwt_for(user)}"}
        sock = await websockets.connect(f"{server.ws}/ws", additional_headers=bearer)
        sockets.append(sock)
        return await recv_json(sock)

    try:
        await asyncio.to_thread(holder.execute, "LOCK TABLE accounts_user IN ACCESS EXCLUSIVE MODE")
        first = asyncio.ensure_future(connect(users[0]))
        await waiting_on(url, "accounts_user")  # the first connect is in progress: its read waits
        status, body = await asyncio.to_thread(call, "GET", f"{server.http}/healthz")
        assert status == 200, body
        # answered through the valve, not at once: it waited behind the connect in progress
        await until(lambda: any(VALVE in line for line in server.lines), timeout=5, what="the valve's warning")
        second = asyncio.ensure_future(connect(users[1]))  # waits, unread, for the first to finish
        await asyncio.to_thread(holder.rollback)
        hellos = await asyncio.wait_for(asyncio.gather(first, second), 20)
        assert [h["type"] for h in hellos] == ["connection", "connection"], hellos
        assert [h["userId"] for h in hellos] == [str(u.pk) for u in users]
    finally:
        await asyncio.to_thread(holder.close)
        for sock in sockets:
            await sock.close()
