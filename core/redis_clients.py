"""Every Redis client of ours comes from here (the channel layer, presence, tier leases and limits,
job leases, the cache, probes): one place for the address, the passwords and the timeouts.

One configuration serves them all: ``REDIS_URL`` (one server), or ``REDIS_SENTINELS`` with
``REDIS_SENTINEL_MASTER`` (a master that Redis Sentinel watches and replaces). With Sentinel every
client asks the sentinels for the master's address each time it connects, so after a failover each
one reconnects to the new master on its next call, without a restart (redis-py's
``SentinelConnectionPool``).

``CHANNEL_LAYER_HOSTS`` (several Redis URLs) takes the channel layer alone off that Redis: the
layer's channels and groups are spread over those servers (channels-redis's consistent hashing),
while presence, leases, limits, the cache and the probes stay on the configured Redis."""

from __future__ import annotations

import asyncio

import redis
from django.conf import settings
from redis import asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

_clients: dict[asyncio.AbstractEventLoop, aioredis.Redis] = {}


def quick_retry(retries: int, *, asyncio_client: bool, timeouts: bool = True):
    """redis-py's retry for our clients: ``retries`` more tries, backing off 50 ms to 0.5 s. Without
    ``timeouts``, only a broken connection is tried again (a peer that did not answer in time is
    not answering, and what was sent may have landed)."""
    backoff, kind = ExponentialWithJitterBackoff(base=0.05, cap=0.5), AsyncRetry if asyncio_client else Retry
    if timeouts:  # redis-py's own list: broken connections and timeouts
        return kind(backoff, retries)
    return kind(backoff, retries, supported_errors=(redis.ConnectionError,))


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


def _client(server: dict, *, asyncio_client: bool):
    options = redis_options(asyncio_client=asyncio_client)
    if "address" in server:
        return (aioredis.Redis if asyncio_client else redis.Redis).from_url(server["address"], **options)
    # A sentinel's client: one quick retry of a broken connection, none of a timeout (redis-py's
    # default, three retries backing off up to 10 s, held a caller ~20 s per silent sentinel).
    sentinel_retry = quick_retry(1, asyncio_client=asyncio_client, timeouts=False)
    sentinel = (AsyncSentinel if asyncio_client else Sentinel)(
        server["sentinels"], sentinel_kwargs={**server["sentinel_kwargs"], "retry": sentinel_retry}
    )
    if server.get("password"):
        options["password"] = server["password"]
    return sentinel.master_for(server["master_name"], **options)


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
    landed (``ResilientPubSubChannelLayer.publish_blocking`` trips that server instead)."""
    client = _client(host, asyncio_client=False)
    client.set_retry(quick_retry(2, asyncio_client=False, timeouts=False))
    return client


_sync_layer_clients: dict[tuple[str, ...], list[redis.Redis]] = {}


def sync_layer_clients() -> list[redis.Redis]:
    """The process's blocking client for each channel-layer server, in ``layer_hosts()`` order (the
    staff panel's readiness, from sync code)."""
    key = tuple(settings.CHANNEL_LAYER_HOSTS)
    clients = _sync_layer_clients.get(key)
    if clients is None:
        clients = _sync_layer_clients[key] = [_client(host, asyncio_client=False) for host in layer_hosts()]
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


_sync_client: redis.Redis | None = None


def redis_sync_client() -> redis.Redis:
    """The process's blocking client for the configured Redis (thread-safe: a connection pool), for
    code on worker threads: presence reads, the worker's leases, the cache."""
    global _sync_client
    if _sync_client is None:
        assert settings.REDIS_ENABLED, "no Redis configured: callers check settings.REDIS_ENABLED first"
        _sync_client = _client(configured_server(), asyncio_client=False)
    return _sync_client
