"""Stock Channels, the reference bench_fanout measures our server against: the peer this project
replaces. A plain `AsyncWebsocketConsumer` that joins one group; the publisher calls `group_send`
on `RedisPubSubChannelLayer`. Served by daphne:

    BENCH_REDIS_URL=redis://… BENCH_LAYER_PREFIX=… daphne devtools.bench.channels_stock:application

Nothing of ours is imported: settings are configured here, with the channel layer and nothing else.
"""

from __future__ import annotations

import os

import django
from django.conf import settings

GROUP = "bench"
LAYER = "channels_redis.pubsub.RedisPubSubChannelLayer"

if not settings.configured:
    settings.configure(
        DEBUG=False,
        INSTALLED_APPS=[],
        CHANNEL_LAYERS={
            "default": {
                "BACKEND": LAYER,
                "CONFIG": {
                    "hosts": [os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")],
                    "prefix": os.environ.get("BENCH_LAYER_PREFIX", "benchstock"),
                },
            }
        },
    )
    django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402 - after settings
from channels.routing import ProtocolTypeRouter  # noqa: E402


class BenchConsumer(AsyncWebsocketConsumer):
    groups = [GROUP]  # joined on connect, left on disconnect, by Channels itself

    async def bench_message(self, event: dict) -> None:
        await self.send(text_data=event["text"])


application = ProtocolTypeRouter({"websocket": BenchConsumer.as_asgi()})
