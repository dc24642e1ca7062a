"""position_status_update for ticks: at most POSITION_UPDATES_PER_SECOND sweeps per second per
process, each covering every instrument that moved since the last. A sweep reads the open positions
in those instruments held by users with a live socket (presence), builds their values at the latest
prices and hands them to the conflater (broadcast/conflation.py) keyed per position, towards each
holder's user room (no seq, not logged: a value stream, like market data). A sweep asked for inside
the interval runs at its end, so the last price of a burst always goes out; the ingest that asks
never waits for it, and the read runs on a thread of its own, not on the ORM thread the consumers
and the ingest share."""

from __future__ import annotations

import asyncio
import contextvars
import logging

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connection

from broadcast import presence
from broadcast.conflation import conflate_async
from core.perloop import PerLoop

from . import selectors

logger = logging.getLogger(__name__)


def _read(instrument_ids: set[int], user_ids: set[int]) -> list:
    try:
        return selectors.position_updates(instrument_ids=instrument_ids, user_ids=user_ids)
    finally:
        connection.close()  # a pool thread: do not leave a connection behind it


class Sweeper:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.last = float("-inf")
        self.pending: set[int] = set()
        self.timer: asyncio.TimerHandle | None = None

    @staticmethod
    def interval() -> float:
        return 1.0 / settings.AXISOR_MARGIN["POSITION_UPDATES_PER_SECOND"]

    def request(self, instrument_ids) -> None:
        """Ask for a sweep of these instruments: now if the interval has passed, else at its end.
        It runs as its own task in a fresh context: the requester's (an async_to_sync call from a
        sync thread) may be gone by then."""
        self.pending.update(instrument_ids)
        if self.timer is None:
            due = max(self.loop.time(), self.last + self.interval())
            self.timer = self.loop.call_at(due, self._due, context=contextvars.Context())

    def _due(self) -> None:
        self.timer = None
        self.last = self.loop.time()
        instrument_ids, self.pending = self.pending, set()
        self.loop.create_task(self.sweep(instrument_ids))

    async def sweep(self, instrument_ids: set[int]) -> None:
        try:
            users = await presence.online_users()
            if users:
                items = await database_sync_to_async(_read, thread_sensitive=False)(instrument_ids, users)
                await conflate_async(items)
        except Exception:
            logger.exception("position sweep of instruments %s failed", sorted(instrument_ids))


sweeper: PerLoop[Sweeper] = PerLoop(Sweeper)  # sweeper(): this process's sweeper


async def request_sweeps(instrument_ids: list[int]) -> None:
    sweeper().request(instrument_ids)
