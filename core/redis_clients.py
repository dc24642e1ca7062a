"""Every Redis client of ours comes from here (the channel layer, presence, tier leases and limits,
job leases, the cache, probes): one place for the address, the passwords and the timeouts.

One configuration serves them all: ``REDIS_URL`` (one server), or ``REDIS_SENTINELS`` with
``REDIS_SENTINEL_MASTER`` (a master that Redis Sentinel watches and replaces). With Sentinel every
client asks the sentinels for the master's address each time it connects, so after a failover each
one reconnects to the new master on its next call, without a restart (redis-py's
``SentinelConnectionPool``).

``CHANNEL_LAYER_HOSTS`` (several Redis URLs) takes the channel layer alone off that Redis: the
layer's channels and groups are spread over those servers (channels-redis's consistent hashing),
while presence, leases, limits, the cache and the probes stay on the configured Redis.

The callers on a request's path (the cache's throttle counters, the channel layer's blocking
publishes) go through a ``Breaker``: one per server per process, so a Redis that hangs costs the
process one timeout, not one or three per request."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.client
from django.conf import settings
from redis import asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import MasterNotFoundError as AsyncMasterNotFoundError
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel

logger = logging.getLogger(__name__)

_clients: dict[asyncio.AbstractEventLoop, aioredis.Redis] = {}


class _GiveUp(Exception):
    def __init__(self, error: Exception) -> None:
        self.error = error


# A Sentinel that names no master: redis-py's sync and asyncio clients each raise their own class.
NO_MASTER = (MasterNotFoundError, AsyncMasterNotFoundError)


class ConnectionRetry(Retry):
    """Tries a broken connection again, never a Sentinel that names no master: ``MasterNotFoundError``
    is a ``ConnectionError``, and each try asked every sentinel again, a connect timeout each, before
    the breaker could trip (the diff review: three rounds of discovery for one hung request)."""

    def call_with_retry(self, do, fail, *args, **kwargs):
        def once():
            try:
                return do()
            except NO_MASTER as exc:
                raise _GiveUp(exc) from exc

        try:
            return super().call_with_retry(once, fail, *args, **kwargs)
        except _GiveUp as given_up:
            raise given_up.error from None


class AsyncConnectionRetry(AsyncRetry):
    """``ConnectionRetry`` for redis.asyncio clients (the gateway's presence and leases, the channel
    layer): a Sentinel that names no master is asked once per call, not once per retry."""

    async def call_with_retry(self, do, fail):
        async def once():
            try:
                return await do()
            except NO_MASTER as exc:
                raise _GiveUp(exc) from exc

        try:
            return await super().call_with_retry(once, fail)
        except _GiveUp as given_up:
            raise given_up.error from None


def quick_retry(retries: int, *, asyncio_client: bool, timeouts: bool = True):
    """redis-py's retry for our clients: ``retries`` more tries, backing off 50 ms to 0.5 s, never
    of a Sentinel that names no master (``ConnectionRetry``). Without ``timeouts``, only a broken
    connection is tried again (a peer that did not answer in time is not answering, and what was
    sent may have landed)."""
    backoff = ExponentialWithJitterBackoff(base=0.05, cap=0.5)
    retry = AsyncConnectionRetry if asyncio_client else ConnectionRetry
    if timeouts:  # redis-py's own list: broken connections and timeouts
        return retry(backoff, retries)
    return retry(backoff, retries, supported_errors=(redis.ConnectionError,))


def redis_options(*, asyncio_client: bool) -> dict:
    """Connection options for our own Redis clients (leases, presence). Timeouts are explicit and
    retries quick: redis-py 6 retries a failed call three times backing off up to 10 s, which held a
    caller (and, from sync code, the one thread all ORM work shares) for many seconds when Redis
    restarted or went away. A call now fails within about the timeouts, and callers degrade."""
    return {
        "socket_timeout": settings.REDIS_SOCKET_TIMEOUT,
        "socket_connect_timeout": settings.REDIS_CONNECT_TIMEOUT,
        "retry": quick_retry(2, asyncio_client=asyncio_client),
    }


def configured_server() -> dict:
    """Where the configured Redis is, as channels-redis spells a host: ``{"address": REDIS_URL}``,
    or ``{"sentinels": [(host, port), ...], "master_name": ..., "sentinel_kwargs": ...}`` (plus the
    master's ``password``) with Sentinel."""
    if not settings.REDIS_SENTINELS:
        return {"address": settings.REDIS_URL}
    sentinel_kwargs: dict[str, float | str] = {
        # the same quick timeouts: a sentinel that is down costs a connect timeout, then the next is asked
        "socket_timeout": settings.REDIS_SOCKET_TIMEOUT,
        "socket_connect_timeout": settings.REDIS_CONNECT_TIMEOUT,
    }
    if settings.REDIS_SENTINEL_PASSWORD:
        sentinel_kwargs["password"] = settings.REDIS_SENTINEL_PASSWORD
    server: dict[str, object] = {
        "sentinels": settings.REDIS_SENTINELS,
        "master_name": settings.REDIS_SENTINEL_MASTER,
        "sentinel_kwargs": sentinel_kwargs,
    }
    if settings.REDIS_PASSWORD:
        server["password"] = settings.REDIS_PASSWORD
    return server


def _client(server: dict, *, asyncio_client: bool, redis_class: type[redis.Redis] = redis.Redis):
    options = redis_options(asyncio_client=asyncio_client)
    if "address" in server:
        return (aioredis.Redis if asyncio_client else redis_class).from_url(server["address"], **options)
    # A sentinel's client: one quick retry of a broken connection, none of a timeout (redis-py's
    # default, three retries backing off up to 10 s, held a caller ~20 s per silent sentinel).
    sentinel_retry = quick_retry(1, asyncio_client=asyncio_client, timeouts=False)
    sentinel_kwargs = {**server["sentinel_kwargs"], "retry": sentinel_retry}
    if server.get("password"):
        options["password"] = server["password"]
    if asyncio_client:
        return AsyncSentinel(server["sentinels"], sentinel_kwargs=sentinel_kwargs).master_for(
            server["master_name"], **options
        )
    return Sentinel(server["sentinels"], sentinel_kwargs=sentinel_kwargs).master_for(
        server["master_name"], redis_class=redis_class, **options
    )


# ---- the breaker ---------------------------------------------------------------------------------

WATCH_SECONDS = 1.0  # a tripped server is pinged this often


class ServerTripped(redis.ConnectionError):
    """A call not made: its Redis server did not answer an earlier one in time and has not
    answered a PING since (``Breaker``). A ``ConnectionError``, which every caller already handles."""


def _set_event() -> threading.Event:
    event = threading.Event()
    event.set()
    return event


class Breaker:
    """One Redis server as this process sees it: answering, or *tripped*.

    A call that times out (a hung or partitioned Redis: the connection stays open and nothing comes
    back; with Sentinel, no sentinel naming a master) trips it. Until the server answers again,
    every call through ``guard`` fails at once with ``ServerTripped``, without a round trip, and
    its callers do what they do when Redis is down (the throttles let the request through, the
    outbox leaves the event to the relay). A watcher thread pings the server every
    ``WATCH_SECONDS`` on a new connection (with Sentinel, to the master the sentinels name now);
    the first answer closes the breaker. So a hung Redis costs a process one socket timeout per
    trip, not one (or redis-py's three) per request.

    One per server per process (``breaker_for``): the cache and the channel layer's blocking
    publisher on the same Redis trip together, and the request that found it hung is the only
    one that waits."""

    def __init__(self, name: str) -> None:
        self.name = name  # host and port, or the Sentinel master's name: never a password
        self.answering = _set_event()  # set while calls go to the server; cleared while tripped
        self._pools: list[Any] = []
        self._tripped_in: int | None = None
        self._lock = threading.Lock()

    def attach(self, client: redis.Redis) -> None:
        """Count ``client``'s connections as this server's: a trip closes its idle ones."""
        with self._lock:
            self._pools.append(client.connection_pool)

    @property
    def tripped(self) -> bool:
        # A forked child inherits the state but not the watcher thread: only this process's trips count.
        return self._tripped_in == os.getpid()

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Around one call (a command or a pipeline's round trip) to the server: refused at once
        while tripped; a timeout trips it (and is raised, not retried: a write that timed out may
        have landed)."""
        if self.tripped:
            raise ServerTripped(f"Redis {self.name} is not answering")
        try:
            yield
        except (redis.TimeoutError, *NO_MASTER) as exc:
            self.trip(exc)
            raise

    def trip(self, exc: Exception) -> None:
        with self._lock:
            if self.tripped:
                return  # another caller's timeout tripped it first
            self._tripped_in = os.getpid()
            self.answering.clear()
        self._forget_connections()
        logger.warning(
            "Redis %s did not answer in time (%s): calls to it fail at once (the cache lets requests through, "
            "events are left to the relay) until it answers a PING",
            self.name,
            exc,
        )
        threading.Thread(target=self._watch, name=f"redis-watch-{self.name}", daemon=True).start()

    def _watch(self) -> None:
        # a plain client on an attached pool: its PING is not refused by the breaker it probes
        probe = redis.Redis(connection_pool=self._pools[0])
        while True:
            time.sleep(WATCH_SECONDS)
            try:
                probe.ping()  # a PING that times out costs this thread, nobody else
            except Exception:  # noqa: BLE001 - still away: try again
                self._forget_connections()
                continue
            with self._lock:
                self._tripped_in = None
                self.answering.set()
            logger.warning("Redis %s answers again: calling it", self.name)
            return

    def _forget_connections(self) -> None:
        """Close the server's idle pooled connections: the next call connects anew. A socket that
        timed out may still be open (redis-py's Sentinel connections stay open after a read
        error), and with Sentinel only a new connection asks where the master is now: reusing the
        old one, a hung master replaced by a failover would keep the breaker tripped."""
        for pool in list(self._pools):
            with contextlib.suppress(Exception):
                pool.disconnect(inuse_connections=False)


_breakers: dict[tuple, Breaker] = {}
_breakers_lock = threading.Lock()


def breaker_for(server: dict) -> Breaker:
    """The process's breaker for a server as ``configured_server()`` or a channel-layer host spells
    it (``{"address": url}``, or ``sentinels`` and ``master_name``)."""
    if "address" in server:
        url = urlsplit(server["address"])
        key: tuple = ("address", server["address"])
        name = f"{url.hostname}:{url.port or 6379}"
    elif "sentinels" in server:
        key = ("sentinel", server.get("master_name"), tuple(tuple(s) for s in server["sentinels"]))
        name = f"Sentinel master {server.get('master_name')}"
    else:  # channels-redis's (host, port) spelling
        key = ("host", server.get("host"), server.get("port"))
        name = f"{server.get('host')}:{server.get('port')}"
    with _breakers_lock:
        breaker = _breakers.get(key)
        if breaker is None:
            breaker = _breakers[key] = Breaker(name)
    return breaker


class _GuardedPipeline(redis.client.Pipeline):
    breaker: Breaker

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        with self.breaker.guard():
            return super().execute(raise_on_error)


class GuardedRedis(redis.Redis):
    """A blocking client whose every round trip, a pipeline's included, goes through its server's
    ``Breaker`` (``breaker``, set by the factory)."""

    breaker: Breaker

    def execute_command(self, *args, **options):
        with self.breaker.guard():
            return super().execute_command(*args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> _GuardedPipeline:
        pipe = _GuardedPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)
        pipe.breaker = self.breaker
        return pipe


# ---- the channel layer ---------------------------------------------------------------------------


def layer_hosts() -> list[dict]:
    """channels-redis's ``hosts``: one per ``CHANNEL_LAYER_HOSTS`` server when the layer is sharded,
    else the configured Redis (with Sentinel, channels-redis builds a ``SentinelConnectionPool``
    from it). Every shard gets the same timeouts and retries."""
    options = {
        # redis-py's timeouts are set explicitly (django/channels_redis#422): the pub/sub reader
        # polls with its own 0.1 s timeout, so a socket timeout only bounds a Redis that stopped
        # answering instead of hanging a publisher forever.
        "socket_timeout": settings.REDIS_SOCKET_TIMEOUT,
        "socket_connect_timeout": settings.REDIS_CONNECT_TIMEOUT,
        "socket_keepalive": True,
        "health_check_interval": 15,
        "retry_on_timeout": True,
        # redis-py 6's default retry backs off up to 10 s between reconnects: after a Redis restart
        # the pub/sub reader stayed deaf for 8-12 s. Retry quickly instead; a Redis that stays away
        # still fails a call within about a second plus the timeouts (the event stays in the log).
        "retry": quick_retry(3, asyncio_client=True),
    }
    servers = [{"address": url} for url in settings.CHANNEL_LAYER_HOSTS] or [configured_server()]
    return [{**server, **options} for server in servers]


def publishing_client_for(host: dict) -> redis.Redis:
    """A blocking client for one channel-layer host: the layer's publishes from threads without an
    event loop go to the server its subscribers listen on. It retries a broken connection (Redis
    restarted: the pooled socket is dead, a new one works) but not a timeout: a server that did
    not answer in REDIS_SOCKET_TIMEOUT is not answering, and a publish that timed out may have
    landed (``ResilientPubSubChannelLayer.publish_blocking`` trips that server's ``Breaker`` instead)."""
    client = _client(host, asyncio_client=False)
    client.set_retry(quick_retry(2, asyncio_client=False, timeouts=False))
    return client


_sync_layer_clients: dict[tuple[str, ...], list[GuardedRedis]] = {}


def sync_layer_clients() -> list[GuardedRedis]:
    """The process's blocking client for each channel-layer server, in ``layer_hosts()`` order (the
    readiness of the REST tier and the staff panel, from sync code), each through its server's
    ``Breaker``."""
    key = tuple(settings.CHANNEL_LAYER_HOSTS)
    clients = _sync_layer_clients.get(key)
    if clients is None:
        clients = _sync_layer_clients[key] = [guarded_client_for(host) for host in layer_hosts()]
    return clients


_layer_clients: dict[asyncio.AbstractEventLoop, list[aioredis.Redis]] = {}


def layer_clients() -> list[aioredis.Redis]:
    """This event loop's client for each channel-layer server, in ``layer_hosts()`` order (the
    readiness probe asks each one)."""
    global _layer_clients
    loop = asyncio.get_running_loop()
    clients = _layer_clients.get(loop)
    if clients is None:
        clients = [_client(host, asyncio_client=True) for host in layer_hosts()]
        _layer_clients = {lp: c for lp, c in _layer_clients.items() if not lp.is_closed()}
        _layer_clients[loop] = clients
    return clients


# ---- our own clients -----------------------------------------------------------------------------


def redis_client() -> aioredis.Redis:
    """This event loop's client for the configured Redis (redis.asyncio clients are bound to their loop)."""
    global _clients
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = _client(configured_server(), asyncio_client=True)
        _clients = {lp: c for lp, c in _clients.items() if not lp.is_closed()}
        _clients[loop] = client
    return client


_guarded_client: GuardedRedis | None = None


def guarded_sync_client() -> GuardedRedis:
    """The process's blocking client for what a request or a page asks of the configured Redis:
    Django's cache (core/cache.py: the REST throttles' counters), the sync readiness probe, the
    presence reads of the panel and the notification worker, and the worker's leases, through the
    server's ``Breaker``. A broken connection is tried again (Redis restarted: a new socket works);
    a timeout is not: a Redis that did not answer in REDIS_SOCKET_TIMEOUT is not answering, and
    redis-py's two retries held a request 15 s by default, on every request, when Redis hung (and
    a worker's lease call three timeouts, each turn of each periodic job)."""
    global _guarded_client
    if _guarded_client is None:
        assert settings.REDIS_ENABLED, "no Redis configured: callers check settings.REDIS_ENABLED first"
        _guarded_client = guarded_client_for(configured_server())
    return _guarded_client


def guarded_client_for(server: dict) -> GuardedRedis:
    """A blocking client of ``server`` through its ``Breaker``, retrying a broken connection only."""
    client = _client(server, asyncio_client=False, redis_class=GuardedRedis)
    client.set_retry(quick_retry(2, asyncio_client=False, timeouts=False))
    client.breaker = breaker_for(server)
    client.breaker.attach(client)
    return client
