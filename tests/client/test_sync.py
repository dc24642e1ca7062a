"""The synchronous wrappers: the async client on a background thread with its own loop, callbacks on
that thread, the seed's ``connect()`` / ``disconnect()``; credentials from ``Login`` (REST)."""

from __future__ import annotations

import queue
import threading

from axisor_client import Login, SyncAxisorClient, SyncOrderUpdatesClient
from tests.client.support import PASSWORD, QUIET, set_login_password
from tests.orders.factories import place


def test_sync_clients_call_back_on_their_own_thread(daphne, make_user, instruments):
    server = daphne(**QUIET)
    user = make_user("syncer")
    set_login_password(user)
    login = Login(server.http, "syncer", PASSWORD)
    updates: queue.Queue = queue.Queue()
    events: queue.Queue = queue.Queue()
    statuses: queue.Queue = queue.Queue()

    orders = SyncOrderUpdatesClient(server.http, login.order_session, baseline=login.last_seq)
    orders.on_all_orders(lambda update: updates.put((threading.current_thread(), update)))
    orders.on_connection_status(statuses.put)
    socket = SyncAxisorClient(server.http, login.jwt, auth="message")  # the first-message auth flow
    socket.on_event("order_update", lambda event: events.put((threading.current_thread(), event)))
    orders.connect()
    socket.start()
    try:
        assert orders.wait_connected(15) and socket.wait_connected(15)
        assert statuses.get(timeout=1) == "connected"
        assert socket.subscribe("market:BTC_USD")["status"] == "subscribed"
        assert "market:BTC_USD" in socket.list_rooms()

        order = place(user)
        thread, update = updates.get(timeout=10)
        assert (update["orderId"], update["updateType"], update["seq"]) == (order.order_id, "ORDER_PLACED", 1)
        assert thread is not threading.main_thread() and thread.name == "axisor-OrderUpdatesClient"
        thread, event = events.get(timeout=10)
        assert event["data"] == {k: v for k, v in update.items() if k != "seq"} and event["seq"] == 1
        assert thread.name == "axisor-AxisorClient"
    finally:
        orders.disconnect()
        socket.stop()
    assert not orders.running and not socket.running
    assert (orders.result, socket.result) == ("disconnected", "disconnected")
    assert statuses.get(timeout=1) == "disconnected"
    assert orders.last_seq == socket.last_seq == 1
