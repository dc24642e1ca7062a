"""In-process simulation (AXISOR_SIMULATE=venue|all): the paper venue fills orders against a
simulated price walk. It starts with the first request or socket a server process gets; with
Redis, one process at a time holds the simulator lease so several daphne processes never run two
venues."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid

from channels.db import database_sync_to_async
from django.conf import settings
from redis import asyncio as aioredis

logger = logging.getLogger(__name__)

STEP_SECONDS = float(os.environ.get("AXISOR_SIMULATE_STEP_SECONDS", "0.5"))
LEASE_MS = 5000


class Simulator:
    def __init__(self) -> None:
        from market.prices import RandomWalkPrices
        from orders.venue import PaperVenue

        self.prices = RandomWalkPrices()
        self.venue = PaperVenue(self.prices)
        self.me = uuid.uuid4().hex
        self.redis = None
        self.task: asyncio.Task | None = None

    def _step(self) -> None:
        if not self.prices.prices:
            self.prices.load()
        self.prices.step()
        self.venue.step()

    async def _leader(self) -> bool:
        if not settings.REDIS_URL:
            return True
        if self.redis is None:
            self.redis = aioredis.from_url(settings.REDIS_URL, socket_timeout=settings.REDIS_SOCKET_TIMEOUT)
        key = f"{settings.CHANNEL_LAYER_PREFIX}:simulator:leader"
        if await self.redis.set(key, self.me, nx=True, px=LEASE_MS):
            return True
        if (await self.redis.get(key) or b"").decode() == self.me:
            await self.redis.pexpire(key, LEASE_MS)
            return True
        return False

    async def run(self) -> None:
        logger.info("simulator started (%s), step %.2fs", settings.AXISOR_SIMULATE, STEP_SECONDS)
        while True:
            try:
                if await self._leader():
                    await database_sync_to_async(self._step)()
            except Exception:  # a bad step must not stop the simulation
                logger.exception("simulator step failed")
            await asyncio.sleep(STEP_SECONDS)

    def ensure_started(self) -> None:
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self.run())


class SimulationStarter:
    """ASGI wrapper that starts the simulator in the server's event loop on the first scope."""

    def __init__(self, application) -> None:
        self.application = application
        self.simulator: Simulator | None = None
        self.enabled = settings.AXISOR_SIMULATE in ("venue", "all")

    async def __call__(self, scope, receive, send):
        if self.enabled and scope["type"] in ("http", "websocket"):
            if self.simulator is None:
                self.simulator = Simulator()
            self.simulator.ensure_started()
        return await self.application(scope, receive, send)
