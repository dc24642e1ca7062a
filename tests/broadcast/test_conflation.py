"""Conflation from any thread: one conflater per process, the rate per key held across calls, a
key's values sent in order and ending on the latest, and no event loop or Redis connection made
per call."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from broadcast import conflation
from broadcast.conflation import Conflater, conflate, conflate_async
from broadcast.messages import layer_event
from core import tier

RATE = 5.0


def items(symbol: str, price: int) -> list[tuple[str, str, dict]]:
    message = layer_event(channel="market_data_update", seq=None, text=json.dumps({"price": price}), key=f"md:{symbol}")
    return [(f"md:{symbol}", f"market.{symbol}", message)]


async def listen(group: str) -> str:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(group, channel)
    return channel


async def prices_until(channel: str, last: int) -> list[int]:
    """What arrives up to ``last``, then nothing more for two intervals (no older value after it)."""
    layer, got = get_channel_layer(), []
    while not got or got[-1] != last:
        got.append(json.loads((await asyncio.wait_for(layer.receive(channel), 5))["text"])["price"])
    with pytest.raises(TimeoutError):
        late = await asyncio.wait_for(layer.receive(channel), 2 / RATE)
        got.append(json.loads(late["text"])["price"])
    return got


def in_thread(fn) -> threading.Thread:
    """Run ``fn`` on a thread of its own, as a WSGI worker's request thread: no event loop."""
    thread = threading.Thread(target=fn)
    thread.start()
    return thread


def pool_connections() -> int:
    """Connections the layer's blocking clients have made."""
    return sum(client.connection_pool._created_connections for client in get_channel_layer()._blocking_clients())


@pytest.fixture
def rate(settings):
    settings.AXISOR_MARKET = {**settings.AXISOR_MARKET, "UPDATES_PER_SECOND": RATE}


async def test_a_thread_without_an_event_loop_conflates_across_calls_on_its_connections(rate):
    """A job's on_commit off the loop: each call used to build a loop (async_to_sync) with its own
    Redis connection, and so its own conflater: every update went out, 2.5 ms of CPU and a TCP
    connect each."""
    channel = await listen("market.CONF")
    loop = asyncio.get_running_loop()
    before = pool_connections()
    start = loop.time()
    thread = in_thread(lambda: [conflate(items("CONF", price)) for price in range(50)])
    await asyncio.to_thread(thread.join)
    got = await prices_until(channel, 49)
    elapsed = loop.time() - start
    assert got == sorted(got) and got[-1] == 49  # in order, ending on the latest
    assert len(got) <= RATE * elapsed + 1, (got, elapsed)
    # the caller and the conflater's thread on the blocking clients' pool: not one per call
    assert pool_connections() - before <= 2  # not one per call (nor a loop's client per call: the rate above)


async def test_a_slow_send_cannot_put_an_older_value_after_a_newer_one(settings, monkeypatch):
    """The send of a waiting value stalls (a slow Redis) while a newer value of its key becomes
    due: it goes out after, never before, so the socket ends on the newer one."""
    settings.AXISOR_MARKET = {**settings.AXISOR_MARKET, "UPDATES_PER_SECOND": 1000.0}
    layer = get_channel_layer()
    channel = await listen("market.SLOW")
    real, stalled, release = layer.publish_blocking, threading.Event(), threading.Event()

    def publish(sends):
        if any(message["text"] == json.dumps({"price": 1}) for _, message in sends):
            stalled.set()
            release.wait(10)
        return real(sends)

    monkeypatch.setattr(layer, "publish_blocking", publish)
    try:
        # 0 is due and goes out; 1 waits for its slot (a millisecond): the thread's send of it stalls
        await asyncio.to_thread(conflate, items("SLOW", 0) + items("SLOW", 1))
        assert await asyncio.to_thread(stalled.wait, 5)
        await asyncio.sleep(0.005)  # five of its key's intervals: 2 is due when offered
        thread = in_thread(lambda: conflate(items("SLOW", 2)))
        await asyncio.to_thread(thread.join)
        assert [json.loads(w.message["text"])["price"] for w in conflation.conflater.due] == [2]  # queued behind 1
    finally:
        release.set()
    assert await prices_until(channel, 2) == [0, 1, 2]


async def test_the_rest_tier_holds_nothing_back(rate, monkeypatch):
    """gunicorn's processes serve no socket: a value held there for its slot could reach the layer
    after a newer one another process sent. Every update goes out, in order."""
    monkeypatch.setattr(tier, "TIER", "wsgi")
    channel = await listen("market.REST")
    thread = in_thread(lambda: [conflate(items("REST", price)) for price in range(20)])
    await asyncio.to_thread(thread.join)
    assert await prices_until(channel, 19) == list(range(20))


