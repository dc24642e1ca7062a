"""/ws/orders through the ASGI application: auth at the handshake, flat updates with version and
seq, PONG, heartbeat, idle close, revocation."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from orders.services import order_session_create, order_session_revoke
from tests.conftest import closed_with, ws
from tests.orders.factories import execute, place

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("instruments")]


@pytest.fixture
def fast(settings):
    settings.AXISOR_ORDERS = {**settings.AXISOR_ORDERS, "HEARTBEAT_SECONDS": 0.2, "IDLE_TIMEOUT_SECONDS": 60}
    return settings


async def open_socket(user):
    session, token = await database_sync_to_async(order_session_create)(user=user)
    comm = ws(f"/ws/orders?session={session.session}&token={token}")
    ok, _ = await comm.connect()
    assert ok
    return comm, session


async def next_update(comm) -> dict:
    while True:
        msg = await comm.receive_json_from(timeout=5)
        if "updateType" in msg:
            return msg
        assert msg["type"] == "heartbeat", msg


async def test_bad_credentials_are_refused_at_handshake(make_user):
    user = await database_sync_to_async(make_user)("o1")
    session, token = await database_sync_to_async(order_session_create)(user=user)
    for query in (
        "",
        f"session={session.session}",
        f"session={session.session}&token=wrong",
        f"session=nope&token={token}",
    ):
        ok, _ = await ws(f"/ws/orders?{query}").connect()
        assert not ok, query
    await database_sync_to_async(order_session_revoke)(session=session)
    ok, _ = await ws(f"/ws/orders?session={session.session}&token={token}").connect()
    assert not ok


async def test_flat_updates_with_version_and_seq_for_own_orders_only(make_user):
    user = await database_sync_to_async(make_user)("o2", tier="premium")
    other = await database_sync_to_async(make_user)("o3")
    comm, _ = await open_socket(user)
    await database_sync_to_async(place)(other)  # not ours
    order = await database_sync_to_async(place)(user, quantity="10")
    await database_sync_to_async(execute)(order, "fill", 10, "625.5")
    got = [await next_update(comm) for _ in range(3)]
    assert [u["updateType"] for u in got] == ["ORDER_PLACED", "TRADE_UPDATE", "ORDER_EXECUTED"]
    assert [u["version"] for u in got] == [1, 2, 3]
    assert [u["seq"] for u in got] == [1, 2, 3]
    assert got[0]["orderId"] == order.order_id and got[0]["tradingSymbol"] == "SBIN-EQ" and got[0]["exchange"] == "NSE"
    assert got[-1]["orderStatus"] == "COMPLETE" and got[-1]["averagePrice"] == 625.5 and got[-1]["pendingQuantity"] == 0
    assert got[0]["timestamp"].endswith("Z")
    await comm.disconnect()


async def test_pong_is_silent_other_text_gets_error_heartbeat_arrives(make_user, fast):
    user = await database_sync_to_async(make_user)("o4")
    comm, _ = await open_socket(user)
    await comm.send_to(text_data="PONG")
    beat = await comm.receive_json_from(timeout=5)
    assert beat["type"] == "heartbeat" and beat["serverTime"].endswith("Z")
    await comm.send_to(text_data="hello")
    while (msg := await comm.receive_json_from(timeout=5))["type"] == "heartbeat":
        pass
    assert msg["type"] == "error" and msg["code"] == "INVALID_MESSAGE"
    await comm.disconnect()


async def test_silent_client_is_closed_4040(make_user, settings):
    settings.AXISOR_ORDERS = {**settings.AXISOR_ORDERS, "HEARTBEAT_SECONDS": 0.1, "IDLE_TIMEOUT_SECONDS": 0.3}
    user = await database_sync_to_async(make_user)("o5")
    comm, _ = await open_socket(user)
    while (out := await comm.receive_output(timeout=5))["type"] != "websocket.close":
        pass
    assert out["code"] == 4040


async def test_revoked_session_closes_open_socket_4003(make_user):
    user = await database_sync_to_async(make_user)("o6")
    comm, session = await open_socket(user)
    await database_sync_to_async(order_session_revoke)(session=session)
    err = await comm.receive_json_from(timeout=5)
    assert err["code"] == "ACCESS_REVOKED"
    assert await closed_with(comm) == 4003


async def test_basic_tier_second_connection_refused_4029(make_user):
    user = await database_sync_to_async(make_user)("o7", tier="basic")
    first, _ = await open_socket(user)
    second, _ = await open_socket(user)
    err = await second.receive_json_from(timeout=5)
    assert err["type"] == "error" and err["closeCode"] == 4029
    assert await closed_with(second) == 4029
    await database_sync_to_async(place)(user)
    assert (await next_update(first))["updateType"] == "ORDER_PLACED"
    await first.disconnect()
    third, _ = await open_socket(user)  # the slot was released on disconnect
    await database_sync_to_async(place)(user)
    assert (await next_update(third))["updateType"] == "ORDER_PLACED"
    await third.disconnect()


async def test_a_since_of_unicode_digits_is_an_error_message_not_a_crash(make_user):
    # Outside probe (twelfth session): "²".isdigit() is true and int("²") raises, so ?since=²
    # crashed the socket after it had taken the tier's connection slot, and the slot stayed held
    # (renewed by the process) until a restart: a basic user could not connect again.
    user = await database_sync_to_async(make_user)("o8", tier="basic")
    for since in ("%C2%B2", "1" * 19, "-1", "1e3"):
        session, token = await database_sync_to_async(order_session_create)(user=user)
        comm = ws(f"/ws/orders?session={session.session}&token={token}&since={since}")
        ok, _ = await comm.connect()
        assert ok
        msg = await comm.receive_json_from(timeout=5)
        assert msg["type"] == "error" and msg["code"] == "INVALID_MESSAGE", msg
        assert "since" in msg["message"]
        await comm.disconnect()
    again, _ = await open_socket(user)  # the basic tier's one slot is free
    await database_sync_to_async(place)(user)
    assert (await next_update(again))["updateType"] == "ORDER_PLACED"
    await again.disconnect()


async def test_a_socket_whose_handler_fails_gives_back_its_slot(make_user, monkeypatch):
    # Whatever a handler raises after the slot was taken: the server closes the socket (1011) and
    # no disconnect() runs, so the socket releases what it holds before the error goes on.
    import gateway.orders_consumer

    async def broken(user_id):
        raise RuntimeError("a bug while catching up")

    monkeypatch.setattr(gateway.orders_consumer, "_open_order_snapshots", broken)
    user = await database_sync_to_async(make_user)("o9", tier="basic")
    session, token = await database_sync_to_async(order_session_create)(user=user)
    comm = ws(f"/ws/orders?session={session.session}&token={token}&snapshot=1")
    with pytest.raises(RuntimeError, match="a bug while catching up"):
        await comm.connect()
        await comm.receive_from(timeout=5)
    monkeypatch.undo()
    again, _ = await open_socket(user)  # the basic tier's one slot is free: not refused 4029
    await database_sync_to_async(place)(user)
    assert (await next_update(again))["updateType"] == "ORDER_PLACED"
    await again.disconnect()


async def test_a_message_over_the_size_limit_is_answered_too_large_unread(make_user):
    # Outside probe (twelfth session): /ws/orders said it had /ws's limits, and parsed a 900 KiB
    # frame as JSON to answer "only PONG". It is MESSAGE_TOO_LARGE, as on /ws, and stays open.
    user = await database_sync_to_async(make_user)("o10")
    comm, _ = await open_socket(user)
    await comm.send_to(text_data='{"type":"ping","pad":"' + "x" * 70_000 + '"}')
    msg = await comm.receive_json_from(timeout=5)
    assert msg["type"] == "error" and msg["code"] == "MESSAGE_TOO_LARGE", msg
    await comm.send_to(text_data="PONG")
    await comm.send_to(text_data='{"type":"ping"}')
    assert (await comm.receive_json_from(timeout=5))["type"] == "heartbeat"
    await comm.disconnect()


async def test_a_socket_the_server_cancels_gives_back_its_slot(make_user, monkeypatch):
    # Outside probe (twelfth session): daphne cancels an application that outlives its close
    # timeout (a handler stuck, a backlog the client left behind), and CancelledError passed the
    # consumer by: no disconnect(), the tier slot renewed by the process until a restart.
    import asyncio

    import gateway.orders_consumer

    stuck = asyncio.Event()

    async def hangs(user_id):
        stuck.set()
        await asyncio.Event().wait()  # never

    monkeypatch.setattr(gateway.orders_consumer, "_open_order_snapshots", hangs)
    user = await database_sync_to_async(make_user)("o11", tier="basic")
    session, token = await database_sync_to_async(order_session_create)(user=user)
    comm = ws(f"/ws/orders?session={session.session}&token={token}&snapshot=1")
    ok, _ = await comm.connect()
    assert ok
    await asyncio.wait_for(stuck.wait(), 5)
    comm.future.cancel()  # what daphne's application_checker does
    with pytest.raises(asyncio.CancelledError):
        await comm.future
    monkeypatch.undo()
    again, _ = await open_socket(user)  # the basic tier's one slot is free: not refused 4029
    await database_sync_to_async(place)(user)
    assert (await next_update(again))["updateType"] == "ORDER_PLACED"
    await again.disconnect()


async def test_a_socket_connecting_as_the_process_stops_is_told_to_go_elsewhere(make_user, monkeypatch):
    """The second review: a /ws/orders socket already in its room but not yet accepted when the
    process began to stop was passed over (nothing can be sent before the handshake is accepted),
    then accepted, served and cut with 1006 at the end of the drain."""
    from gateway import orders_consumer
    from gateway.hub import hub

    user = await database_sync_to_async(make_user)("o-stop")
    baseline = orders_consumer.PersonalStream.baseline

    async def stopping_meanwhile(stream):
        await baseline(stream)
        hub().stopping = True  # SIGTERM arrives while the socket takes its baseline

    monkeypatch.setattr(orders_consumer.PersonalStream, "baseline", stopping_meanwhile)
    session, token = await database_sync_to_async(order_session_create)(user=user)
    comm = ws(f"/ws/orders?session={session.session}&token={token}")
    assert (await comm.connect())[0]
    told = await comm.receive_json_from(timeout=5)
    assert told["code"] == "SERVICE_UNAVAILABLE", told
    assert await closed_with(comm) == 4013
