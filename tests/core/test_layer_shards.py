"""A channel layer sharded over several Redis servers (CHANNEL_LAYER_HOSTS): the blocking publisher
puts each group's messages on the server channels-redis subscribes that group on; a dead server
fails only its own groups' publishes; /readyz reports each server."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
import redis
from channels_redis.utils import _consistent_hash
from django.test import RequestFactory

from core import redis_clients
from core.health import readyz
from core.internals import ResilientPubSubChannelLayer
from tests.hardening.conftest import PrivateRedis

GROUPS = [f"user.{n}" for n in range(24)] + ["system", "admin.staff", "market.BTC_USD"]


@pytest.fixture
def shards(settings, monkeypatch):
    servers = [PrivateRedis() for _ in range(3)]
    try:
        for server in servers:
            server.start()
        settings.CHANNEL_LAYER_HOSTS = [server.url for server in servers]
        settings.REDIS_SOCKET_TIMEOUT, settings.REDIS_CONNECT_TIMEOUT = 2.0, 1.0
        monkeypatch.setattr(redis_clients, "_layer_clients", {})  # built anew for these servers
        yield servers
    finally:
        for server in servers:
            server.kill()


def test_layer_hosts_are_the_shards_with_the_same_options(shards, settings):
    hosts = redis_clients.layer_hosts()
    assert [h["address"] for h in hosts] == settings.CHANNEL_LAYER_HOSTS
    options = [{k: v for k, v in h.items() if k not in ("address", "retry")} for h in hosts]
    assert options[0]["socket_timeout"] == 2.0 and all(o == options[0] for o in options)


@pytest.mark.django_db(transaction=True)
async def test_blocking_publishes_reach_each_groups_shard_and_a_dead_shard_fails_only_its_groups(shards):
    # Names this alike can hash unevenly (CRC32's low bits): a prefix under which all three hold some
    prefix = next(
        p
        for p in (f"t{uuid.uuid4().hex[:8]}" for _ in range(100))
        if len({_consistent_hash(f"{p}__group__{g}", 3) for g in GROUPS}) == 3
    )
    layer = ResilientPubSubChannelLayer(prefix=prefix)
    channel = await layer.new_channel()
    for group in GROUPS:
        await layer.group_add(group, channel)
    loop_layer = layer._get_layer()
    shard_of = {g: loop_layer._shards.index(loop_layer._get_shard(f"{prefix}__group__{g}")) for g in GROUPS}
    assert len(set(shard_of.values())) == 3  # the groups spread over all three, as the hash says

    def held(server: PrivateRedis) -> set[str]:
        with redis.Redis(port=server.port, decode_responses=True) as r:
            return {name.removeprefix(f"{prefix}__group__") for name in r.pubsub_channels(f"{prefix}__group__*")}

    for i, server in enumerate(shards):  # subscribed where channels-redis's hash puts them
        assert held(server) == {g for g in GROUPS if shard_of[g] == i}

    sends = [(g, {"type": "t.m", "group": g}) for g in GROUPS]
    assert await asyncio.to_thread(layer.publish_blocking, sends) == {}
    got = {(await asyncio.wait_for(layer.receive(channel), 5))["group"] for _ in GROUPS}
    assert got == set(GROUPS)  # each on the server its subscribers listen on

    shards[1].kill()
    failed = await asyncio.to_thread(layer.publish_blocking, sends)
    assert {GROUPS[i] for i in failed} == {g for g in GROUPS if shard_of[g] == 1}
    assert all(isinstance(e, redis.ConnectionError) for e in failed.values())
    alive = {g for g in GROUPS if shard_of[g] != 1}
    got = set()
    while got != alive:
        message = await asyncio.wait_for(layer.receive(channel), 5)
        got.add(message.get("group"))  # (and maybe the layer's own notices)
    answer = await readyz(RequestFactory().get("/readyz"))
    body = json.loads(answer.content)
    assert answer.status_code == 200 and body["status"] == "degraded", body
    assert body["checks"]["channelLayer.1"].startswith("error")
    assert [body["checks"][k] for k in ("database", "redis", "channelLayer.0", "channelLayer.2")] == ["ok"] * 4
    await layer.flush()


@pytest.mark.django_db(transaction=True)
async def test_a_silent_link_is_noticed_its_groups_told_and_it_is_resubscribed_when_it_answers(settings):
    """A partition (no FIN, no RST): the reader pings the quiet link, counts it lost after
    REDIS_SOCKET_TIMEOUT, refuses new subscriptions there, names its groups in ``layer.lost``
    after the grace, and once the link answers again re-subscribes them and says
    ``layer.reconnected`` when Redis has taken the subscriptions, not when they were written."""
    from core.internals import LOST, RECONNECTED
    from tests.hardening.conftest import TcpProxy

    server = PrivateRedis()
    server.start()
    proxy = TcpProxy(server.port)
    try:
        settings.CHANNEL_LAYER_HOSTS = [f"redis://127.0.0.1:{proxy.port}/0"]
        settings.REDIS_SOCKET_TIMEOUT, settings.REDIS_CONNECT_TIMEOUT = 1.0, 1.0
        settings.CHANNEL_LAYER_GRACE_SECONDS = 1.0
        prefix = f"t{uuid.uuid4().hex[:8]}"
        layer = ResilientPubSubChannelLayer(prefix=prefix)
        channel = await layer.new_channel()
        await layer.group_add("user.7", channel)
        await layer.group_add("market.BTC_USD", channel)

        proxy.blackhole()
        cut = asyncio.get_running_loop().time()
        lost = await asyncio.wait_for(layer.receive(channel), 15)
        assert lost == {"type": LOST, "groups": ["market.BTC_USD", "user.7"]}
        # 1 s quiet + 1 s unanswered PING + 1 s grace (and the proxy's retries): noticed, not hung
        assert asyncio.get_running_loop().time() - cut < 6
        with pytest.raises(redis.ConnectionError):
            await layer.group_add("user.8", channel)  # a socket joining now would be deaf: refused

        # The link answers again, slowly: a SUBSCRIBE takes effect 0.2 s after it is written.
        # ``reconnected`` comes once Redis has taken the re-subscription, so what is published
        # then (straight to Redis, past the proxy) reaches the layer. (A slow reply is not a lost
        # link: 3 s for each from here.)
        settings.REDIS_SOCKET_TIMEOUT = 3.0
        proxy.slow(0.2)
        proxy.restore()
        assert (await asyncio.wait_for(layer.receive(channel), 15)) == {"type": RECONNECTED}
        with redis.Redis(port=server.port) as r:
            assert r.publish(f"{prefix}__group__market.BTC_USD", layer.serialize({"type": "t.m"})) == 1
        assert (await asyncio.wait_for(layer.receive(channel), 5)) == {"type": "t.m"}
        await layer.flush()
    finally:
        proxy.close()
        server.kill()


@pytest.mark.django_db(transaction=True)
async def test_a_hung_shard_costs_one_timeout_then_is_skipped_until_it_answers(settings, monkeypatch):
    """A shard that stops answering (no FIN, no RST) must not hold up every publisher: the
    publish in flight waits one socket timeout (no retries of a timeout), the shard is tripped,
    later publishes fail its rooms at once (left for the relay) while the other shard's rooms
    still get theirs, and once it answers a PING again it is sent to as before."""
    from core import internals
    from tests.hardening.conftest import TcpProxy

    monkeypatch.setattr(redis_clients, "WATCH_SECONDS", 0.2)
    servers = [PrivateRedis(), PrivateRedis()]
    for server in servers:
        server.start()
    proxy = TcpProxy(servers[1].port)
    try:
        settings.CHANNEL_LAYER_HOSTS = [servers[0].url, f"redis://127.0.0.1:{proxy.port}/0"]
        settings.REDIS_SOCKET_TIMEOUT, settings.REDIS_CONNECT_TIMEOUT = 1.0, 1.0
        prefix = next(
            p
            for p in (f"t{uuid.uuid4().hex[:8]}" for _ in range(100))
            if len({_consistent_hash(f"{p}__group__{g}", 2) for g in GROUPS}) == 2
        )
        layer = ResilientPubSubChannelLayer(prefix=prefix)
        shard_of = {g: _consistent_hash(f"{prefix}__group__{g}", 2) for g in GROUPS}
        hung = {i for i, g in enumerate(GROUPS) if shard_of[g] == 1}
        sends = [(g, {"type": "t.m", "group": g}) for g in GROUPS]

        def heard(server_port: int) -> redis.client.PubSub:
            pubsub = redis.Redis(port=server_port).pubsub()
            pubsub.psubscribe(f"{prefix}__group__*")
            assert pubsub.get_message(timeout=5)["type"] == "psubscribe"
            return pubsub

        def groups_heard(pubsub, count: int) -> list[str]:
            got = []
            while len(got) < count:
                message = pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
                assert message is not None, got
                got.append(layer.deserialize(message["data"])["group"])
            return got

        near, far = heard(servers[0].port), heard(servers[1].port)
        assert await asyncio.to_thread(layer.publish_blocking, sends) == {}
        assert sorted(groups_heard(far, len(hung))) == sorted(GROUPS[i] for i in hung)
        assert layer.shard_answering(1).is_set()

        proxy.blackhole()
        calls: list[int] = []
        real_execute = redis.client.Pipeline.execute

        def counted(pipe, *args, **kwargs):
            calls.append(1)
            return real_execute(pipe, *args, **kwargs)

        monkeypatch.setattr(redis.client.Pipeline, "execute", counted)
        started = time.monotonic()
        failed = await asyncio.to_thread(layer.publish_blocking, sends)
        # one socket timeout (1 s), not three: a timeout is not retried (a bound, not a speed)
        assert time.monotonic() - started < 1.8
        assert set(failed) == hung and all(isinstance(e, redis.TimeoutError) for e in failed.values())
        assert not layer.shard_answering(1).is_set()  # tripped

        calls.clear()
        failed = await asyncio.to_thread(layer.publish_blocking, sends)
        assert set(failed) == hung  # its rooms fail at once: not tried, no round trip
        assert all(isinstance(e, internals.ShardTripped) for e in failed.values())
        assert all(isinstance(e, redis.ConnectionError) for e in failed.values())  # what callers catch
        assert len(calls) == 1  # the answering shard's pipeline only
        # the other shard's rooms got theirs both times
        assert sorted(groups_heard(near, 2 * (len(GROUPS) - len(hung)))) == sorted(
            2 * [g for i, g in enumerate(GROUPS) if i not in hung]
        )

        proxy.restore()  # (the publish held in the black hole lands now, late: a duplicate)
        assert await asyncio.to_thread(layer.shard_answering(1).wait, 10)
        assert await asyncio.to_thread(layer.publish_blocking, sends) == {}
        assert groups_heard(far, 2 * len(hung))[-len(hung) :] == [GROUPS[i] for i in sorted(hung)]
        near.close()
        far.close()
    finally:
        proxy.close()
        for server in servers:
            server.kill()
