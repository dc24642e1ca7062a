"""The seed's own Python ``OrderUpdatesClient`` (seed 004, in ``seed_order_client.py``) against a
real daphne process: session credentials from the REST API, an order placed and filled over HTTP,
the updates arriving through the client's threads and handlers; then the heartbeat the client
relies on (its 30 s read timeout) and the ``PONG`` it sends."""

from __future__ import annotations

import asyncio
import itertools
import json
import queue
import threading
import time

import pytest
import websocket
import websockets
from channels.db import database_sync_to_async

from tests.conftest import jwt_for
from tests.integration import seed_order_client
from tests.integration.http import call
from tests.integration.seed_order_client import OrderUpdatesClient
from tests.orders.factories import LIMIT

QUIET = {"AXISOR_SIMULATE": ""}  # no paper venue: the test alone moves the order


def session_for(server, user) -> dict:
    status, creds = call("POST", f"{server.http}/api/auth/sessions", token=jwt_for(user))
    assert status == 201, creds
    assert creds["session"] and creds["token"] and creds["expiresAt"].endswith("Z")
    return creds


def orders_url(server, creds: dict) -> str:
    return f"{server.ws}/ws/orders?session={creds['session']}&token={creds['token']}"


def shut_down(client: OrderUpdatesClient, statuses: queue.Queue, threads_before: set[threading.Thread]) -> None:
    """Disconnect the seed client for good: no reconnect Timer, heartbeat Timers cancelled, and
    every thread it started (run_forever, Timers) finished before the test ends."""
    client.max_reconnect = 0  # its on_close calls reconnect(); make that a no-op
    client.disconnect()
    # on_close runs in the run_forever thread. websocket-client's close() from another thread
    # sometimes closes the fd under that thread's select(), which then notices only at its 10 s
    # poll timeout: hence up to ~13 s (close handshake 3 s + 10 s) before 'disconnected'.
    while (status := statuses.get(timeout=20)) != "disconnected":
        assert status == "connected", status
    deadline = time.monotonic() + 15
    while extra := [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]:
        for thread in extra:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert time.monotonic() < deadline, f"seed client threads still running: {extra}"
    assert statuses.empty(), list(statuses.queue)  # in particular no 'reconnecting'


def test_seed_python_client_gets_placement_and_fills_in_order(daphne, make_user, instruments, capsys):
    server = daphne(**QUIET)
    user = make_user("seedpy")
    staff = make_user("ops", superuser=True)
    creds = session_for(server, user)

    threads_before = set(threading.enumerate())
    statuses: queue.Queue[str] = queue.Queue()
    updates: queue.Queue[dict] = queue.Queue()
    client = OrderUpdatesClient(creds["session"], creds["token"], base_url=f"{server.ws}/ws/orders")
    client.on_all_orders(seed_order_client.handle_order)  # the seed's own usage handler
    client.on_all_orders(updates.put)
    client.on_connection_status(statuses.put)
    client.connect()
    try:
        assert statuses.get(timeout=15) == "connected"
        assert client.url == orders_url(server, creds)

        status, order = call("POST", f"{server.http}/api/orders", LIMIT, token=jwt_for(user))
        assert status == 201, order
        order_id = order["orderId"]
        staff_jwt = jwt_for(staff)
        for exec_id, qty, price in (("x-1", 4, 625.5), ("x-2", 6, 625.4)):
            report = {"orderId": order_id, "execId": exec_id, "type": "fill", "quantity": qty, "price": price}
            status, applied = call("POST", f"{server.http}/api/internal/executions", report, token=staff_jwt)
            assert status == 200 and applied["applied"] is True, applied

        got = [updates.get(timeout=10) for _ in range(5)]
        seen = [
            (u["updateType"], u["orderStatus"], u["filledQuantity"], u["pendingQuantity"], u["averagePrice"])
            for u in got
        ]
        assert seen == [
            ("ORDER_PLACED", "PENDING", 0, 10, 0),
            ("TRADE_UPDATE", "OPEN", 4, 6, 625.5),
            ("ORDER_PARTIAL", "OPEN", 4, 6, 625.5),
            ("TRADE_UPDATE", "COMPLETE", 10, 0, 625.44),
            ("ORDER_EXECUTED", "COMPLETE", 10, 0, 625.44),
        ]
        assert [u["version"] for u in got] == [1, 2, 3, 4, 5]
        seqs = [u["seq"] for u in got]
        assert all(a < b for a, b in itertools.pairwise(seqs)), seqs
        for u in got:
            assert u["orderId"] == order_id and u["quantity"] == 10 and u["price"] == 625.5
            assert (u["tradingSymbol"], u["exchange"], u["orderType"], u["transactionType"]) == (
                "SBIN-EQ",
                "NSE",
                "LIMIT",
                "BUY",
            )
            assert u["timestamp"].endswith("Z")
        legs = [(u["execId"], u["tradeQuantity"], u["tradePrice"]) for u in got if u["updateType"] == "TRADE_UPDATE"]
        assert legs == [("x-1", 4, 625.5), ("x-2", 6, 625.4)]

        # The seed's handle_order: its `orderStatus == 'COMPLETE'` branch read orderStatus and
        # averagePrice without a KeyError (it ran in the client's thread before updates.put). It
        # fires for every update of a complete order: the last TRADE_UPDATE and ORDER_EXECUTED.
        out = capsys.readouterr().out
        assert "Connected to order updates" in out
        assert out.count(f"Order {order_id} executed at 625.44\n") == 2, out

        # Exactly those five: a replayed execution sends nothing, so the next update the client
        # gets is a new order's placement.
        replay = {"orderId": order_id, "execId": "x-2", "type": "fill", "quantity": 6, "price": 625.4}
        status, applied = call("POST", f"{server.http}/api/internal/executions", replay, token=staff_jwt)
        assert status == 200 and applied["applied"] is False, applied
        status, marker = call("POST", f"{server.http}/api/orders", {**LIMIT, "quantity": 1}, token=jwt_for(user))
        assert status == 201, marker
        after = updates.get(timeout=10)
        assert (after["orderId"], after["updateType"], after["version"]) == (marker["orderId"], "ORDER_PLACED", 1)
        assert after["seq"] > seqs[-1]
        assert updates.empty()
    finally:
        shut_down(client, statuses, threads_before)
    assert not client.pinger.is_alive() and not client.read_timer.is_alive()


