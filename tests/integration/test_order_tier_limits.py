"""The seed's per-account limits on ``/ws/orders`` (seed 004, "Rate Limits") across two real daphne
processes sharing Redis: concurrent connections per tier (close 4029), reconnect rate (close
4030), a killed process's slots freed by lease expiry, and credentials checked at the handshake."""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest
import websockets
from channels.db import database_sync_to_async
from django.conf import settings
from redis import asyncio as aioredis
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import jwt_for
from tests.integration.http import call
from tests.polling import until

LEASE = 2.0
SERVER_ENV = {"ORDERS_LEASE_SECONDS": str(LEASE), "AXISOR_SIMULATE": ""}


# ---- helpers -------------------------------------------------------------------------------------


async def two_servers(daphne):
    return await asyncio.gather(asyncio.to_thread(daphne, **SERVER_ENV), asyncio.to_thread(daphne, **SERVER_ENV))


async def user_with_session(make_user, server, username: str, tier: str = "basic"):
    user = await database_sync_to_async(make_user)(username, tier=tier)
    status, creds = await asyncio.to_thread(call, "POST", f"{server.http}/api/auth/sessions", token=jwt_for(user))
    assert status == 201, creds
    return user, creds


def orders_url(server, creds: dict) -> str:
    return f"{server.ws}/ws/orders?session={creds['session']}&token={creds['token']}"


async def recv_json(sock, timeout: float = 10) -> dict:
    return json.loads(await asyncio.wait_for(sock.recv(), timeout))


async def held(server, creds: dict):
    """Open a socket and wait until the server holds its slot. The consumer finishes connect()
    (slot acquired, group joined, keepalive started) before it reads any client message, so the
    heartbeat answering a ``{"type":"ping"}`` (or a periodic one) proves the slot is taken."""
    sock = await websockets.connect(orders_url(server, creds))
    await sock.send(json.dumps({"type": "ping"}))
    msg = await recv_json(sock)
    assert msg["type"] == "heartbeat", msg
    return sock


async def refused(server, creds: dict) -> tuple[dict, int]:
    """Open a socket that the limiter refuses: the handshake succeeds, an error JSON arrives, then
    the close. Returns (error, close code)."""
    async with websockets.connect(orders_url(server, creds)) as sock:
        err = await recv_json(sock)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(sock.recv(), 10)
    assert closed.value.rcvd is not None, f"no close frame: {closed.value!r}"
    return err, closed.value.rcvd.code


async def next_update(sock) -> dict:
    while (msg := await recv_json(sock)).get("type") == "heartbeat":
        pass
    assert "updateType" in msg, msg
    return msg


async def place_order(server, user) -> str:
    body = {"tradingSymbol": "SBIN-EQ", "orderType": "LIMIT", "transactionType": "BUY", "quantity": 1, "price": 625.5}
    status, order = await asyncio.to_thread(call, "POST", f"{server.http}/api/orders", body, token=jwt_for(user))
    assert status == 201, order
    return order["orderId"]


@pytest.fixture
async def redis():
    client = aioredis.from_url(os.environ["REDIS_URL"])
    yield client
    await client.aclose()


def conns_key(user_id: int) -> str:
    return f"{settings.CHANNEL_LAYER_PREFIX}:orders:conns:{user_id}"


async def live_leases(redis, user_id: int) -> int:
    """Leases the limiter counts: members scored (by expiry) after now."""
    return await redis.zcount(conns_key(user_id), f"({time.time()}", "+inf")


async def wait_for_leases(redis, user_id: int, want: int, timeout: float = 10) -> float:
    """Poll Redis (an external condition: no event to await) until ``want`` leases are live.
    Returns the seconds it took."""
    start = time.monotonic()

    async def reached() -> bool:
        return await live_leases(redis, user_id) == want

    await until(reached, timeout=timeout, what=f"{want} live lease(s) for user {user_id}")
    return time.monotonic() - start


# ---- concurrent connections ----------------------------------------------------------------------


async def test_basic_tier_second_connection_on_other_process_is_refused_4029(daphne, make_user, instruments, redis):
    a, b = await two_servers(daphne)
    user, creds = await user_with_session(make_user, a, "basic1")

    first = await held(a, creds)
    try:
        assert await live_leases(redis, user.pk) == 1
        err, code = await refused(b, creds)
        assert code == 4029
        assert err["type"] == "error" and err["code"] == "RATE_LIMIT_EXCEEDED" and err["closeCode"] == 4029, err
        assert "basic" in err["message"]
        assert await live_leases(redis, user.pk) == 1  # the refused socket released nothing, took nothing

        # The first is untouched: open, and an order update (placed through B) reaches it on A.
        order_id = await place_order(b, user)
        update = await next_update(first)
        assert (update["orderId"], update["updateType"]) == (order_id, "ORDER_PLACED")
    finally:
        await first.close()
    await wait_for_leases(redis, user.pk, 0)  # a clean close releases the slot at once


