"""Hardening case 6: when a user's access ends — the token expires on an open socket, the account is
deactivated, the password changes, an order session is revoked, an admin is demoted — that user's
sockets on every process close within 5 s; other users' sockets stay open."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta

import websockets
from channels.db import database_sync_to_async

from accounts.services import account_deactivate, account_upsert
from accounts.tokens import AccessToken
from tests.conftest import jwt_for
from tests.hardening.conftest import close_code, open_ws, recv_json, recv_until, rest
from tests.panel.grants import feed_reader

WITHIN = 5.0


async def two(daphne):
    return await asyncio.gather(*(asyncio.to_thread(daphne, AXISOR_SIMULATE="") for _ in range(2)))


async def closed_within(socks, started: float, want: int) -> list[float]:
    async def one(sock) -> float:
        code = await close_code(sock, timeout=WITHIN + 5)
        assert code == want, code
        return time.monotonic() - started

    took = await asyncio.gather(*(one(s) for s in socks))
    assert max(took) <= WITHIN, took
    return took


async def still_open(sock) -> None:
    await sock.send(json.dumps({"type": "ping"}))
    await recv_until(sock, lambda m: m["type"] == "pong")


async def test_token_expiring_on_open_sockets_closes_them_4002(daphne, make_user):
    a, b = await two(daphne)
    user = await database_sync_to_async(make_user)("expiring")
    token = AccessToken.for_user(user)
    token.set_exp(lifetime=timedelta(seconds=4))
    socks = [(await open_ws(server, str(token)))[0] for server in (a, b)]
    expires = token["exp"]
    for sock in socks:  # the warning before expiry, then the close at expiry
        warning = await recv_json(sock)
        assert warning["type"] == "auth_expiring", warning
    took = await asyncio.gather(*(close_code(s, timeout=10) for s in socks))
    late = time.time() - expires
    assert took == [4002, 4002]
    assert late <= WITHIN, late


async def test_deactivation_password_change_and_demotion_close_sockets_on_every_process(daphne, make_user):
    a, b = await two(daphne)
    bystander = await database_sync_to_async(make_user)("bystander")
    watcher, _ = await open_ws(a, jwt_for(bystander))
    figures = {}

    async def revoke(label: str, user, change) -> None:
        socks = [(await open_ws(server, jwt_for(user)))[0] for server in (a, b, a)]
        started = time.monotonic()
        await database_sync_to_async(change)()
        took = await closed_within(socks, started, 4003)
        figures[label] = max(took)

    deactivated = await database_sync_to_async(make_user)("deactivated")
    await revoke("deactivated", deactivated, lambda: account_deactivate(user=deactivated))
    changed = await database_sync_to_async(make_user)("rekeyed")
    await revoke(
        "password changed",
        changed,
        lambda: account_upsert(username="rekeyed", password="a-new-password-1", tier="basic"),
    )
    admin = await database_sync_to_async(feed_reader)(make_user, "demoted")
    sock, _ = await open_ws(a, jwt_for(admin))
    await sock.send(json.dumps({"type": "list_rooms"}))
    rooms = (await recv_until(sock, lambda m: m["type"] == "room_list"))["subscribedRooms"]
    assert "admin:staff" in rooms
    await sock.close()
    await revoke("admin demoted", admin, lambda: account_upsert(username="demoted", password=None, tier="basic"))

    # The old token no longer opens anything; the bystander never noticed.
    status, _ = await rest("GET", f"{b.http}/api/orders", token=jwt_for(deactivated))
    assert status == 401
    await still_open(watcher)
    await watcher.close()
    print(f"\ncase 6: closed on both processes within {', '.join(f'{k} {v:.2f} s' for k, v in figures.items())}")


async def test_revoked_order_session_closes_its_sockets_on_every_process(daphne, make_user):
    a, b = await two(daphne)
    user = await database_sync_to_async(make_user)("sessions", tier="premium")
    token = jwt_for(user)
    _, keep = await rest("POST", f"{a.http}/api/auth/sessions", token=token)
    _, doomed = await rest("POST", f"{a.http}/api/auth/sessions", token=token)

    def url(server, creds):
        return f"{server.ws}/ws/orders?session={creds['session']}&token={creds['token']}"

    socks = [await websockets.connect(url(server, doomed)) for server in (a, b)]
    kept = await websockets.connect(url(b, keep))
    for sock in (*socks, kept):  # wait until each is held and joined
        await sock.send(json.dumps({"type": "ping"}))
        assert (await recv_json(sock))["type"] == "heartbeat"
    started = time.monotonic()
    status, _ = await rest("DELETE", f"{b.http}/api/auth/sessions/{doomed['session']}", token=token)
    assert status in (200, 204)
    took = await closed_within(socks, started, 4003)
    await kept.send(json.dumps({"type": "ping"}))
    assert (await recv_json(kept))["type"] == "heartbeat"  # the other session is untouched
    await kept.close()
    print(f"\ncase 6: revoked order session closed on both processes within {max(took):.2f} s")
