"""Conflation from any thread: one conflater per process, the rate per key held across calls, the
latest value always sent, and no event loop or Redis connection made per call."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from channels.layers import get_channel_layer

from broadcast.conflation import conflate, conflate_async
from broadcast.messages import layer_event
from core.redis_clients import redis_sync_client

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
    layer, got = get_channel_layer(), []
    while not got or got[-1] != last:
        got.append(json.loads((await layer.receive(channel))["text"])["price"])
    return got


def connections_received() -> int:
    return redis_sync_client().info("stats")["total_connections_received"]


@pytest.fixture
def rate(settings):
    settings.AXISOR_MARKET = {**settings.AXISOR_MARKET, "UPDATES_PER_SECOND": RATE}


async def test_a_thread_without_an_event_loop_conflates_across_calls_on_its_connections(rate):
    """A gunicorn request's on_commit: no loop to hand the events to. Each call used to build one
    (async_to_sync) with its own Redis connection, and so its own conflater: every update went out,
    2.5 ms of CPU and a TCP connect each."""
    channel = await listen("market.CONF")
    loop = asyncio.get_running_loop()
    before = await asyncio.to_thread(connections_received)
    start = loop.time()

    def burst() -> None:  # a thread of its own, as a WSGI worker's request thread
        for price in range(50):
            conflate(items("CONF", price))

    thread = threading.Thread(target=burst)
    thread.start()
    await asyncio.to_thread(thread.join)
    got = await asyncio.wait_for(prices_until(channel, 49), timeout=5)
    elapsed = loop.time() - start
    made = await asyncio.to_thread(connections_received) - before
    assert got == sorted(got) and got[-1] == 49  # in order, ending on the latest
    assert len(got) <= RATE * elapsed + 1, (got, elapsed)
    assert made <= 4, made  # the blocking clients' pool, not one per call


async def test_the_in_memory_layer_gets_the_waiting_update_on_its_loop(rate, settings):
    """The embedded default: the in-memory layer lives in its event loop, so what waits for its
    slot is handed back to the loop it came from."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    assert not hasattr(get_channel_layer(), "publish_blocking")
    channel = await listen("market.MEM")
    for price in range(20):
        await conflate_async(items("MEM", price))
    got = await asyncio.wait_for(prices_until(channel, 19), timeout=5)
    assert got == [0, 19]  # the first at once, the latest at its slot, none in between
