"""One Redis configuration for every Redis user: with REDIS_SENTINELS the factory's clients (async,
blocking, the cache, the channel layer, the readiness probe) all reach the master Sentinel names,
and all follow it to the new master after a failover, without being rebuilt."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import uuid

import pytest
import redis
from channels_redis.utils import create_pool
from django.test import RequestFactory
from redis import asyncio as aioredis

from core import redis_clients
from core.cache import RedisCache
from core.health import readyz
from core.internals import ResilientPubSubChannelLayer
from tests.hardening.sentinel import MASTER_NAME, sentinel_deployment
from tests.integration.conftest import ROOT
from tests.polling import until


@pytest.fixture
def sentinel_settings(settings, monkeypatch):
    """Sentinel with passwords on both the servers and the sentinels, and the settings naming it."""
    with sentinel_deployment(password="server-secret-1", sentinel_password="sentinel-secret-1") as deployment:
        settings.REDIS_URL = None
        settings.REDIS_SENTINELS = [("127.0.0.1", port) for port in deployment.sentinels]
        settings.REDIS_SENTINEL_MASTER = MASTER_NAME
        settings.REDIS_PASSWORD, settings.REDIS_SENTINEL_PASSWORD = deployment.password, deployment.sentinel_password
        settings.REDIS_ENABLED = True
        settings.REDIS_SOCKET_TIMEOUT, settings.REDIS_CONNECT_TIMEOUT = 2.0, 1.0
        monkeypatch.setattr(redis_clients, "_clients", {})  # the clients the factory caches: built anew
        monkeypatch.setattr(redis_clients, "_guarded_client", None)
        yield deployment


@pytest.mark.django_db(transaction=True)
async def test_every_redis_user_follows_a_sentinel_failover(sentinel_settings):
    deployment = sentinel_settings
    key = f"t:{uuid.uuid4().hex}"
    cache = RedisCache("", {"KEY_PREFIX": key})
    layer = ResilientPubSubChannelLayer(prefix=f"t{uuid.uuid4().hex[:8]}")
    channel = await layer.new_channel()
    await layer.group_add("room", channel)

    async def every_user_works(tag: str) -> str:
        await redis_clients.redis_client().set(key, tag)  # presence, tier limits (async)
        assert await asyncio.to_thread(redis_clients.guarded_sync_client().get, key) == tag.encode()  # leases
        await asyncio.to_thread(cache.set, "k", tag)  # the REST throttles
        assert await asyncio.to_thread(cache.get, "k") == tag
        await asyncio.to_thread(layer.publish_blocking, [("room", {"type": "t.m", "tag": tag})])  # the outbox
        await layer.group_send("room", {"type": "t.m", "tag": tag + "-async"})
        got = [await asyncio.wait_for(layer.receive(channel), 10) for _ in range(2)]
        assert [m["tag"] for m in got if m["type"] == "t.m"][-2:] == [tag, tag + "-async"], got
        answer = await readyz(RequestFactory().get("/readyz"))
        assert answer.status_code == 200, answer.content
        return "ok"

    first = deployment.master_port()
    assert await every_user_works("before") == "ok"
    with deployment.server(first) as old:
        assert old.get(key) == "before"  # the master the sentinels named holds it

    with deployment.sentinel() as sentinel:
        sentinel.execute_command("SENTINEL", "FAILOVER", MASTER_NAME)  # the replica becomes master
    await until(lambda: deployment.master_port() != first, timeout=30, what="the sentinels to name a new master")

    def demoted() -> bool:
        with deployment.server(first) as old:
            return old.info("replication")["role"] == "slave"

    # Until Sentinel demotes the old master both accept writes (a forced failover's split brain);
    # once it is a replica it refuses them and Sentinel has closed its clients' connections.
    await until(demoted, timeout=30, what="the old master to become a replica", in_thread=True)

    async def works_after() -> bool:
        try:
            return await every_user_works("after") == "ok"
        except (redis.RedisError, AssertionError, TimeoutError):
            return False  # the old master was just demoted; connections move over on their next call

    await until(works_after, timeout=15, what="every Redis user to reach the new master")
    with deployment.server(deployment.master_port()) as new:
        assert new.get(key) == "after"
    await layer.flush()


@pytest.mark.django_db(transaction=True)
async def test_the_blocking_publisher_follows_a_failover_away_from_a_hung_master(sentinel_settings, monkeypatch):
    """The master hangs (SIGSTOP: its connections stay open, nothing answers). The outbox's
    publisher trips it after one timeout; the sentinels fail over; the watcher, connecting anew
    each time (with Sentinel a timed-out connection stays open, and only a new one asks where
    the master is now), finds the new master, and publishes go there. Reusing the old
    connection, the layer stayed tripped for as long as the old master hung."""
    monkeypatch.setattr(redis_clients, "WATCH_SECONDS", 0.2)
    deployment = sentinel_settings
    prefix = f"t{uuid.uuid4().hex[:8]}"
    layer = ResilientPubSubChannelLayer(prefix=prefix)
    sends = [("room", {"type": "t.m"})]
    assert await asyncio.to_thread(layer.publish_blocking, sends) == {}
    first = deployment.master_port()
    hung = deployment.servers[first].pid
    os.kill(hung, signal.SIGSTOP)
    try:
        failed = await asyncio.to_thread(layer.publish_blocking, sends)
        assert list(failed) == [0] and isinstance(failed[0], redis.TimeoutError)
        assert not layer.shard_answering(0).is_set()
        await until(lambda: deployment.master_port() != first, timeout=30, what="the sentinels to fail over")
        assert await asyncio.to_thread(layer.shard_answering(0).wait, 30)
        new = redis.Redis(port=deployment.master_port(), password=deployment.password).pubsub()  # bytes: msgpack
        new.subscribe(f"{prefix}__group__room")
        assert new.get_message(timeout=5)["type"] == "subscribe"
        assert await asyncio.to_thread(layer.publish_blocking, sends) == {}
        heard = new.get_message(timeout=5)
        assert heard is not None and layer.deserialize(heard["data"]) == {"type": "t.m"}
        new.close()
    finally:
        os.kill(hung, signal.SIGCONT)


def test_one_configuration_or_the_other(tmp_path):
    """REDIS_URL and REDIS_SENTINELS together, or sentinels without a master name, refuse to start."""

    def settle(**env: str) -> subprocess.CompletedProcess:
        code = "import django, json; django.setup(); from django.conf import settings; "
        code += "print(json.dumps(settings.REDIS_SENTINELS))"
        full = {**os.environ, "DJANGO_SETTINGS_MODULE": "axisor.settings", **env}
        return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=full, capture_output=True, text=True)

    both = settle(REDIS_SENTINELS="127.0.0.1:26379")
    assert both.returncode != 0 and "not both" in both.stderr
    alone = settle(REDIS_URL="", REDIS_SENTINELS="127.0.0.1:26379")
    assert alone.returncode != 0 and "REDIS_SENTINEL_MASTER" in alone.stderr
    bad = settle(REDIS_URL="", REDIS_SENTINELS="nowhere", REDIS_SENTINEL_MASTER="m")
    assert bad.returncode != 0 and "host:port" in bad.stderr
    good = settle(REDIS_URL="", REDIS_SENTINELS="10.0.0.1:26379, [::1]:26380", REDIS_SENTINEL_MASTER="m")
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout) == [["10.0.0.1", 26379], ["::1", 26380]]


def test_the_throttles_window_counter_counts_and_expires_from_its_first_count():
    """The REST throttles' counter: add then incr in one transaction (one round trip); the window's
    expiry is set by its first count and not pushed back by later ones."""
    cache = RedisCache("", {"KEY_PREFIX": f"t:{uuid.uuid4().hex}"})
    assert [cache.count_in_window("w", 30) for _ in range(3)] == [1, 2, 3]
    name = cache.make_and_validate_key("w")
    server = redis_clients.guarded_sync_client()
    server.expire(name, 10)  # as if 20 s of the window had passed
    assert cache.count_in_window("w", 30) == 4
    assert 0 < server.ttl(name) <= 10  # still the first count's window
    assert cache.get("w") == 4  # what the cache's own reads see


@pytest.mark.parametrize("which", ["guarded", "asyncio", "layer"])
def test_a_sentinel_naming_no_master_is_asked_once_per_call_not_per_retry(which, settings, monkeypatch):
    """Our clients try a broken connection again, but not a Sentinel that names no master (a
    partition: every sentinel a connect timeout each round): the blocking one of requests, pages
    and leases, the gateway's asyncio one (presence, tier leases and limits) and the channel
    layer's. The diff review counted three rounds of master discovery before the breaker could
    trip; the asyncio clients still asked three and four times."""
    from redis.asyncio.sentinel import Sentinel as AsyncSentinel
    from redis.sentinel import Sentinel

    with socket.socket() as closed:  # a port nothing listens on: each sentinel refuses at once
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    settings.REDIS_URL = None
    settings.REDIS_SENTINELS, settings.REDIS_SENTINEL_MASTER = [("127.0.0.1", port)], "nomaster"
    settings.REDIS_ENABLED = True
    monkeypatch.setattr(redis_clients, "_guarded_client", None)
    monkeypatch.setattr(redis_clients, "_breakers", {}, raising=False)
    asked: list[str] = []
    discover, discover_async = Sentinel.discover_master, AsyncSentinel.discover_master

    def counted(self, service_name):
        asked.append(service_name)
        return discover(self, service_name)

    async def counted_async(self, service_name):
        asked.append(service_name)
        return await discover_async(self, service_name)

    monkeypatch.setattr(Sentinel, "discover_master", counted)
    monkeypatch.setattr(AsyncSentinel, "discover_master", counted_async)

    async def ask(client) -> None:
        try:
            await client.get("k")
        finally:
            await client.aclose()

    with pytest.raises(redis_clients.NO_MASTER):
        if which == "guarded":
            redis_clients.guarded_sync_client().get("k")
        elif which == "asyncio":
            asyncio.run(ask(redis_clients._client(redis_clients.configured_server(), asyncio_client=True)))
        else:  # the channel layer's own client of the host, as channels-redis builds it
            pool = create_pool(redis_clients.layer_hosts()[0])
            asyncio.run(ask(aioredis.Redis(connection_pool=pool)))
    assert asked == ["nomaster"]