async def test_premium_tier_three_connections_across_processes_fourth_refused(daphne, make_user, instruments, redis):
    a, b = await two_servers(daphne)
    user, creds = await user_with_session(make_user, a, "prem1", tier="premium")

    socks = []
    try:
        for server in (a, b, a):
            socks.append(await held(server, creds))
        assert await live_leases(redis, user.pk) == 3
        err, code = await refused(b, creds)
        assert code == 4029 and err["closeCode"] == 4029 and "premium" in err["message"], err

        order_id = await place_order(a, user)
        for sock in socks:
            update = await next_update(sock)
            assert (update["orderId"], update["updateType"]) == (order_id, "ORDER_PLACED")

        # Closing one frees its slot for the next connection, on either process.
        await socks.pop(0).close()
        await wait_for_leases(redis, user.pk, 2)
        socks.append(await held(b, creds))
        err, code = await refused(a, creds)
        assert code == 4029, err
    finally:
        for sock in socks:
            await sock.close()


# ---- reconnect rate ------------------------------------------------------------------------------


async def test_basic_tier_eleventh_attempt_within_a_minute_is_refused_4030(daphne, make_user, redis):
    a, b = await two_servers(daphne)
    user, creds = await user_with_session(make_user, a, "basic2")

    for attempt in range(10):  # alternate processes: the window is shared through Redis
        sock = await held((a, b)[attempt % 2], creds)
        await sock.close()
        await wait_for_leases(redis, user.pk, 0)  # released, so the next is judged on rate alone
    err, code = await refused(a, creds)
    assert code == 4030
    assert err["type"] == "error" and err["code"] == "RATE_LIMIT_EXCEEDED" and err["closeCode"] == 4030, err
    err, code = await refused(b, creds)
    assert code == 4030, err

    # Per account: another basic user is unaffected.
    _, other = await user_with_session(make_user, b, "basic3")
    sock = await held(b, other)
    await sock.close()


async def test_enterprise_tier_has_no_reconnect_limit(daphne, make_user, redis):
    a, b = await two_servers(daphne)
    user, creds = await user_with_session(make_user, a, "ent1", tier="enterprise")
    for attempt in range(12):
        sock = await held((a, b)[attempt % 2], creds)
        await sock.close()
    await wait_for_leases(redis, user.pk, 0)


# ---- a killed process ----------------------------------------------------------------------------


async def test_killed_process_slots_free_themselves_after_the_lease(daphne, make_user, redis):
    a, b = await two_servers(daphne)
    user, creds = await user_with_session(make_user, b, "basic4")

    on_a = await held(a, creds)
    await asyncio.to_thread(a.stop, kill=True)  # SIGKILL: A cannot release its slot
    killed = time.monotonic()
    with pytest.raises(ConnectionClosed):
        while True:
            await recv_json(on_a)  # drain heartbeats until the dead process's socket drops

    err, code = await refused(b, creds)  # the lease is still live
    assert code == 4029, err
    took = await wait_for_leases(redis, user.pk, 0)
    assert time.monotonic() - killed <= LEASE + 1.5, f"lease outlived {LEASE} s by far ({took:.2f} s of polling)"
    sock = await held(b, creds)
    assert await live_leases(redis, user.pk) == 1
    await sock.close()


# ---- credentials at the handshake ----------------------------------------------------------------


async def handshake_status(url: str) -> int:
    with pytest.raises(InvalidStatus) as refused_:
        async with websockets.connect(url):
            pass
    return refused_.value.response.status_code


async def test_bad_or_missing_credentials_fail_the_handshake_with_403(daphne, make_user, redis):
    a, b = await two_servers(daphne)
    user, creds = await user_with_session(make_user, a, "basic5")
    _, other = await user_with_session(make_user, a, "basic6")
    session, token = creds["session"], creds["token"]

    for query in (
        "",
        f"session={session}",
        f"token={token}",
        f"session={session}&token=",
        f"session={session}&token=wrong",
        f"session=sess_nope&token={token}",
        f"session={session}&token={other['token']}",  # another session's token
        f"session={session}&token={token}x",
    ):
        assert await handshake_status(f"{b.ws}/ws/orders?{query}") == 403, query
    assert await live_leases(redis, user.pk) == 0  # a refused handshake takes no slot

    # Revoking the session (through A) closes its open socket on B and refuses it afterwards.
    sock = await held(b, creds)
    status, _ = await asyncio.to_thread(call, "DELETE", f"{a.http}/api/auth/sessions/{session}", token=jwt_for(user))
    assert status == 204
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            msg = await recv_json(sock)
            if msg["type"] != "heartbeat":
                assert msg["type"] == "error" and msg["code"] == "ACCESS_REVOKED", msg
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4003, closed.value
    assert await handshake_status(orders_url(a, creds)) == 403
    assert await handshake_status(orders_url(b, creds)) == 403
