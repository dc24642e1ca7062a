"""What an outside tester broke on a real daphne process (fourteenth session). Hostile input was
answered with a traceback and close 1011, an HTTP 500, or the wrong error code: every one now gets
the documented, machine-readable answer and changes nothing. And credentials outlived what should
end them: sockets stayed open after a password set in the admin or an account deleted there, and an
order session survived any password change. And a client that sent WebSocket pings and never read
grew the server's memory by every pong it was owed."""

from __future__ import annotations

import asyncio
import json
import socket
import struct

import websockets
from channels.db import database_sync_to_async
from websockets.sync.client import connect as sync_connect

from accounts.services import account_upsert
from accounts.tokens import RefreshToken
from tests.conftest import jwt_for
from tests.hardening.conftest import close_code, open_ws, rest, rss_mib, server_is_clean
from wire import Close, Code

QUIET = {"AXISOR_SIMULATE": ""}


NOTICES = ("server_maintenance", "service_status_update")  # system notices in force, sent after connection


def recv_json(sock) -> dict:
    """The next message that is not a system notice."""
    while (msg := json.loads(sock.recv(timeout=10)))["type"] in NOTICES:
        pass
    return msg


def auth_refused(sock) -> None:
    """The socket is answered AUTHENTICATION_FAILED and closed 4001 (not 1011)."""
    msg = recv_json(sock)
    assert (msg["type"], msg["code"]) == ("error", Code.AUTHENTICATION_FAILED), msg
    try:
        extra = sock.recv(timeout=10)
        raise AssertionError(f"no close after the error: {extra!r}")
    except websockets.ConnectionClosed:
        pass
    assert sock.close_code == Close.AUTHENTICATION_FAILED


async def test_a_token_with_a_lone_surrogate_is_refused_4001_not_1011(daphne, make_user):
    server = await asyncio.to_thread(daphne, **QUIET)
    user = await database_sync_to_async(make_user)("surrogate")
    good = jwt_for(user)
    # json.dumps writes the lone surrogate as the escape \ud800: valid UTF-8 on the wire, and a
    # Python str that cannot be encoded once decoded
    hostile = json.dumps({"type": "auth", "token": good[:10] + "\ud800" + good[10:]})

    def first_auth() -> None:
        with sync_connect(f"{server.ws}/ws") as sock:
            sock.send(hostile)
            auth_refused(sock)

    def fresh_auth_on_open_socket() -> None:
        with sync_connect(f"{server.ws}/ws", additional_headers={"Authorization": f"Bearer {good}"}) as sock:
            assert recv_json(sock)["type"] == "connection"
            sock.send(hostile)
            auth_refused(sock)

    await asyncio.to_thread(first_auth)
    await asyncio.to_thread(fresh_auth_on_open_socket)
    server_is_clean(server)


