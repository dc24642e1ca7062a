"""The channel layer's (un)subscriptions: what a connect storm asks for while one is under way goes
to Redis in one command, with the result of applying the requests in the order they were made."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis

from core import redis_clients
from core.internals import ResilientPubSubChannelLayer
from tests.hardening.conftest import PrivateRedis


@pytest.fixture
def server(settings, monkeypatch):
    """A Redis of the test's own: its command counts are this layer's alone."""
    private = PrivateRedis()
    private.start()
    try:
        settings.CHANNEL_LAYER_HOSTS = [private.url]
        monkeypatch.setattr(redis_clients, "_layer_clients", {})  # built anew for this server
        yield private
    finally:
        private.kill()


@pytest.fixture
async def layer(server):
    made = ResilientPubSubChannelLayer(prefix=f"t{uuid.uuid4().hex[:8]}")
    yield made
    await made.flush()


def calls(server: PrivateRedis, command: str) -> int:
    stats = redis.Redis.from_url(server.url).info("commandstats")
    return stats.get(f"cmdstat_{command}", {}).get("calls", 0)


def subscribers(server: PrivateRedis, layer, groups: list[str]) -> dict[str, int]:
    names = [layer._get_layer()._get_group_channel_name(g) for g in groups]
    counts = dict(redis.Redis.from_url(server.url, decode_responses=True).pubsub_numsub(*names))
    return {g: counts[n] for g, n in zip(groups, names, strict=True)}


async def test_a_storm_of_group_adds_costs_a_few_subscribes_and_every_group_is_heard(server, layer):
    channel = await layer.new_channel()
    before = calls(server, "subscribe")
    groups = [f"user.{n}" for n in range(500)]
    await asyncio.gather(*(layer.group_add(g, channel) for g in groups))
    sent = calls(server, "subscribe") - before
    assert 1 <= sent <= 3, sent  # channels-redis alone: 500, one per group
    assert set(subscribers(server, layer, groups).values()) == {1}
    await layer.group_send("user.499", {"type": "event.message", "text": "heard"})
    assert (await asyncio.wait_for(layer.receive(channel), 5))["text"] == "heard"
    await asyncio.gather(*(layer.group_discard(g, channel) for g in groups))
    assert set(subscribers(server, layer, groups).values()) == {0}


async def test_requests_made_together_end_as_applied_in_order(server, layer):
    """Subscribe, unsubscribe, subscribe again, all while a change is under way: subscribed.
    Subscribe then unsubscribe: not."""
    await layer.new_channel()
    shard = layer._get_layer()._shards[0]
    name = layer._get_layer()._get_group_channel_name
    a, b, c = name("market.A"), name("market.B"), name("market.C")
    await shard.subscribe(c)
    await asyncio.gather(
        shard.subscribe(a), shard.unsubscribe(a), shard.subscribe(a),
        shard.subscribe(b), shard.unsubscribe(b),
        shard.unsubscribe(c),
    )  # fmt: skip
    assert subscribers(server, layer, ["market.A", "market.B", "market.C"]) == {
        "market.A": 1,
        "market.B": 0,
        "market.C": 0,
    }
    assert {a} <= shard._subscribed_to and not {b, c} & shard._subscribed_to


async def test_requests_waiting_when_the_layer_closes_fail_rather_than_wait_forever(server, layer):
    """The loop's end cancels the task that applies the requests, before it starts or while it
    waits for the shard (a publish holds it): nothing asked for waits forever, so a consumer's
    cleanup or a shutdown waiting on an unsubscribe ends; a fresh task serves what comes next."""
    await layer.new_channel()
    shard = layer._get_layer()._shards[0]
    await shard._lock.acquire()  # a publish under way
    early = asyncio.ensure_future(shard.subscribe("t.early"))
    await asyncio.sleep(0)  # asked for: its changer is made, not yet started
    shard._changer.cancel()
    shard._lock.release()
    with pytest.raises(redis.exceptions.ConnectionError, match="closing"):
        await asyncio.wait_for(early, 5)

    await shard._lock.acquire()
    waiting = asyncio.ensure_future(shard.subscribe("t.waiting"))
    for _ in range(3):  # asked for, and its changer waits for the lock
        await asyncio.sleep(0)
    shard._changer.cancel()
    after = asyncio.ensure_future(shard.unsubscribe("t.after"))  # after the cancel: a new changer
    shard._lock.release()
    await asyncio.wait_for(asyncio.gather(waiting, after, return_exceptions=True), 5)
    await shard.subscribe("t.later")
    assert "t.later" in shard._subscribed_to


async def test_a_requester_that_goes_away_leaves_its_change_and_the_others_answers(server, layer):
    """Each request waits on a future of its own: a socket cancelled while its subscription waits
    (a client gone mid-connect) cancels only that future. Its change is still applied in order,
    and every other request made with it is answered."""
    await layer.new_channel()
    shard = layer._get_layer()._shards[0]
    name = layer._get_layer()._get_group_channel_name
    a, b = name("user.gone"), name("user.stays")
    await shard._lock.acquire()  # a change under way: both requests wait for the next one
    gone = asyncio.ensure_future(shard.subscribe(a))
    stays = asyncio.ensure_future(shard.subscribe(b))
    for _ in range(3):
        await asyncio.sleep(0)
    gone.cancel()
    shard._lock.release()
    await asyncio.wait_for(stays, 5)
    assert gone.cancelled()
    assert {a, b} <= shard._subscribed_to
    assert subscribers(server, layer, ["user.gone", "user.stays"]) == {"user.gone": 1, "user.stays": 1}
