"""A daphne process told to stop (SIGTERM, as systemd stops it during a deploy): it takes no new
connection from that moment, and finishes the requests it has (jobs/schedule.py, BackgroundStarter;
core/internals.py, stop_listening)."""

from __future__ import annotations

import asyncio
import socket

import psycopg
from channels.db import database_sync_to_async

from tests.conftest import jwt_for
from tests.integration.conftest import subprocess_database_url
from tests.integration.http import call
from tests.polling import until

LOCKED = "LOCK TABLE notifications_notification IN ACCESS EXCLUSIVE MODE"


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def waiting_on_a_lock(database_url: str, table: str) -> bool:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
            (f"%{table}%",),
        ).fetchone()
    return bool(row and row[0])


async def waiting_on(database_url: str, table: str) -> None:
    """Until a statement of a server process waits on the lock the test holds on ``table``."""
    await until(lambda: waiting_on_a_lock(database_url, table), in_thread=True, what=f"a statement waiting on {table}")


async def test_a_stopping_process_refuses_new_connections_and_finishes_its_requests(daphne, make_user):
    """Before, daphne's ports stayed open until every stop step was done (up to the drain's 10 s):
    it accepted sockets that took tier slots after the give-back and were cut a moment later, and
    requests nginx could have sent to another process. Now a connect is refused from SIGTERM on,
    while a request in flight (held here on a table lock) still gets its answer."""
    server = await asyncio.to_thread(daphne, AXISOR_BACKGROUND="0", AXISOR_SIMULATE="")
    user = await database_sync_to_async(make_user)("stopping")
    token = jwt_for(user)
    url = subprocess_database_url()
    holder = await asyncio.to_thread(psycopg.connect, url)
    try:
        await asyncio.to_thread(holder.execute, LOCKED)
        in_flight = asyncio.ensure_future(
            asyncio.to_thread(call, "GET", f"{server.http}/api/notifications", token=token)
        )
        await waiting_on(url, "notifications_notification")  # the request is in flight
        server.proc.terminate()
        # within the drain (which waits up to 10 s for the request): daphne before this kept listening
        await until(lambda: refused(server.port), in_thread=True, timeout=5, what="connects refused")
        assert server.proc.poll() is None and not in_flight.done()  # still draining
    finally:
        await asyncio.to_thread(holder.rollback)
        await asyncio.to_thread(holder.close)
    status, body = await in_flight
    assert status == 200 and body["results"] == [], body
    assert await asyncio.to_thread(server.proc.wait, 20) is not None
