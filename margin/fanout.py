"""position_status_update for ticks: per instrument, at most POSITION_UPDATES_PER_SECOND sweeps per
second per process. A sweep reads the open positions of the instrument held by users with a live
socket (presence), builds their values at the latest price and hands them to the market conflater
keyed per position, towards each holder's user room (no seq, not logged: a value stream, like
market data). A sweep asked for inside the interval runs at its end, so the last price of a burst
always goes out; the ingest that asks never waits for it."""

from __future__ import annotations

import asyncio
import contextvars
import logging

from channels.db import database_sync_to_async
from django.conf import settings

from axisor.realtime import presence
from market.fanout import conflate_async

from . import selectors

logger = logging.getLogger(__name__)


class Sweeper:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.last: dict[int, float] = {}
        self.timers: dict[int, asyncio.TimerHandle] = {}

    @staticmethod
    def interval() -> float:
        return 1.0 / settings.AXISOR_MARGIN["POSITION_UPDATES_PER_SECOND"]

    def request(self, instrument_id: int) -> None:
        """Ask for a sweep of the instrument: now if its interval has passed, else at its end. The
        sweep runs as its own task (the ingest that asked does not wait for it), in a fresh context:
        the requester's (an async_to_sync call from a sync thread) may be gone by then, and
        database_sync_to_async would try to run on its finished thread executor."""
        if instrument_id in self.timers:
            return  # a sweep is already due; it will read the latest price
        due = max(self.loop.time(), self.last.get(instrument_id, float("-inf")) + self.interval())
        self.timers[instrument_id] = self.loop.call_at(due, self._due, instrument_id, context=contextvars.Context())

    def _due(self, instrument_id: int) -> None:
        self.timers.pop(instrument_id, None)
        self.last[instrument_id] = self.loop.time()
        self.loop.create_task(self.sweep(instrument_id))

    async def sweep(self, instrument_id: int) -> None:
        try:
            users = await presence.online_users()
            if users:
                items = await database_sync_to_async(selectors.position_updates)(
                    instrument_id=instrument_id, user_ids=users
                )
                await conflate_async(items)
        except Exception:
            logger.exception("position sweep of instrument %s failed", instrument_id)


_sweepers: dict[asyncio.AbstractEventLoop, Sweeper] = {}


def sweeper() -> Sweeper:
    loop = asyncio.get_running_loop()
    found = _sweepers.get(loop)
    if found is None:
        for old in [lp for lp in _sweepers if lp.is_closed()]:
            del _sweepers[old]
        found = _sweepers[loop] = Sweeper(loop)
    return found


async def request_sweeps(instrument_ids: list[int]) -> None:
    s = sweeper()
    for instrument_id in instrument_ids:
        s.request(instrument_id)
