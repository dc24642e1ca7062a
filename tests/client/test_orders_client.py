"""``OrderUpdatesClient`` on ``/ws/orders`` against real daphne processes: the seed's callbacks, PONG
heartbeat and read timeout, resume_failed, tier refusals retried, bad credentials given up on."""

from __future__ import annotations

import asyncio

from axisor_client import Login, OrderUpdatesClient
from broadcast.models import EventLog
from tests.client.support import PASSWORD, Recorder, db, logged, set_login_password, start_server, wait_until
from tests.conftest import jwt_for
from tests.integration.http import call
from tests.orders.factories import execute, place


async def session_for(server, user) -> tuple[str, str]:
    status, creds = await asyncio.to_thread(call, "POST", f"{server.http}/api/auth/sessions", token=jwt_for(user))
    assert status == 201, creds
    return creds["session"], creds["token"]


async def test_order_updates_reach_per_order_per_type_and_wildcard_callbacks(daphne, make_user, instruments):
    server = await start_server(daphne)
    user = await db(make_user)("trader")
    await db(set_login_password)(user)
    first = await db(place)(user)  # seq 1, before the client: the baseline starts after it
    login = Login(server.http, "trader", PASSWORD)
    client = OrderUpdatesClient(server.http, login.order_session, baseline=login.last_seq)
    this_order, trades, every, statuses = Recorder(), Recorder(), Recorder(), Recorder()
    client.on_order_update(first.order_id, this_order)
    client.on_update_type("TRADE_UPDATE", trades)
    client.on_all_orders(every)
    client.on_connection_status(statuses)
    async with client:
        assert await statuses.get() == "connected"
        assert client.url == f"{server.ws}/ws/orders" and client.last_seq == 1  # the URL shown has no token
        await db(execute)(first, "fill", quantity=4, price="625.50")
        second = await db(place)(user, quantity="5")
        await db(execute)(first, "fill", quantity=6, price="625.40")
        got = await every.take(5)

    orders_log = await db(logged)(user.pk, "orders")
    assert got == [{**e["data"], "seq": e["seq"]} for e in orders_log[1:]]
    assert [(u["orderId"], u["updateType"], u["seq"]) for u in got] == [
        (first.order_id, "TRADE_UPDATE", 2),
        (first.order_id, "ORDER_PARTIAL", 3),
        (second.order_id, "ORDER_PLACED", 4),
        (first.order_id, "TRADE_UPDATE", 5),
        (first.order_id, "ORDER_EXECUTED", 6),
    ]
    assert this_order.items == [u for u in got if u["orderId"] == first.order_id]
    assert [u["tradeQuantity"] for u in trades.items] == [4, 6]
    assert [str(s) for s in statuses.items] == ["connected", "disconnected"]
    assert client.last_seq == got[-1]["seq"] and client.duplicates == 0


async def test_pong_heartbeat_keeps_the_socket_and_a_silent_client_is_dropped_and_reconnects(daphne, make_user):
    # The server gives up on clients it has not heard from for 1 s and sends its heartbeat every 0.2 s.
    server = await start_server(daphne, ORDERS_IDLE_TIMEOUT_SECONDS="1", ORDERS_HEARTBEAT_SECONDS="0.2")
    user = await db(make_user)("beats", tier="enterprise")
    ponging = OrderUpdatesClient(server.ws, await session_for(server, user), heartbeat_interval=0.2, read_timeout=1.5)
    silent = OrderUpdatesClient(
        server.ws, await session_for(server, user), heartbeat_interval=None, read_timeout=1.5, initial_delay=0.05
    )
    beats, ponging_statuses, silent_statuses = Recorder(), Recorder(), Recorder()
    ponging.on_heartbeat(beats)
    ponging.on_connection_status(ponging_statuses)
    silent.on_connection_status(silent_statuses)
    async with ponging, silent:
        dropped = [await silent_statuses.get() for _ in range(4)]
        assert dropped == ["connected", "disconnected", "reconnecting", "connected"]
        # Closed with 4040; or, while the server's close fails (see the report), its heartbeats stop
        # and our read timeout notices.
        assert dropped[1].code == 4040 or dropped[1].reason == "read timeout: nothing received for 1.5 s"
        await beats.take(15)  # 3 s of heartbeats: three idle timeouts' worth
        assert [str(s) for s in ponging_statuses.items] == ["connected"]
        assert all(b["type"] == "heartbeat" and b["serverTime"].endswith("Z") for b in beats.items)