def test_server_heartbeats_arrive_and_pong_gets_no_answer(daphne, make_user):
    server = daphne(ORDERS_HEARTBEAT_SECONDS="0.5", **QUIET)
    creds = session_for(server, make_user("beats"))
    sock = websocket.create_connection(orders_url(server, creds), timeout=5)
    try:
        # Three beats inside 5 s each (the default interval, 10 s, would time out here).
        beats = [json.loads(sock.recv()) for _ in range(3)]
        assert all(b["type"] == "heartbeat" and b["serverTime"].endswith("Z") for b in beats), beats
        for _ in range(3):
            sock.send("PONG")  # what the seed client sends
        sock.send("hello")  # anything else gets an error: the marker that the PONGs were read
        while (msg := json.loads(sock.recv()))["type"] == "heartbeat":
            pass
        assert msg["type"] == "error" and msg["code"] == "INVALID_MESSAGE", msg
        # Nothing else came back: only heartbeats before the marker's error, and the socket is open.
        sock.send(json.dumps({"type": "ping"}))
        assert json.loads(sock.recv())["type"] == "heartbeat"
        assert sock.connected
    finally:
        sock.close()


async def test_pong_keeps_a_client_past_the_idle_timeout_a_silent_one_is_closed(daphne, make_user):
    server = await asyncio.to_thread(daphne, ORDERS_HEARTBEAT_SECONDS="0.3", ORDERS_IDLE_TIMEOUT_SECONDS="1.5", **QUIET)
    talker = await database_sync_to_async(make_user)("talker")
    silent = await database_sync_to_async(make_user)("silent")
    talker_creds = await asyncio.to_thread(session_for, server, talker)
    silent_creds = await asyncio.to_thread(session_for, server, silent)

    async with websockets.connect(orders_url(server, talker_creds)) as chatty:
        stop = asyncio.Event()

        async def answer_beats() -> int:
            answered = 0
            while not stop.is_set():
                msg = json.loads(await asyncio.wait_for(chatty.recv(), 5))
                assert msg["type"] == "heartbeat", msg
                await chatty.send("PONG")
                answered += 1
            return answered

        answering = asyncio.ensure_future(answer_beats())
        try:
            opened = time.monotonic()
            async with websockets.connect(orders_url(server, silent_creds)) as quiet:
                try:
                    while True:
                        msg = json.loads(await asyncio.wait_for(quiet.recv(), 10))
                        assert msg["type"] == "heartbeat", msg
                except TimeoutError:
                    pytest.fail("the silent socket got neither heartbeats nor its 4040 close for 10 s")
                except websockets.exceptions.ConnectionClosed as closed:
                    assert closed.rcvd is not None and closed.rcvd.code == 4040, closed
            assert time.monotonic() - opened >= 1.5
            stop.set()
            assert await asyncio.wait_for(answering, 5) >= 3
        finally:
            answering.cancel()
        # The PONG-sending client, open longer than the silent one, is still there.
        await chatty.send(json.dumps({"type": "ping"}))
        assert json.loads(await asyncio.wait_for(chatty.recv(), 5))["type"] == "heartbeat"


def test_seed_python_client_gets_order_rejected_for_insufficient_funds(daphne, make_user, instruments, capsys):
    """Seed 004's example of ORDER_REJECTED: an order the account cannot carry."""
    server = daphne(**QUIET)
    user = make_user("seedpoor", balance=0)
    creds = session_for(server, user)
    threads_before = set(threading.enumerate())
    statuses: queue.Queue[str] = queue.Queue()
    updates: queue.Queue[dict] = queue.Queue()
    client = OrderUpdatesClient(creds["session"], creds["token"], base_url=f"{server.ws}/ws/orders")
    client.on_all_orders(updates.put)
    client.on_connection_status(statuses.put)
    client.connect()
    try:
        assert statuses.get(timeout=15) == "connected"
        body = {"tradingSymbol": "SBIN-EQ", "exchange": "NSE", "orderType": "LIMIT", "transactionType": "BUY",
                "quantity": 10, "price": 625.5}  # fmt: skip
        status, order = call("POST", f"{server.http}/api/orders", body, token=jwt_for(user))
        assert status == 201 and order["orderStatus"] == "REJECTED", order
        placed, rejected = updates.get(timeout=10), updates.get(timeout=10)
        assert (placed["updateType"], placed["orderStatus"]) == ("ORDER_PLACED", "PENDING")
        assert (rejected["updateType"], rejected["orderStatus"]) == ("ORDER_REJECTED", "REJECTED")
        assert rejected["orderId"] == order["orderId"]
        assert rejected["rejectionReason"].startswith("Insufficient funds")
    finally:
        shut_down(client, statuses, threads_before)
