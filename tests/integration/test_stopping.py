"""A daphne process told to stop (SIGTERM, as systemd stops it during a deploy): it takes no new
connection from that moment, and finishes the requests it has (jobs/schedule.py, BackgroundStarter;
core/internals.py, stop_listening)."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl

import psycopg
import websockets
from channels.db import database_sync_to_async

from tests.conftest import jwt_for
from tests.hardening.test_tls_proxy import self_signed
from tests.integration.conftest import LISTENING, subprocess_database_url
from tests.integration.http import call
from tests.polling import until
from wire import Close, Code

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
    await refused_while_a_request_drains(server, make_user, [server.port])


async def test_a_stopping_process_closes_its_tls_port_too(daphne, make_user, tmp_path):
    """A TLS port (``-e ssl:``) is Twisted's TLS factory wrapping daphne's: it is found by what it
    wraps and closed with the plain one (core.internals.stop_listening)."""
    cert, key = self_signed(tmp_path)
    endpoint = f"ssl:port=0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    server = await asyncio.to_thread(daphne, "-e", endpoint, AXISOR_BACKGROUND="0", AXISOR_SIMULATE="")
    # daphne listens on both: the plain one answers plain HTTP (the TLS one hangs up on it)
    await until(lambda: len(listening(server)) == 2, what="both ports listening")
    answers = {port: await asyncio.to_thread(plain_answers, port) for port in listening(server)}
    (server.port,) = [port for port, ok in answers.items() if ok]
    (tls_port,) = [port for port, ok in answers.items() if not ok]
    assert await asyncio.to_thread(tls_answers, tls_port)
    await refused_while_a_request_drains(server, make_user, [server.port, tls_port])


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


async def told_to_reconnect(sock) -> tuple[str | None, int | None]:
    """The error code the server sent before it closed (heartbeats skipped), and the close code."""
    said = None
    try:
        while True:
            text = await asyncio.wait_for(sock.recv(), 10)
            if text.startswith("{") and (message := json.loads(text)).get("type") == "error":
                said = message["code"]
    except websockets.ConnectionClosed:
        pass
    return said, sock.close_code


def listening(server) -> set[int]:
    return {int(m.group(1)) for line in list(server.lines) if (m := LISTENING.search(line))}


HEALTH = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


def plain_answers(port: int) -> bool:
    """A health check in plain HTTP on ``port`` is answered 200 (a TLS port hangs up on it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(HEALTH)
        try:
            return sock.recv(64).startswith(b"HTTP/1.1 200")
        except ConnectionResetError:
            return False


def tls_answers(port: int) -> bool:
    """A health check over TLS on ``port`` is answered 200 (the certificate is the test's own)."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=15) as raw, context.wrap_socket(raw) as tls:
        tls.sendall(HEALTH)
        return tls.recv(64).startswith(b"HTTP/1.1 200")


async def refused_while_a_request_drains(server, make_user, ports: list[int]) -> None:
    user = await database_sync_to_async(make_user)("stopping")
    token = jwt_for(user)
    url = subprocess_database_url()
    events = await websockets.connect(f"ws://127.0.0.1:{server.port}/ws", additional_headers=bearer(token))
    assert json.loads(await events.recv())["type"] == "connection"
    session = await asyncio.to_thread(call, "POST", f"{server.http}/api/auth/sessions", token=token)
    assert session[0] == 201, session
    orders = await websockets.connect(
        f"ws://127.0.0.1:{server.port}/ws/orders?session={session[1]['session']}&token={session[1]['token']}"
    )
    late = await websockets.connect(f"ws://127.0.0.1:{server.port}/ws")  # authenticates during the drain
    holder = await asyncio.to_thread(psycopg.connect, url)
    try:
        await asyncio.to_thread(holder.execute, LOCKED)
        in_flight = asyncio.ensure_future(
            asyncio.to_thread(call, "GET", f"{server.http}/api/notifications", token=token)
        )
        await waiting_on(url, "notifications_notification")  # the request is in flight
        server.proc.terminate()
        # within the drain (which waits up to 10 s for the request): daphne before this kept listening
        for port in ports:
            await until(lambda port=port: refused(port), in_thread=True, timeout=5, what=f"connects to {port} refused")
        # Open sockets are told to go elsewhere, with a close code, at once: before, daphne cut
        # them at the end without a close frame (1006, as after a crash: an outside operator's run).
        for sock in (events, orders):
            assert await told_to_reconnect(sock) == (Code.SERVICE_UNAVAILABLE, Close.TRY_AGAIN_LATER)
        # ... and one that authenticates now is told the same, not served and then cut (the review)
        await late.send(json.dumps({"type": "auth", "token": token}))
        assert await told_to_reconnect(late) == (Code.SERVICE_UNAVAILABLE, Close.TRY_AGAIN_LATER)
        assert server.proc.poll() is None and not in_flight.done()  # still draining
    finally:
        await asyncio.to_thread(holder.rollback)
        await asyncio.to_thread(holder.close)
    status, body = await in_flight
    assert status == 200 and body["results"] == [], body
    assert await asyncio.to_thread(server.proc.wait, 20) is not None
