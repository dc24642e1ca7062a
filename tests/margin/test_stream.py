"""position_status_update reaches the holder's sockets (conflated, without seq) and obeys the
``positions`` filter; margin_guard_execution is personal (seq, logged)."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.db import database_sync_to_async

from margin.ticks import ticks_ingest
from tests.conftest import connected, jwt_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("instruments")]


async def next_of(comm, type_: str, timeout: float = 5) -> dict:
    while True:
        msg = await comm.receive_json_from(timeout=timeout)
        if msg["type"] == type_:
            return msg


def ingest(*prices) -> None:
    for price in prices:
        ticks_ingest([{"symbol": "BTC_USD", "price": str(price), "volume": "1"}])


async def test_holder_gets_conflated_position_values_and_guard_execution(make_user, trade):
    user = await database_sync_to_async(make_user)("holder")
    comm, _ = await connected(jwt_for(user))
    await database_sync_to_async(trade)(user, "BUY", "1", "100", leverage=10)
    opened = await next_of(comm, "position_status_update")  # the fill
    assert opened["channel"] == "positions" and "seq" not in opened
    assert opened["data"]["userId"] == str(user.pk) and opened["data"]["position"]["entryPrice"] == 100

    await database_sync_to_async(ingest)(*[100 + i / 10 for i in range(1, 21)])  # a burst up to 102
    seen = []
    while not seen or seen[-1]["currentPrice"] != 102:
        seen.append((await next_of(comm, "position_status_update"))["data"]["position"])
    assert len(seen) < 20  # conflated, and it ends on the latest price
    last = seen[-1]
    assert set(last) >= {
        "id", "symbol", "side", "size", "entryPrice", "currentPrice", "margin", "leverage", "pnl",
        "distanceToLiquidation", "isAtRisk", "updatedAt",
    }  # fmt: skip
    assert last["pnl"] == 2 and last["isAtRisk"] is False and last["symbol"] == "BTC_USD"

    await database_sync_to_async(ingest)(98)
    execution = await next_of(comm, "margin_guard_execution")
    assert execution["channel"] == "margin_guard" and isinstance(execution["seq"], int)
    assert execution["data"]["positions"][0]["isAtRisk"] is True
    await comm.disconnect()


async def test_unsubscribing_positions_stops_the_values_only(make_user, trade):
    user = await database_sync_to_async(make_user)("filtered")
    await database_sync_to_async(trade)(user, "BUY", "1", "100", leverage=10)
    comm, _ = await connected(jwt_for(user))
    await comm.send_json_to({"type": "unsubscribe", "channel": "positions"})
    reply = await comm.receive_json_from()
    assert reply["type"] == "room_subscription" and "positions" not in reply["subscribedRooms"]
    await database_sync_to_async(ingest)(99, 98)
    got = await next_of(comm, "margin_guard_execution")
    assert got["data"]["summary"]["positionsAtRisk"] == 1
    assert await comm.receive_nothing(timeout=1.0)
    await comm.send_json_to({"type": "subscribe", "channel": "positions"})
    await next_of(comm, "room_subscription")
    await database_sync_to_async(ingest)(98.5)
    update = await next_of(comm, "position_status_update")
    assert update["data"]["position"]["currentPrice"] == 98.5 and update["data"]["position"]["isAtRisk"] is True
    await comm.disconnect()


async def test_other_users_positions_are_not_sent(make_user, trade):
    owner = await database_sync_to_async(make_user)("owner")
    watcher = await database_sync_to_async(make_user)("watcher")
    await database_sync_to_async(trade)(owner, "BUY", "1", "100", leverage=10)
    comm, _ = await connected(jwt_for(watcher))
    await database_sync_to_async(ingest)(101)
    while not await comm.receive_nothing(timeout=1.0):
        msg = json.loads((await comm.receive_output())["text"])
        assert msg["type"] not in ("position_status_update", "margin_guard_execution"), msg
    await comm.disconnect()


async def test_values_carry_the_database_clock_as_their_version(make_user, trade):
    """Market data stamped under its state row's lock (ingests of a symbol take it in turn), and
    the row keeps the stamp; position values when their rows were read."""
    from channels.layers import get_channel_layer

    from broadcast.messages import db_clock
    from broadcast.rooms import market_room, user_room
    from margin.models import Position
    from margin.signals import positions_changed
    from market.models import MarketState

    layer = get_channel_layer()

    async def listen(group: str) -> str:
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        return channel

    user = await database_sync_to_async(make_user)("stamped")
    await database_sync_to_async(trade)(user, "BUY", "1", "100", leverage=10)
    market = await listen(market_room("BTC_USD").layer_group)
    personal = await listen(user_room(user.pk).layer_group)
    before = await database_sync_to_async(db_clock)()
    await database_sync_to_async(ticks_ingest)([{"symbol": "BTC_USD", "price": "101", "volume": "1"}])
    tick = await asyncio.wait_for(layer.receive(market), 5)
    assert tick["key"] == "md:BTC_USD" and before <= tick["version"] <= await database_sync_to_async(db_clock)()
    # the state row keeps the same version: a snapshot on subscribe compares with the live values
    stored = await database_sync_to_async(lambda: MarketState.objects.get(instrument__symbol="BTC_USD").version)()
    assert stored == tick["version"]
    changed = await database_sync_to_async(lambda: list(Position.objects.filter(user=user)))()
    before = await database_sync_to_async(db_clock)()
    await database_sync_to_async(positions_changed.send)(sender=Position, positions=changed)  # on_commit: now
    while (value := await asyncio.wait_for(layer.receive(personal), 5)).get("key") != f"pos:{changed[0].pk}":
        pass
    assert before <= value["version"] <= await database_sync_to_async(db_clock)()
