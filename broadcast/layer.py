"""The channel layer: channels-redis's pub/sub layer, with subscriptions that survive losing Redis.

channels-redis 4.3 leaves reconnecting to redis-py's PubSub, which re-subscribes only when its
reconnect succeeds inside one retry sequence. When Redis stays away longer (a restart, a network
cut), the reader logs an error, the reconnect later succeeds without re-subscribing, and the
process stays deaf to every group and channel until it restarts (tests/hardening, case 13: after
a 30 s outage no live event reached any socket for the minute the test waited). Here the reader
notices the failure, and once Redis answers again it
subscribes a fresh PubSub to everything this process had subscribed. Messages published while it
was away are not replayed (pub/sub never does); personal events are recovered from the event log
by seq: every local channel gets a ``layer.reconnected`` message and its consumer catches up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

from channels_redis.pubsub import RedisPubSubChannelLayer, RedisSingleShardConnection
from channels_redis.utils import _consistent_hash, decode_hosts

logger = logging.getLogger(__name__)

RETRY_SECONDS = 0.5
RECONNECTED = "layer.reconnected"  # the message type every local channel gets after a re-subscribe


class ResilientShardConnection(RedisSingleShardConnection):
    def __init__(self, host, channel_layer) -> None:
        super().__init__(host, channel_layer)
        self._lost = False

    async def _do_receiving(self) -> None:
        while True:
            try:
                if self._lost:
                    await self._resubscribe()
                if self._pubsub and self._pubsub.subscribed:
                    message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
                    self._receive_message(message)
                else:
                    await asyncio.sleep(0.1)
            except (asyncio.CancelledError, TimeoutError, GeneratorExit):
                raise
            except Exception as exc:  # noqa: BLE001 - any failure of the link: re-subscribe
                if not self._lost:
                    logger.warning("Redis pub/sub connection lost (%s); re-subscribing when it is back", exc)
                self._lost = True
                await asyncio.sleep(RETRY_SECONDS)

    async def _resubscribe(self) -> None:
        async with self._lock:
            old, self._pubsub = self._pubsub, self._redis.pubsub()
            if old is not None:
                with contextlib.suppress(Exception):
                    await old.aclose()
            if self._subscribed_to:
                await self._pubsub.subscribe(*self._subscribed_to)
            self._lost = False
        # Whatever was published while this process was deaf never comes: tell every local
        # channel, so connections catch their personal streams up from the event log.
        layer = self.channel_layer
        notice = layer.channel_layer.serialize({"type": RECONNECTED})
        for queue in list(layer.channels.values()):
            queue.put_nowait(notice)
        logger.warning("Redis pub/sub connection back: %d channel(s) re-subscribed", len(self._subscribed_to))


class ResilientPubSubChannelLayer(RedisPubSubChannelLayer):
    """``RedisPubSubChannelLayer`` whose per-loop layers use ``ResilientShardConnection``, and
    which synchronous code can publish to without an event loop (``publish_blocking``)."""

    _blocking_lock = threading.Lock()
    _sync_clients: list | None = None  # a class default: the base class's __getattr__ needs a loop

    def publish_blocking(self, sends: list[tuple[str, dict]]) -> None:
        """``group_send`` of each ``(group, message)``, in order, from a thread with no event loop:
        the same channel names and serialisation as ``group_send``, one pipeline per shard (one
        round trip for a transaction's events). ``async_to_sync(group_send)`` instead waits for a
        turn of the server's event loop, busy with every socket, twice per call: ~30 ms per order
        placement at 100 orders/s. Raises redis-py's errors when Redis cannot be reached."""
        clients = self._blocking_clients()
        prefix = self._kwargs.get("prefix", "asgi")
        pipes: dict[int, object] = {}
        for group, message in sends:
            name = f"{prefix}__group__{group}"
            shard = _consistent_hash(name, len(clients))
            pipe = pipes.get(shard)
            if pipe is None:
                pipe = pipes[shard] = clients[shard].pipeline(transaction=False)
            pipe.publish(name, self.serialize(message))
        for pipe in pipes.values():
            pipe.execute()

    def _blocking_clients(self) -> list:
        clients = self._sync_clients
        if clients is None:
            import redis

            from core.redis_clients import redis_options

            with self._blocking_lock:
                clients = self._sync_clients
                if clients is None:
                    hosts = decode_hosts(self._kwargs.get("hosts"))
                    clients = self._sync_clients = [
                        redis.Redis.from_url(host["address"], **redis_options(asyncio_client=False)) for host in hosts
                    ]
        return clients

    def _get_layer(self):
        loop = asyncio.get_running_loop()
        if loop not in self._layers:
            # The base class builds its loop layer and registers loop-close cleanup; build it,
            # then swap the shard connections before anything subscribed through them.
            layer = super()._get_layer()
            layer._shards = [ResilientShardConnection(shard.host, layer) for shard in layer._shards]
        return self._layers[loop]
