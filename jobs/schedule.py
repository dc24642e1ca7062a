"""The background work every worker runs (``core/worker.py``): the simulator (AXISOR_SIMULATE=
venue|all: the paper venue fills orders against a simulated price walk), the relay that sends
committed-but-unpublished events, the delivery sweep and retention, each under a lease; plus the
queued jobs (notification deliveries and their retries).

``manage.py worker`` runs it as its own process. With ``AXISOR_BACKGROUND=1`` (the run command) a
server process runs the same worker on threads of its own, started with the first request or socket
it gets (daphne has no start-up hook).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta

from asgiref.sync import markcoroutinefunction
from django.conf import settings
from django.db.models import Max, Min, Q
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from accounts.services import refresh_tokens_prune
from broadcast import presence
from broadcast.history import prune
from broadcast.outbox import relay_unpublished
from core.internals import stop_listening
from core.metrics import wait_until_idle
from core.worker import Periodic, Worker
from margin.ticks import ticks_ingest
from margin.venue import PaperVenue
from market.feed import RandomWalkFeed
from market.models import Tick
from market.selectors import latest_prices, latest_times
from market.services import ticks_prune
from notifications.tasks import sweep_deliveries

logger = logging.getLogger(__name__)

RELAY_SECONDS = 1.0
PRUNE_SECONDS = 300.0
JOB_RESULTS_KEPT = timedelta(days=1)
DRAIN_SECONDS = 10.0  # at shutdown, how long requests in flight may take to finish
GIVE_BACK_SECONDS = 5.0  # then, how long giving back the sockets' leases and presence may take


class LatestPrices:
    """The venue's price source: the market snapshot (reference price before the first tick), and
    the low and high of the ticks recorded since the previous refresh (the path the venue's stops
    and limits are evaluated along)."""

    def __init__(self) -> None:
        self.prices: dict = {}
        self.ranges: dict = {}
        self.last_tick_id: int | None = None
        self.times: dict = {}

    def refresh(self) -> None:
        before = self.times
        self.prices, self.times = latest_prices(), latest_times()
        if self.last_tick_id is None:  # the first refresh: only the latest matters
            self.last_tick_id = Tick.objects.aggregate(m=Max("pk"))["m"] or 0
            return
        since = Tick.objects.filter(pk__gt=self.last_tick_id)
        top = since.aggregate(m=Max("pk"))["m"]
        if top is None:
            self.ranges = {}
            return
        # Backfill (older than the symbol's live price was) is not a price the market moved through.
        traded = Q(pk__lte=top) & ~Q(instrument__symbol__in=list(before))
        for symbol, at in before.items():
            traded |= Q(pk__lte=top, instrument__symbol=symbol, timestamp__gte=at)
        rows = since.filter(traded).values("instrument__symbol").annotate(low=Min("price"), high=Max("price"))
        self.ranges = {r["instrument__symbol"]: (r["low"], r["high"]) for r in rows}
        self.last_tick_id = top

    def latest(self, symbol: str):
        return self.prices.get(symbol)

    def path(self, symbol: str):
        last = self.prices.get(symbol)
        return self.ranges.get(symbol, (last, last))


class Simulator:
    """AXISOR_SIMULATE=all: a random-walk tick per instrument each step, then the venue;
    AXISOR_SIMULATE=venue: the venue only, at whatever prices the market has."""

    def __init__(self, *, feed: bool) -> None:
        self.feed_enabled = feed
        self.feed = None
        self.prices = LatestPrices()
        self.venue = PaperVenue(self.prices)

    def step(self) -> None:
        if self.feed_enabled:
            if self.feed is None:
                self.feed = RandomWalkFeed(seed=settings.MARKET_FEED_SEED)
            ticks_ingest(self.feed.ticks())
        self.prices.refresh()
        self.venue.step()


def relay_step() -> None:
    relay_unpublished()


def prune_step() -> None:
    prune()
    ticks_prune()
    refresh_tokens_prune()
    prune_job_results()


def prune_job_results() -> None:
    """Finished job rows are kept for a day (staff can read them in the admin), then deleted; so are
    rows left running a day ago by a worker that died (their deliveries were swept long since)."""
    before = timezone.now() - JOB_RESULTS_KEPT
    DBTaskResult.objects.finished().filter(finished_at__lt=before).delete()
    DBTaskResult.objects.running().filter(started_at__lt=before).delete()


def sweep_step() -> None:
    sweep_deliveries()


def periodic_jobs() -> list[Periodic]:
    """What every worker runs besides queued jobs (each single job by one process at a time)."""
    jobs = []
    if settings.AXISOR_SIMULATE in ("venue", "all"):
        sim = Simulator(feed=settings.AXISOR_SIMULATE == "all")
        jobs.append(Periodic("simulator", sim.step, settings.AXISOR_MARKET["FEED_INTERVAL_SECONDS"]))
    jobs.append(Periodic("event relay", relay_step, RELAY_SECONDS))
    jobs.append(Periodic("delivery sweep", sweep_step, settings.AXISOR_NOTIFICATIONS["SWEEP_SECONDS"]))
    jobs.append(Periodic("retention", prune_step, PRUNE_SECONDS))
    return jobs


class BackgroundStarter:
    """The process's ASGI application: starts the background loops in the server's event loop on
    the first scope, and hands each scope to the application for its type (channels'
    ``ProtocolTypeRouter``'s work). A plain call returning that application's coroutine, not a
    coroutine awaiting it: an idle socket's task holds no frame of this (a wrapper's frame lives as
    long as its socket; gateway/routing.py).

    Under daphne, on the first scope, it also sets what the process does when it is told to stop
    (SIGTERM), with or without background loops: ``on_stopping`` as it stops listening (each
    awaited in turn, errors logged: the sockets are told to go elsewhere), and once requests in
    flight are done ``on_stop`` (the same), then leaving the presence registry. daphne cancels every
    socket's consumer left at that point, without its ``disconnect``: what a socket holds in Redis
    goes back here, not at its lease's expiry (``gateway.limits.release_all``: a user at a tier's
    cap reconnecting at once to another process would meet their own old lease)."""

    def __init__(
        self,
        applications: dict[str, Callable],
        on_stop: Sequence[Callable[[], Awaitable[object]]] = (),
        on_stopping: Sequence[Callable[[], Awaitable[object]]] = (),
    ) -> None:
        self.applications = applications
        self.on_stop = tuple(on_stop)
        self.on_stopping = tuple(on_stopping)
        self.tasks: list[asyncio.Task] | None = None
        self.stopping = asyncio.Event()
        self.hooked = False

    def start(self) -> list[asyncio.Task]:
        # An event of this start's own: an asyncio.Event belongs to the first loop that waits on
        # it, and loops that died are started again (never while stopping: __call__ checks first).
        self.stopping = asyncio.Event()
        tasks = [asyncio.ensure_future(Worker(periodic=periodic_jobs()).run(self.stopping))]
        # This process's presence lease and its once-per-second stats for the staff dashboard
        # (also started by the first socket; here so a process running the simulator reports too).
        presence.registry().ensure_running()
        return tasks

    def _stop_with_server(self) -> None:
        """Under daphne, once: stop listening (the connections already accepted go on), let the
        loops finish their step before the event loop stops (a step that is committing hands its
        events to the loop, and would wait forever for a stopped loop), let requests in flight
        finish, then run ``on_stop`` and leave the presence registry."""
        # daphne installs Twisted's reactor when it starts: without it loaded there is no server
        # to hook (tests, uvicorn), and importing it here would install the wrong one.
        reactor = sys.modules.get("twisted.internet.reactor")
        if reactor is None or not reactor.running:
            return
        from twisted.internet.defer import Deferred

        registry = presence.registry()

        async def finish() -> None:
            await run_steps(self.on_stopping)
            if self.tasks:
                await asyncio.wait(self.tasks, timeout=10)
            # Requests still running on worker threads need this loop to finish (their async parts
            # run here); once it stops they would wait forever and keep the process from exiting.
            if not await asyncio.to_thread(wait_until_idle, DRAIN_SECONDS):
                logger.warning("requests still in flight after %.0f s; stopping anyway", DRAIN_SECONDS)
            try:  # within the unit's stop timeout (deploy/systemd: 20 s) with the drain's 10 s
                await asyncio.wait_for(give_back(), GIVE_BACK_SECONDS)
            except TimeoutError:
                logger.warning("stopping: leases not all given back in %.0f s; they lapse", GIVE_BACK_SECONDS)

        async def run_steps(steps) -> None:
            for step in steps:
                try:
                    await step()
                except Exception:  # Redis away: what it holds expires on its own
                    logger.exception("stopping: %s failed", getattr(step, "__qualname__", step))

        async def give_back() -> None:
            await run_steps(self.on_stop)
            try:
                await registry.shutdown()
            except Exception:  # Redis away: the leases expire on their own
                logger.exception("presence shutdown failed")

        def stop():
            # First of all, no new connections: what was accepted goes on (nginx takes a refused
            # connect to the next process), and no socket takes a lease after the give-back.
            try:
                logger.info("stopping: no new connections (%d listening port(s) closed)", stop_listening(reactor))
            except Exception:  # a bug here must not cost the drain and the give-back below
                logger.exception("stopping: the listening ports could not be closed")
            self.stopping.set()
            return Deferred.fromFuture(asyncio.ensure_future(finish()))

        reactor.addSystemEventTrigger("before", "shutdown", stop)

    @markcoroutinefunction  # an ASGI 3 application to whoever asks (daphne, uvicorn, asgiref)
    def __call__(self, scope, receive, send):
        try:
            if scope["type"] in ("http", "websocket"):
                if not self.hooked:
                    self.hooked = True
                    self._stop_with_server()
                stopped = self.stopping.is_set()  # no loop starts again while the server stops
                if (
                    settings.AXISOR_BACKGROUND
                    and not stopped
                    and (self.tasks is None or all(t.done() for t in self.tasks))
                ):
                    self.tasks = self.start()
            application = self.applications.get(scope["type"])
            if application is None:
                raise ValueError(f"No application configured for scope type {scope['type']!r}")  # ProtocolTypeRouter's
            return application(scope, receive, send)
        except Exception as exc:  # noqa: BLE001 - raised where the server expects it: see _failed
            return _failed(exc)


async def _failed(exc: Exception) -> None:
    """What the call (or a router or consumer it made) raised, raised again inside the application's
    coroutine, where channels' routers raised it: daphne runs the call to make a socket's application
    and, if the call itself raises, only logs it and leaves the handshake unanswered until its timeout
    (an error inside the coroutine is a prompt 500). uvicorn's lifespan scope gets the no-route
    error this way, and goes on without lifespan."""
    raise exc