async def test_a_bug_in_the_conflater_thread_does_not_stop_it(rate, monkeypatch):
    channel = await listen("market.BUG")
    conflater = Conflater()  # its thread's first turn is the broken one
    monkeypatch.setattr(conflation, "conflater", conflater)
    real, calls = conflater._take, []

    def once_broken():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug in the conflater's turn")
        return real()

    monkeypatch.setattr(conflater, "_take", once_broken)
    await asyncio.to_thread(conflate, items("BUG", 0) + items("BUG", 1))  # 0 inline, 1 for the thread
    assert await prices_until(channel, 1) == [0, 1]
    assert len(calls) >= 2 and conflater.thread is not None and conflater.thread.is_alive()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the death it causes
async def test_a_dead_conflater_thread_is_started_again(rate, monkeypatch):
    channel = await listen("market.DEAD")
    conflater = Conflater()
    monkeypatch.setattr(conflation, "conflater", conflater)

    def dies():
        raise SystemExit  # ends its thread, quietly

    monkeypatch.setattr(conflater, "_take", dies)
    await asyncio.to_thread(conflate, items("DEAD", 0) + items("DEAD", 1))  # 0 inline; 1 waits
    dead = conflater.thread
    assert dead is not None
    await asyncio.to_thread(dead.join, 5)
    assert not dead.is_alive()
    monkeypatch.setattr(conflater, "_take", Conflater._take.__get__(conflater))
    await asyncio.to_thread(conflate, items("DEAD", 2))  # replaces 1; a new thread sends it at its slot
    assert await prices_until(channel, 2) == [0, 2]
    assert conflater.thread is not dead


async def test_conflate_never_raises_into_the_committed_request(monkeypatch, caplog):
    def broken():
        raise RuntimeError("no layer today")

    monkeypatch.setattr(conflation, "get_channel_layer", broken)
    await asyncio.to_thread(conflate, items("ERR", 0))
    assert "conflation of 1 update(s) failed" in caplog.text


async def test_the_in_memory_layer_gets_the_waiting_update_on_its_loop(rate, settings):
    """The embedded default: the in-memory layer lives in its event loop, so the conflater's thread
    hands each send back to the loop the update came from."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    assert not hasattr(get_channel_layer(), "publish_blocking")
    channel = await listen("market.MEM")
    for price in range(20):
        await conflate_async(items("MEM", price))
    got = await prices_until(channel, 19)
    assert got == [0, 19]  # the first at once, the latest at its slot, none in between


@pytest.mark.django_db(transaction=True)
async def test_a_held_older_value_never_follows_a_newer_one_into_a_socket(make_user, instruments):
    """Two processes conflate a key apart: one's value held for its slot can reach the layer after
    the other's newer one. Each value carries its version (the database's clock when its state was
    read or written), and the process's hub passes on none older than one of its key it already
    did by no more than a value can be held. Older by more (a clock stepped back) it goes on; a
    version far ahead of this machine's clock goes on and holds nothing back."""
    from broadcast.rooms import market_room
    from tests.conftest import connected, jwt_for

    user = await database_sync_to_async(make_user)("versions")
    comm, _ = await connected(jwt_for(user))
    await comm.send_json_to({"type": "subscribe", "channel": "market:BTC_USD"})
    assert (await comm.receive_json_from(timeout=5))["type"] == "room_subscription"
    layer, group = get_channel_layer(), market_room("BTC_USD").layer_group

    async def send(price: int, version: float, key: str = "md:BTC_USD") -> None:
        event = {"type": "market_data_update", "channel": "market_data", "data": {"price": price}}
        message = layer_event(channel="market_data", seq=None, text=json.dumps(event), key=key, version=version)
        await layer.group_send(group, {**message, "group": group})

    async def next_price() -> int:
        while True:
            msg = await comm.receive_json_from(timeout=5)
            if msg["type"] == "market_data_update" and msg["data"]["price"] < 100:  # not the snapshot's
                return msg["data"]["price"]

    now = time.time()
    await send(1, now)
    assert await next_price() == 1
    await send(2, now - 0.2)  # read before 1, held for its slot, arriving after it
    await send(90, now, key="md:MARK")  # another key: not conflated with 2 in the socket's queue
    assert await next_price() == 90  # 2 never came
    await send(3, now - 3600)  # an hour older: no held value, a clock that stepped back
    assert await next_price() == 3
    await send(4, now + 3600)  # a clock an hour ahead: passed on, not kept
    assert await next_price() == 4
    await send(5, now + 0.1)  # not held back by the hour-ahead one
    assert await next_price() == 5
    await comm.disconnect()


