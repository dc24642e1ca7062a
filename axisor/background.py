"""Background loops inside a server process: the simulator (AXISOR_SIMULATE=venue|all: the paper
venue fills orders against a simulated price walk), the notification delivery worker, the relay
that sends committed-but-unpublished events, and event-log retention.

They start with the first request or socket a process gets (daphne has no start-up hook). With
Redis, one process at a time holds the simulator, relay and retention leases, so several daphne
processes never run two venues; the delivery worker needs no lease (it claims rows with SKIP LOCKED).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable

from channels.db import database_sync_to_async
from django.conf import settings
from redis.exceptions import RedisError

from axisor.metrics import wait_until_idle
from axisor.realtime import presence
from axisor.realtime.limits import redis_client

logger = logging.getLogger(__name__)

LEADER_LEASE_MS = 5000
RELAY_SECONDS = 1.0
PRUNE_SECONDS = 300.0
DRAIN_SECONDS = 10.0  # at shutdown, how long requests in flight may take to finish


class LatestPrices:
    """The venue's price source: the market snapshot (reference price before the first tick)."""

    def __init__(self) -> None:
        self.prices: dict = {}

    def refresh(self) -> None:
        from market.selectors import latest_prices

        self.prices = latest_prices()

    def latest(self, symbol: str):
        return self.prices.get(symbol)


class Simulator:
    """AXISOR_SIMULATE=all: a random-walk tick per instrument each step, then the venue;
    AXISOR_SIMULATE=venue: the venue only, at whatever prices the market has."""

    def __init__(self, *, feed: bool) -> None:
        from orders.venue import PaperVenue

        self.feed_enabled = feed
        self.feed = None
        self.prices = LatestPrices()
        self.venue = PaperVenue(self.prices)

    def step(self) -> None:
        if self.feed_enabled:
            from market.feed import RandomWalkFeed
            from market.services import ticks_ingest

            if self.feed is None:
                self.feed = RandomWalkFeed()
            ticks_ingest(self.feed.ticks())
        self.prices.refresh()
        self.venue.step()


async def loop(name: str, step: Callable[[], object], every: float, stopping: asyncio.Event, leader=None) -> None:
    logger.info("%s started, every %.2fs", name, every)
    while not stopping.is_set():
        try:
            if leader is None or await leader():
                await database_sync_to_async(step)()
        except RedisError as exc:  # Redis away: expected in an outage, the next step tries again
            logger.warning("%s step skipped: Redis unreachable (%r)", name, exc)
        except Exception:  # a bad step must not stop the loop
            logger.exception("%s step failed", name)
        try:
            await asyncio.wait_for(stopping.wait(), timeout=every)
        except TimeoutError:
            pass
    logger.info("%s stopped", name)


def deliver_step() -> None:
    from notifications.delivery import deliver_due

    while deliver_due() == settings.AXISOR_NOTIFICATIONS["BATCH"]:
        pass  # a full batch: more may be due


def relay_step() -> None:
    from axisor.realtime.publish import relay_unpublished

    relay_unpublished()


def prune_step() -> None:
    from axisor.realtime.eventlog import prune
    from market.services import ticks_prune

    prune()
    ticks_prune()


class Leader:
    """One process at a time holds a named lease in Redis (always this one without Redis)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.me = uuid.uuid4().hex

    async def __call__(self) -> bool:
        if not settings.REDIS_URL:
            return True
        client = redis_client()
        key = f"{settings.CHANNEL_LAYER_PREFIX}:leader:{self.name}"
        if await client.set(key, self.me, nx=True, px=LEADER_LEASE_MS):
            return True
        if (await client.get(key) or b"").decode() == self.me:
            await client.pexpire(key, LEADER_LEASE_MS)
            return True
        return False


class BackgroundStarter:
    """ASGI wrapper that starts the background loops in the server's event loop on the first scope."""

    def __init__(self, application) -> None:
        self.application = application
        self.tasks: list[asyncio.Task] | None = None

    def start(self) -> list[asyncio.Task]:
        self.stopping = asyncio.Event()

        def run(name, step, every, leader=None):
            return asyncio.ensure_future(loop(name, step, every, self.stopping, leader))

        tasks = []
        if settings.AXISOR_SIMULATE in ("venue", "all"):
            sim = Simulator(feed=settings.AXISOR_SIMULATE == "all")
            tasks.append(
                run("simulator", sim.step, settings.AXISOR_MARKET["FEED_INTERVAL_SECONDS"], Leader("simulator"))
            )
        tasks.append(run("notification delivery", deliver_step, settings.AXISOR_NOTIFICATIONS["POLL_SECONDS"]))
        tasks.append(run("event relay", relay_step, RELAY_SECONDS, Leader("relay")))
        tasks.append(run("event retention", prune_step, PRUNE_SECONDS, Leader("prune")))
        # This process's presence lease and its once-per-second stats for the staff dashboard
        # (also started by the first socket; here so a process running the simulator reports too).
        presence.registry().ensure_running()
        self._stop_with_server(tasks)
        return tasks

    def _stop_with_server(self, tasks: list[asyncio.Task]) -> None:
        """Under daphne, let the loops finish their step before the event loop stops: a step that
        is committing hands its events to the loop, and would wait forever for a stopped loop."""
        try:
            from twisted.internet import reactor
            from twisted.internet.defer import Deferred
        except ImportError:
            return
        if not reactor.running:
            return

        registry = presence.registry()

        async def finish() -> None:
            await asyncio.wait(tasks, timeout=10)
            # Requests still running on worker threads need this loop to finish (their async parts
            # run here); once it stops they would wait forever and keep the process from exiting.
            if not await asyncio.to_thread(wait_until_idle, DRAIN_SECONDS):
                logger.warning("requests still in flight after %.0f s; stopping anyway", DRAIN_SECONDS)
            try:
                await registry.shutdown()
            except Exception:  # Redis away: the leases expire on their own
                logger.exception("presence shutdown failed")

        def stop():
            self.stopping.set()
            return Deferred.fromFuture(asyncio.ensure_future(finish()))

        reactor.addSystemEventTrigger("before", "shutdown", stop)

    async def __call__(self, scope, receive, send):
        if settings.AXISOR_BACKGROUND and scope["type"] in ("http", "websocket"):
            if self.tasks is None or all(t.done() for t in self.tasks):
                self.tasks = self.start()
        return await self.application(scope, receive, send)