async def test_read_timeout_reconnects_and_resumes(daphne, make_user, instruments):
    server = await start_server(daphne)  # heartbeat every 10 s: far beyond our read timeout
    user = await db(make_user)("impatient")
    client = OrderUpdatesClient(server.ws, await session_for(server, user), read_timeout=0.4, initial_delay=0.05)
    statuses, updates = Recorder(), Recorder()
    client.on_connection_status(statuses)
    client.on_all_orders(updates)
    async with client:
        assert await statuses.get() == "connected"
        order = await db(place)(user)
        assert (await updates.get())["orderId"] == order.order_id
        dropped = await statuses.get()
        assert (dropped, dropped.reason) == ("disconnected", "read timeout: nothing received for 0.4 s")
        assert await statuses.get() == "reconnecting"
        assert await statuses.get() == "connected"
        assert client.last_seq == 1
    assert updates.items[0]["seq"] == 1 and len(updates.items) == 1  # no replay of what we had


async def test_resume_failed_reaches_its_callback_and_updates_continue(daphne, make_user, instruments):
    server = await start_server(daphne)
    user = await db(make_user)("lost")
    for _ in range(3):
        await db(place)(user)
    creds = await session_for(server, user)
    failures, updates = Recorder(), Recorder()
    client = OrderUpdatesClient(server.ws, creds, last_seq=50)  # ahead of the server: another database
    client.on_resume_failed(failures)
    client.on_all_orders(updates)
    async with client:
        failed = await failures.get()
        assert (failed["reason"], failed["snapshotRequired"], failed["lastSeq"]) == ("ahead", False, 3)
        assert client.last_seq is None and client.resume_from == 3
        order = await db(place)(user)  # seq 4 < 50: delivered, the old position is gone
        update = await updates.get()
        assert (update["orderId"], update["seq"]) == (order.order_id, 4) and client.last_seq == 4

    await db(EventLog.objects.filter(user_id=user.pk, seq__lte=2).delete)()
    too_old = OrderUpdatesClient(server.ws, creds, last_seq=0)
    too_old.on_resume_failed(failures)
    async with too_old:
        failed = await failures.get()
        assert (failed["reason"], failed["snapshotRequired"], failed["oldestSeq"]) == ("too_old", True, 3)


async def test_tier_limit_refusal_is_retried_until_a_slot_frees(daphne, make_user):
    server = await start_server(daphne, ORDERS_HEARTBEAT_SECONDS="0.3")
    user = await db(make_user)("basic1")  # basic: one order-update connection, 10 attempts a minute
    first = OrderUpdatesClient(server.ws, await session_for(server, user))
    second = OrderUpdatesClient(server.ws, await session_for(server, user), initial_delay=0.05, max_delay=0.3)
    errors, statuses, beats = Recorder(), Recorder(), Recorder()
    second.on_error(errors)
    second.on_connection_status(statuses)
    second.on_heartbeat(beats)
    async with first:
        assert await first.wait_connected(15)
        async with second:
            refusal = await errors.get()
            assert (refusal["code"], refusal["closeCode"]) == ("RATE_LIMIT_EXCEEDED", 4029)
            await wait_until(lambda: "reconnecting" in statuses.items, what="a retry")
            retry = statuses.items[statuses.items.index("reconnecting")]
            assert retry.code == 4029 and retry.delay >= 0.3 * 0.75  # "too many": the longest delay
            await first.stop()
            await beats.get()  # only an accepted connection hears heartbeats
            assert second.connected and "noreconnect" not in statuses.items


async def test_refused_credentials_are_given_up_on(daphne, make_user):
    server = await start_server(daphne)
    statuses = Recorder()
    client = OrderUpdatesClient(server.ws, ("no-such-session", "bad-token"))
    client.on_connection_status(statuses)
    assert await asyncio.wait_for(client.run(), 15) == "noreconnect"
    [gave_up] = statuses.items
    assert (gave_up, gave_up.code, gave_up.reason) == ("noreconnect", 403, "handshake refused: HTTP 403")
