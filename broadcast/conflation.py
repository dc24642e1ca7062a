"""Conflation of value streams (market data, candles, position values): per key (symbol, symbol +
timeframe, or position), at most ``rate`` sends per second; when updates come faster, the latest
waits and goes out at the next slot, the ones it replaced are dropped. A subscriber therefore always
ends on the latest value, and a fast feed cannot queue more than ``rate`` messages per second per
key towards anyone.

One conflater per event loop (daphne's, or the ``market_feed`` command's); on_commit hands it the
events with ``conflate([...])`` from sync code.
"""

from __future__ import annotations

import asyncio
import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from redis.exceptions import RedisError

from broadcast.stafffeed import count_fanout
from core.metrics import CONFLATED, PUBLISHED
from core.perloop import PerLoop

logger = logging.getLogger(__name__)


class Conflater:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.last: dict[str, float] = {}
        self.pending: dict[str, tuple[str, dict]] = {}
        self.timers: dict[str, asyncio.TimerHandle] = {}

    @staticmethod
    def interval(key: str) -> float:
        conf = settings.AXISOR_MARKET
        if key.startswith("pos:"):  # position_status_update, per position
            return 1.0 / settings.AXISOR_MARGIN["POSITION_UPDATES_PER_SECOND"]
        rate = conf["HISTORY_PER_SECOND"] if key.startswith("hd:") else conf["UPDATES_PER_SECOND"]
        return 1.0 / rate

    async def offer(self, key: str, group: str, message: dict) -> None:
        now = self.loop.time()
        due = self.last.get(key, float("-inf")) + self.interval(key)
        if now >= due and key not in self.timers:
            self.last[key] = now
            await self._send(group, message)
            return
        if key in self.pending:  # replaced by a newer update before its slot
            CONFLATED.labels("process").inc()
        self.pending[key] = (group, message)
        if key not in self.timers:
            self.timers[key] = self.loop.call_at(due, self._flush, key)

    def _flush(self, key: str) -> None:
        self.timers.pop(key, None)
        item = self.pending.pop(key, None)
        if item is not None:
            self.last[key] = self.loop.time()
            self.loop.create_task(self._send(*item))

    async def _send(self, group: str, message: dict) -> None:
        try:
            await get_channel_layer().group_send(group, {**message, "group": group})
            PUBLISHED.labels(message.get("channel", "")).inc()
            count_fanout(message.get("channel", ""))
        except (OSError, RedisError) as exc:  # its layer server unreachable: the next update supersedes it
            logger.warning("conflated send to %s failed (%r)", group, exc)
        except Exception:
            logger.exception("conflated send to %s failed", group)


conflater: PerLoop[Conflater] = PerLoop(Conflater)  # conflater(): this process's conflater


async def conflate_async(items: list[tuple[str, str, dict]]) -> None:
    c = conflater()
    for key, group, message in items:
        await c.offer(key, group, message)


def conflate(items: list[tuple[str, str, dict]]) -> None:
    """From sync code (an on_commit callback): hand the events to this process's conflater."""
    async_to_sync(conflate_async)(items)