def _state_at(symbol: str, price: int, version: float | None) -> None:
    """The symbol's market state as an ingest leaves it, written at ``version``."""
    from django.utils import timezone

    from market.models import Instrument, MarketState

    MarketState.objects.update_or_create(
        instrument=Instrument.objects.get(symbol=symbol),
        defaults={
            "price": price,
            "change": 0,
            "change_percent": 0,
            "volume": 0,
            "high24h": price,
            "low24h": price,
            "timestamp": timezone.now(),
            "version": version,
        },
    )


async def _subscribed(make_user, name: str):
    from tests.conftest import connected, jwt_for

    user = await database_sync_to_async(make_user)(name)
    comm, _ = await connected(jwt_for(user))
    await comm.send_json_to({"type": "subscribe", "channel": "market:BTC_USD"})
    assert (await comm.receive_json_from(timeout=5))["type"] == "room_subscription"
    return comm


async def _send_live(price: int, version: float, key: str = "md:BTC_USD") -> None:
    from broadcast.rooms import market_room

    layer, group = get_channel_layer(), market_room("BTC_USD").layer_group
    event = {"type": "market_data_update", "channel": "market_data", "data": {"price": price}}
    message = layer_event(channel="market_data", seq=None, text=json.dumps(event), key=key, version=version)
    await layer.group_send(group, {**message, "group": group})


async def _next_message(comm) -> tuple[str, object]:
    msg = await comm.receive_json_from(timeout=5)
    return msg["type"], msg.get("data", {}).get("price") if msg["type"] == "market_data_update" else None


async def _subscribed_while(make_user, name: str, monkeypatch, live: list[tuple[int, float]]):
    """Subscribe to market:BTC_USD; while the snapshot is being read, ``live`` values (price,
    version) reach the socket (and the test has seen them before the snapshot is written)."""
    from gateway import events_consumer

    real, seen = events_consumer.snapshot_text_async, asyncio.Event()

    async def read_while_live_values_arrive(symbol: str):
        snapshot = await real(symbol)
        for price, version in live:  # committed after the snapshot's read began
            await _send_live(price, version)
        await seen.wait()
        return snapshot

    monkeypatch.setattr(events_consumer, "snapshot_text_async", read_while_live_values_arrive)
    comm = await _subscribed(make_user, name)
    for price, _ in live:
        assert await _next_message(comm) == ("market_data_update", price)
    seen.set()
    return comm


async def _then_nothing_but(comm, expected: list) -> None:
    """What the socket gets next is ``expected``, then nothing before the answer to a command sent after."""
    await comm.send_json_to({"type": "list_rooms"})
    assert [await _next_message(comm) for _ in range(len(expected) + 1)] == [*expected, ("room_list", None)]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("later", [0.5, 60.0])  # a busy symbol; a quiet one (past the hub's window)
async def test_a_snapshot_older_than_a_live_value_the_socket_got_is_not_sent(
    make_user, instruments, monkeypatch, later
):
    """The socket joins the room, then the snapshot is read: a live value committed after that
    read began can reach the socket before the snapshot is written. The snapshot, older, is then
    not sent: the socket stays on the newer price (before, it ended on the snapshot's), however
    long ago the snapshot's state was written."""
    version = time.time() - later
    await database_sync_to_async(_state_at)("BTC_USD", 100, version)
    comm = await _subscribed_while(make_user, "snapshot-late", monkeypatch, [(7, version + later)])
    await _then_nothing_but(comm, [])  # no snapshot (100)
    await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_snapshot_newer_than_what_the_socket_got_is_sent(make_user, instruments, monkeypatch):
    """A live value older than the snapshot (held for its slot elsewhere) reaching the socket
    during the read does not stop the snapshot: the socket ends on the newer state. Once sent,
    the snapshot is the socket's floor for the key: an older value arriving after it (held
    elsewhere while the snapshot's own live update is still on its way) is not delivered to that
    socket, and still is to the room's others. A state written before versions were kept is sent
    as before, with no floor."""
    version = time.time()
    await database_sync_to_async(_state_at)("BTC_USD", 100, version)
    comm = await _subscribed_while(make_user, "snapshot-newer", monkeypatch, [(2, version - 0.2)])
    await _then_nothing_but(comm, [("market_data_update", 100)])
    monkeypatch.undo()

    await database_sync_to_async(_state_at)("BTC_USD", 101, None)  # written before versions were kept
    other = await _subscribed(make_user, "snapshot-unversioned")
    await _then_nothing_but(other, [("market_data_update", 101)])
    await _send_live(3, version - 0.1)  # older than the first socket's snapshot
    assert await _next_message(other) == ("market_data_update", 3)  # no floor there: the room gets it
    await _send_live(4, version + 0.1)
    assert await _next_message(comm) == ("market_data_update", 4)  # 3 never came
    assert await _next_message(other) == ("market_data_update", 4)
    await comm.disconnect()
    await other.disconnect()