def handshake_status(port: int, target: str, *, host: str = "127.0.0.1", more: str = "") -> str:
    """The status line daphne answers a WebSocket handshake for ``target`` with (``more``: further
    header lines, each ending CRLF)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            (
                f"GET {target} HTTP/1.1\r\nHost: {host}\r\n{more}Upgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode("latin1")
        )
        head = b""
        while b"\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                break
            head += chunk
    return head.split(b"\r\n", 1)[0].decode("latin1")


async def test_orders_credentials_with_a_nul_are_refused_403_not_500(daphne, make_user):
    server = await asyncio.to_thread(daphne, **QUIET)
    user = await database_sync_to_async(make_user)("nulsession")
    status, creds = await rest("POST", f"{server.http}/api/auth/sessions", token=jwt_for(user))
    assert status == 201, creds
    session, token = creds["session"], creds["token"]
    for query in (f"session=%00&token={token}", f"session={session}%00&token={token}"):
        line = await asyncio.to_thread(handshake_status, server.port, f"/ws/orders?{query}")
        assert " 403 " in line, (query, line)
    # the credentials themselves still open the socket
    line = await asyncio.to_thread(handshake_status, server.port, f"/ws/orders?session={session}&token={token}")
    assert " 101 " in line, line
    server_is_clean(server)


FORGED_HOSTS = (
    "evil.example",
    "evil.example:443",
    "127.0.0.1.evil.example",
    "127.0.0.1@evil.example",
    "localhost.evil.example:8000",
    "127.0.0.1, evil.example",
    "bad host",
    "\xe9vil.example",
)


async def test_a_handshake_whose_host_allowed_hosts_does_not_allow_is_refused_403(daphne, make_user):
    """Django refuses an HTTP request whose Host ALLOWED_HOSTS does not allow (400); the socket
    handshakes checked the Origin only, so a forged Host (DNS rebinding, a cache keyed by it) opened
    /ws and /ws/orders. They are refused before accept now (403), and the allowed Hosts still open."""
    server = await asyncio.to_thread(daphne, **QUIET)
    user = await database_sync_to_async(make_user)("hosted")
    status, creds = await rest("POST", f"{server.http}/api/auth/sessions", token=jwt_for(user))
    assert status == 201, creds
    orders = f"/ws/orders?session={creds['session']}&token={creds['token']}"
    for target in ("/ws", orders):
        for host in FORGED_HOSTS:
            line = await asyncio.to_thread(handshake_status, server.port, target, host=host)
            assert " 403 " in line, (target, host, line)
        # two Host headers, the second forged: read as Django reads them (joined), refused
        twice = await asyncio.to_thread(handshake_status, server.port, target, more="Host: evil.example\r\n")
        assert " 403 " in twice, (target, twice)
        for host in ("127.0.0.1", f"127.0.0.1:{server.port}", "localhost", f"[::1]:{server.port}"):
            line = await asyncio.to_thread(handshake_status, server.port, target, host=host)
            assert " 101 " in line, (target, host, line)
        # X-Forwarded-Host is not read (USE_X_FORWARDED_HOST is off): neither a way in nor out
        line = await asyncio.to_thread(handshake_status, server.port, target, more="X-Forwarded-Host: evil.example\r\n")
        assert " 101 " in line, (target, line)
    server_is_clean(server)


async def test_room_names_with_a_trailing_newline_are_invalid_rooms(daphne, make_user, instruments):
    server = await asyncio.to_thread(daphne, **QUIET)
    user = await database_sync_to_async(make_user)("newline")
    token = jwt_for(user)

    def run() -> list[dict]:
        answers = []
        with sync_connect(f"{server.ws}/ws", additional_headers={"Authorization": f"Bearer {token}"}) as sock:
            assert recv_json(sock)["type"] == "connection"
            for name in (f"user:{user.pk}\n", "market:BTC_USD\n"):
                for command in ("subscribe", "unsubscribe"):
                    sock.send(json.dumps({"type": command, "channel": name}))
                    answers.append(recv_json(sock))
            sock.send('{"type":"list_rooms"}')
            answers.append(recv_json(sock))
        return answers

    *errors, listing = await asyncio.to_thread(run)
    for answer in errors:
        assert answer.get("code") == Code.INVALID_ROOM, answer  # not FORBIDDEN ("your own room") nor an instrument
    assert listing["subscribedRooms"][:2] == [f"user:{user.pk}", "system"], listing
    server_is_clean(server)


# ---- credentials that outlived a new password or a deleted account -------------------------------


async def open_both(server, user) -> tuple:
    """The user's /ws socket, its /ws/orders socket, and the order session's query string."""
    token = jwt_for(user)
    status, creds = await rest("POST", f"{server.http}/api/auth/sessions", token=token)
    assert status == 201, creds
    query = f"session={creds['session']}&token={creds['token']}"
    events, _ = await open_ws(server, token)
    orders = await websockets.connect(f"{server.ws}/ws/orders?{query}")
    return events, orders, query


def admin_client(make_user):
    from django.test import Client

    client = Client()
    client.force_login(make_user("root", superuser=True))
    return client


async def test_a_password_set_in_the_admin_closes_both_sockets_and_ends_the_order_session(daphne, make_user):
    server = await asyncio.to_thread(daphne, **QUIET)
    user = await database_sync_to_async(make_user)("rekeyed-in-admin")
    refresh = await database_sync_to_async(lambda: str(RefreshToken.for_user(user)))()
    events, orders, query = await open_both(server, user)

    def change_password() -> None:
        url = f"/admin/accounts/user/{user.pk}/password/"
        new = "an-admin-chosen-password-7"
        response = admin_client(make_user).post(url, {"password1": new, "password2": new, "usable_password": "true"})
        assert response.status_code == 302, response.content[:500]

    await database_sync_to_async(change_password)()
    assert await close_code(events, timeout=20) == Close.ACCESS_REVOKED
    assert await close_code(orders, timeout=20) == Close.ACCESS_REVOKED
    line = await asyncio.to_thread(handshake_status, server.port, f"/ws/orders?{query}")
    assert " 403 " in line, line
    status, body = await rest("POST", f"{server.http}/api/auth/token/refresh", {"refresh": refresh})
    assert status == 401, body
    server_is_clean(server)


async def test_a_password_change_ends_the_order_session_as_it_ends_the_jwts(daphne, make_user):
    server = await asyncio.to_thread(daphne, **QUIET)
    user = await database_sync_to_async(make_user)("rekeyed")
    events, orders, query = await open_both(server, user)
    await database_sync_to_async(account_upsert)(username="rekeyed", password="a-new-password-1", tier="basic")
    assert await close_code(events, timeout=20) == Close.ACCESS_REVOKED
    assert await close_code(orders, timeout=20) == Close.ACCESS_REVOKED
    line = await asyncio.to_thread(handshake_status, server.port, f"/ws/orders?{query}")
    assert " 403 " in line, line
    server_is_clean(server)


async def test_deleting_an_account_in_the_admin_closes_its_sockets(daphne, make_user):
    server = await asyncio.to_thread(daphne, **QUIET)
    # no balance: a ledger entry cannot be deleted, so neither can an account that has one
    user = await database_sync_to_async(make_user)("deleted-in-admin", balance=None)
    other = await database_sync_to_async(make_user)("deleted-in-bulk", balance=None)
    events, orders, _ = await open_both(server, user)
    other_events, _ = await open_ws(server, jwt_for(other))

    def delete() -> None:
        client = admin_client(make_user)
        response = client.post(f"/admin/accounts/user/{user.pk}/delete/", {"post": "yes"})
        assert response.status_code == 302, response.content[:500]
        response = client.post(
            "/admin/accounts/user/", {"action": "delete_selected", "_selected_action": [other.pk], "post": "yes"}
        )
        assert response.status_code == 302, response.content[:500]

    await database_sync_to_async(delete)()
    assert await close_code(events, timeout=20) == Close.ACCESS_REVOKED
    assert await close_code(orders, timeout=20) == Close.ACCESS_REVOKED
    assert await close_code(other_events, timeout=20) == Close.ACCESS_REVOKED
    server_is_clean(server)


# ---- pings from a client that never reads ---------------------------------------------------------

PINGS = 400_000  # 125-byte pings: ~50 MB of pongs, were every one answered


def ping_frames(count: int) -> bytes:
    """``count`` masked ping frames with a 125-byte payload (the largest a control frame may carry)."""
    frame = struct.pack("!BB", 0x89, 0x80 | 125) + bytes(4) + b"p" * 125  # mask 0: payload as is
    return frame * count


async def test_pings_from_a_client_that_never_reads_cost_bounded_memory(daphne, make_user):
    server = await asyncio.to_thread(daphne, **QUIET)
    user = await database_sync_to_async(make_user)("pinger")
    token = jwt_for(user)

    def flood() -> tuple[int, float]:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # reads nothing meanwhile
        s.connect(("127.0.0.1", server.port))
        with s:
            s.sendall(
                (
                    "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                    f"Authorization: Bearer {token}\r\n\r\n"
                ).encode()
            )
            before = rss_mib(server.proc.pid)
            s.sendall(ping_frames(PINGS))
            s.sendall(struct.pack("!BB", 0x89, 0x80 | 6) + bytes(4) + b"latest")
            payload = b'{"type":"ping"}'
            s.sendall(struct.pack("!BB", 0x81, 0x80 | len(payload)) + bytes(4) + payload)
            # now read: everything the server wrote before the answer to that last message, and the
            # pong of the latest ping (a keepalive waits for it), whenever it comes
            pongs, data, answered = 0, b"", False
            s.settimeout(60)
            while b'"type":"pong"' not in data or not answered:
                chunk = s.recv(1 << 20)
                assert chunk, "the server closed the socket"
                data = data[-64:] + chunk
                pongs += chunk.count(b"\x8a\x7d")  # a pong frame's head, 125-byte payload
                answered = answered or b"\x8a\x06latest" in data
            return pongs, rss_mib(server.proc.pid) - before

    pongs, grown = await asyncio.to_thread(flood)
    # Answered: what fit while the client did not read (the kernel's socket buffers, up to tcp_wmem's
    # 4 MiB here: ~50,000 of 200,000; then PONG_BACKLOG_BYTES), not all of them (before: every one,
    # ~50 MB held in the server for a client that never read).
    assert pongs < PINGS // 4, pongs
    assert grown < 20, f"RSS grew {grown:.1f} MiB"
    server_is_clean(server)
