"""A daphne process is killed (SIGKILL) while both clients receive a stream of 1,000 order updates and
notifications; they reconnect to the other process and end with every event exactly once, in order:
what they got equals the user's event log (seqs 1..1000)."""

from __future__ import annotations

import asyncio

from axisor_client import AxisorClient, OrderUpdatesClient
from tests.client.support import Recorder, db, logged, notify, start_server, wait_until
from tests.conftest import jwt_for
from tests.integration.http import call
from tests.orders.factories import execute, place

ROUNDS = 200  # each: ORDER_PLACED, TRADE_UPDATE, ORDER_EXECUTED, "Order executed" notification, one more
EVENTS = ROUNDS * 5
KILL_AFTER = 300  # events received by the /ws client


def produce(user, progress: dict) -> None:
    for i in range(ROUNDS):
        order = place(user, quantity="10")
        execute(order, "fill", quantity=10, price="625.50")
        notify(user.pk, 1, tag=f"round{i}")
        progress["rounds"] = i + 1


async def test_clients_survive_a_killed_server_with_every_event_once_in_order(daphne, make_user, instruments):
    a, b = await start_server(daphne), await start_server(daphne)
    # Enterprise: the dead process's connection lease (up to 30 s) must not block the reconnect.
    user = await db(make_user)("streamer", tier="enterprise")
    status, creds = await asyncio.to_thread(call, "POST", f"{a.http}/api/auth/sessions", token=jwt_for(user))
    assert status == 201, creds
    urls = [a.ws, b.ws]  # each reconnect moves to the next URL
    fast = {"initial_delay": 0.1, "max_delay": 0.5}
    events = AxisorClient(urls, jwt_for(user), **fast)
    orders = OrderUpdatesClient(urls, (creds["session"], creds["token"]), last_seq=0, **fast)

    got_events, got_orders = Recorder(), Recorder()
    event_statuses, order_statuses, events_resumed, orders_resumed = Recorder(), Recorder(), Recorder(), Recorder()
    kill_now = asyncio.Event()

    def on_event(event: dict) -> None:
        if "seq" not in event:
            return  # the fills' position values: a conflated value stream, not part of the log
        got_events(event)
        if len(got_events.items) >= KILL_AFTER:
            kill_now.set()

    events.on_event("*", on_event)
    orders.on_all_orders(got_orders)
    events.on_connection_status(event_statuses)
    orders.on_connection_status(order_statuses)
    events.on_resumed(events_resumed)
    orders.on_resumed(orders_resumed)

    async with events, orders:
        assert await events.wait_connected(15) and await orders.wait_connected(15)
        progress = {"rounds": 0}
        producer = asyncio.ensure_future(db(produce)(user, progress))
        await asyncio.wait_for(kill_now.wait(), 60)
        rounds_at_kill = progress["rounds"]
        await asyncio.to_thread(a.stop, kill=True)
        await asyncio.wait_for(producer, 120)
        assert rounds_at_kill < ROUNDS, "the stream ended before the kill: nothing was tested"

        log = await db(logged)(user.pk)
        orders_log = [e for e in log if e["channel"] == "orders"]
        assert [e["seq"] for e in log] == list(range(1, EVENTS + 1))
        await wait_until(lambda: events.last_seq == EVENTS, 60, "the /ws client to catch up")
        await wait_until(lambda: orders.last_seq == orders_log[-1]["seq"], 60, "the orders client to catch up")

    assert got_events.items == log  # every event once, in order, as logged
    assert got_orders.items == [{**e["data"], "seq": e["seq"]} for e in orders_log]
    assert len(got_orders.items) == ROUNDS * 3
    for statuses in (event_statuses, order_statuses):
        seen = [str(s) for s in statuses.items]
        assert seen[:3] == ["connected", "disconnected", "reconnecting"] and "noreconnect" not in seen
        connected = [s for s in statuses.items if s == "connected"]
        assert connected[0].url.startswith(a.ws) and connected[-1].url.startswith(b.ws)
    # Both resumed on the other process from the last seq they had (the /ws client asks only when
    # the server is ahead of it, which it all but always is here).
    assert len(events_resumed.items) <= 1 and all(m["since"] > 0 for m in events_resumed.items)
    assert [m["since"] > 0 for m in orders_resumed.items] == [False, True]  # the first: since=0
