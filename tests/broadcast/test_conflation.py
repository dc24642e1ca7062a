"""Conflation from any thread: one conflater per process, the rate per key held across calls, a
key's values sent in order and ending on the latest, and no event loop or Redis connection made
per call."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from channels.layers import get_channel_layer

from broadcast import conflation
from broadcast.conflation import conflate, conflate_async
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
    start = loop.time()
    thread = in_thread(lambda: [conflate(items("CONF", price)) for price in range(50)])
    await asyncio.to_thread(thread.join)
    got = await prices_until(channel, 49)
    elapsed = loop.time() - start
    assert got == sorted(got) and got[-1] == 49  # in order, ending on the latest
    assert len(got) <= RATE * elapsed + 1, (got, elapsed)
    assert pool_connections() <= 2  # the caller never sends: one thread does, on the blocking clients' pool


async def test_a_slow_send_cannot_put_an_older_value_after_a_newer_one(settings, monkeypatch):
    """The send of a waiting value stalls (a slow Redis) while a newer value of its key becomes
    due: it goes out after, never before, so the socket ends on the newer one."""
    settings.AXISOR_MARKET = {**settings.AXISOR_MARKET, "UPDATES_PER_SECOND": 1000.0}
    layer = get_channel_layer()
    channel = await listen("market.SLOW")
    real, stalled, release = layer.publish_blocking, threading.Event(), threading.Event()

    def publish(sends):
        if any('"price": 1' in message["text"] for _, message in sends):
            stalled.set()
            release.wait(10)
        return real(sends)

    monkeypatch.setattr(layer, "publish_blocking", publish)
    # 0 is due, 1 waits for its slot (a millisecond): the thread's send of 1 stalls
    await asyncio.to_thread(conflate, items("SLOW", 0) + items("SLOW", 1))
    assert await asyncio.to_thread(stalled.wait, 5)
    await asyncio.sleep(0.005)  # five of its key's intervals: 2 is due when offered
    thread = in_thread(lambda: conflate(items("SLOW", 2)))  # due: a millisecond has passed
    await asyncio.to_thread(thread.join)
    release.set()
    got = await prices_until(channel, 2)
    assert got == [0, 1, 2]


async def test_the_rest_tier_holds_nothing_back(rate, monkeypatch):
    """gunicorn's processes serve no socket: a value held there for its slot could reach the layer
    after a newer one another process sent. Every update goes out, in order."""
    monkeypatch.setattr(tier, "TIER", "wsgi")
    channel = await listen("market.REST")
    thread = in_thread(lambda: [conflate(items("REST", price)) for price in range(20)])
    await asyncio.to_thread(thread.join)
    assert await prices_until(channel, 19) == list(range(20))


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the death it causes
async def test_the_conflater_thread_comes_back_if_it_died(rate, monkeypatch):
    channel = await listen("market.DEAD")
    await asyncio.to_thread(conflate, items("DEAD", 0))
    assert await prices_until(channel, 0) == [0]
    conflater = conflation.conflater
    dead = conflater.thread

    def broken():
        raise RuntimeError("a bug in the conflater's thread")

    monkeypatch.setattr(conflater, "_take", broken)  # its next turn, after the send of 1
    await asyncio.to_thread(conflate, items("DEAD", 1))
    assert await prices_until(channel, 1) == [1]
    await asyncio.to_thread(dead.join, 5)
    assert not dead.is_alive()
    monkeypatch.undo()
    await asyncio.to_thread(conflate, items("DEAD", 2))  # a new thread sends it
    assert await prices_until(channel, 2) == [2]
    assert conflater.thread is not dead


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
