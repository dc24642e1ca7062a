"""``AxisorClient`` on ``/ws`` against real daphne processes: callbacks, resubscribe and dedupe after a
reconnect, resume_failed, token refresh, heartbeat and read timeout, giving up."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest
import websockets

from axisor_client import AxisorClient
from broadcast.models import EventLog
from broadcast.outbox import publish, publish_personal_many
from broadcast.rooms import market_room
from notifications.services import notification_create
from tests.client.support import Recorder, db, logged, notify, start_server, wait_until
from tests.conftest import jwt_for
from tests.orders.factories import execute, place
from wire import envelope


async def test_live_events_reach_type_order_and_wildcard_callbacks(daphne, make_user, instruments):
    server = await start_server(daphne)
    user = await db(make_user)("live")
    order = await db(place)(user)  # before the client connects: its later updates are live
    client = AxisorClient(server.ws, jwt_for(user))
    by_type, by_channel, this_order, all_orders, everything, statuses = (Recorder() for _ in range(6))
    client.on_event("in_app_notification", by_type)
    client.on_channel("orders", by_channel)
    client.on_order_update(order.order_id, this_order)
    client.on_all_orders(all_orders)
    client.on_event("*", everything)
    client.on_connection_status(statuses)
    async with client:
        assert await statuses.get() == "connected"
        baseline = client.last_seq
        assert baseline == 1  # ORDER_PLACED, logged before we connected

        await db(execute)(order, "fill", quantity=10, price="625.50")  # TRADE_UPDATE, ORDER_EXECUTED, notification
        other = await db(place)(user, quantity="5")
        await db(notification_create)(user=user, title="hello", message="from a test", type="info", category="system")
        await wait_until(lambda: sum("seq" in e for e in everything.items) == 5, what="the personal events")

    got = [e for e in everything.items if "seq" in e]
    # the fill also opened a position: its values come as position_status_update, a value stream without seq
    assert {e["type"] for e in everything.items if "seq" not in e} <= {"position_status_update"}
    assert [e["seq"] for e in got] == [2, 3, 4, 5, 6]
    assert got == (await db(logged)(user.pk))[1:]
    assert [(e["type"], e["channel"]) for e in got] == [
        ("order_update", "orders"),
        ("order_update", "orders"),
        ("in_app_notification", "notifications"),
        ("order_update", "orders"),
        ("in_app_notification", "notifications"),
    ]
    assert [e["data"]["updateType"] for e in this_order.items] == ["TRADE_UPDATE", "ORDER_EXECUTED"]
    assert [e["data"]["orderId"] for e in all_orders.items] == [order.order_id] * 2 + [other.order_id]
    assert by_channel.items == all_orders.items
    assert [e["data"]["title"] for e in by_type.items] == ["Order executed", "hello"]
    assert client.last_seq == 6 and client.duplicates == 0 and client.callback_errors == 0
    assert [str(s) for s in statuses.items] == ["connected", "disconnected"]


def order_events(user_id: int, n: int, tag: str) -> list[int]:
    """``n`` personal order_update events (channel ``orders``); returns their seqs."""
    return [
        publish_personal_many(
            [
                (
                    user_id,
                    envelope(
                        "order_update",
                        "orders",
                        {"orderId": f"{tag}-{i}", "updateType": "ORDER_PLACED", "orderStatus": "PENDING"},
                    ),
                )
            ]
        )[0].seq
        for i in range(n)
    ]


def market_event(price: float) -> None:
    publish(
        room=market_room("BTC_USD"),
        event=envelope("market_data_update", "market_data", {"symbol": "BTC_USD", "price": price}),
    )


@pytest.mark.parametrize("resume", ["auth", "command"])
async def test_reconnect_resubscribes_and_delivers_each_event_once(daphne, make_user, instruments, resume):
    a, b = await start_server(daphne), await start_server(daphne)
    user = await db(make_user)("resub")
    token = jwt_for(user)
    client = AxisorClient([a.ws, b.ws], token, resume=resume, initial_delay=0.05, max_delay=0.2)
    everything, statuses, resumed = Recorder(), Recorder(), Recorder()
    client.on_event("*", everything)
    client.on_connection_status(statuses)
    client.on_resumed(resumed)
    sent_while_down: list[int] = []
    sent_before_resume: list[int] = []

    async def while_down(status) -> None:  # awaited before the client waits and reconnects
        if not sent_while_down:
            sent_while_down.extend(await db(order_events)(user.pk, 2, "down"))
            await db(notify)(user.pk, 1, tag="muted-down")

    client.on_status("reconnecting", while_down)

    async with websockets.connect(f"{b.ws}/ws", additional_headers={"Authorization": f"Bearer {token}"}) as probe:
        assert json.loads(await asyncio.wait_for(probe.recv(), 10))["type"] == "connection"

        async def before_resume(message: dict) -> None:
            # Awaited before the client acts on `connection` (subscribes, resumes). Events published
            # now reach its new socket live; with resume="command" the replay that follows carries
            # them again, with "auth" the server replayed before sending them.
            if message["type"] != "connection" or not client.url.startswith(b.ws):
                return
            sent_before_resume.extend(await db(order_events)(user.pk, 3, "race"))
            seen: set[int] = set()
            while not set(sent_before_resume) <= seen:  # B's process has handed them to our socket too
                seen.add(json.loads(await asyncio.wait_for(probe.recv(), 10)).get("seq"))

        client.on_message(before_resume)
        async with client:
            assert await statuses.get() == "connected" and client.url.startswith(a.ws)
            assert (await client.subscribe("market:BTC_USD"))["status"] == "subscribed"
            assert (await client.unsubscribe("notifications"))["status"] == "unsubscribed"
            await db(market_event)(100.0)
            await db(order_events)(user.pk, 1, "before")
            await db(notify)(user.pk, 1, tag="muted-before")
            await wait_until(lambda: len(everything.items) == 2, what="the market and order events")

            await asyncio.to_thread(a.stop, kill=True)
            await wait_until(lambda: len(resumed.items) == 1, what="the resume on the other process")
            assert client.url.startswith(b.ws)
            rooms = await client.list_rooms()
            assert "market:BTC_USD" in rooms and "notifications" not in rooms and "orders" in rooms
            await db(market_event)(101.0)
            await db(notify)(user.pk, 1, tag="muted-after")
            last = await db(order_events)(user.pk, 1, "after")
            await wait_until(lambda: client.last_seq == last[0], what="the last event")

    log = await db(logged)(user.pk)
    orders_log = [e for e in log if e["channel"] == "orders"]
    personal = [e for e in everything.items if "seq" in e]
    assert personal == orders_log  # once each, in order; the muted notifications never reached callbacks
    assert [e["data"]["price"] for e in everything.items if e["type"] == "market_data_update"] == [100.0, 101.0]
    # With the resume command the three "race" events came live and then again in the replay.
    assert client.duplicates == (3 if resume == "command" else 0)
    assert [e["data"]["orderId"] for e in personal] == [
        "before-0",
        "down-0",
        "down-1",
        "race-0",
        "race-1",
        "race-2",
        "after-0",
    ]
    assert resumed.items[0]["since"] == orders_log[0]["seq"]


def forget_up_to(user_id: int, seq: int) -> None:
    """What retention does to old events: the log no longer holds seqs <= ``seq``."""
    EventLog.objects.filter(user_id=user_id, seq__lte=seq).delete()


async def test_resume_failed_reaches_its_callback_and_the_stream_goes_on_live(daphne, make_user):
    server = await start_server(daphne)
    user = await db(make_user)("forgotten")
    await db(notify)(user.pk, 8)
    await db(forget_up_to)(user.pk, 5)
    positions, failures, everything = Recorder(), Recorder(), Recorder()
    client = AxisorClient(server.ws, jwt_for(user), last_seq=2)  # 3..5 are gone
    client.on_resume_failed(failures)
    client.on_last_seq(positions)
    client.on_event("*", everything)
    async with client:
        failed = await failures.get()
        too_old = {"type": "resume_failed", "reason": "too_old", "snapshotRequired": True, "lastSeq": 8, "oldestSeq": 6}
        assert failed == too_old
        [nine] = await db(notify)(user.pk, 1, tag="after")
        assert (await everything.get())["seq"] == nine == 9
    assert positions.items == [8, 9]  # continued from the socket's start, then live
    assert everything.items[0]["data"]["id"] == "after-0" and len(everything.items) == 1

    ahead = AxisorClient(server.ws, jwt_for(user), last_seq=50)  # e.g. a state file from another database
    ahead.on_resume_failed(failures)
    async with ahead:
        failed = await failures.get()
        assert (failed["reason"], failed["snapshotRequired"], failed["lastSeq"]) == ("ahead", False, 9)
        await wait_until(lambda: ahead.last_seq == 9, what="the position to move back to the server's")


async def test_pings_keep_a_quiet_socket_and_a_silent_one_is_dropped_by_the_read_timeout(daphne, make_user):
    server = await start_server(daphne)
    user = await db(make_user)("quiet")
    pinging = AxisorClient(server.ws, jwt_for(user), heartbeat_interval=0.1, read_timeout=0.5)
    silent = AxisorClient(server.ws, jwt_for(user), heartbeat_interval=None, read_timeout=0.5, initial_delay=0.05)
    pongs, pinging_statuses, silent_statuses = Recorder(), Recorder(), Recorder()
    pinging.on_message(lambda m: pongs(m) if m["type"] == "pong" else None)
    pinging.on_connection_status(pinging_statuses)
    silent.on_connection_status(silent_statuses)
    async with pinging, silent:
        dropped = [await silent_statuses.get() for _ in range(4)]
        assert dropped == ["connected", "disconnected", "reconnecting", "connected"]
        assert dropped[1].reason == "read timeout: nothing received for 0.5 s"
        await pongs.take(15)  # 1.5 s of pongs, three read timeouts' worth
        assert [str(s) for s in pinging_statuses.items] == ["connected"]


async def test_a_fresh_token_is_sent_before_the_old_one_expires(daphne, make_user):
    server = await start_server(daphne)
    user = await db(make_user)("refresher")
    expires = int(time.time()) + 4  # the server warns a quarter of the lifetime (1 s) before
    tokens = iter([jwt_for(user, exp=expires)])
    asked = Recorder()

    def token() -> str:
        asked(time.time())
        return next(tokens, None) or jwt_for(user)

    client = AxisorClient(server.ws, token)
    statuses = Recorder()
    client.on_connection_status(statuses)
    async with client:
        assert await statuses.get() == "connected"
        session = client.session_id
        await asyncio.wait_for(asked.take(2), 10)  # connect, then the auth_expiring refresh
        await wait_until(lambda: time.time() > expires + 1, what="the first token's expiry to pass")
        assert (await client.ping())["type"] == "pong"
        assert client.session_id == session and client.token_expires_at > "2000"
    assert [str(s) for s in statuses.items] == ["connected", "disconnected"]


async def test_a_refused_token_is_given_up_on(daphne, make_user):
    server = await start_server(daphne)
    statuses = Recorder()
    client = AxisorClient(server.ws, "not-a-jwt")
    client.on_connection_status(statuses)
    assert await asyncio.wait_for(client.run(), 15) == "noreconnect"
    [gave_up] = statuses.items
    assert (gave_up, gave_up.code) == ("noreconnect", 4001)

    invalidated = []

    class Provider:
        def __call__(self) -> str:
            return "still-not-a-jwt"

        def invalidate(self) -> None:
            invalidated.append(True)

    retrying = AxisorClient(server.ws, Provider(), initial_delay=0.01, max_auth_failures=3, auth="message")
    assert await asyncio.wait_for(retrying.run(), 15) == "noreconnect"
    assert len(invalidated) == 3  # asked for fresh credentials after each refusal, then gave up


async def test_retries_end_with_noreconnect_after_max_tries():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once we leave: nothing listens there
    statuses = Recorder()
    client = AxisorClient(f"ws://127.0.0.1:{port}", "token", max_tries=3, initial_delay=0.01, max_delay=0.02)
    client.on_connection_status(statuses)
    assert await asyncio.wait_for(client.run(), 10) == "noreconnect"
    assert [(str(s), s.attempt) for s in statuses.items] == [
        ("reconnecting", 1),
        ("reconnecting", 2),
        ("reconnecting", 3),
        ("noreconnect", None),
    ]
    assert statuses.items[-1].reason.startswith("gave up after 3 attempts")
