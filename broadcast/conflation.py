"""Conflation of value streams (market data, candles, position values): per key (symbol, symbol +
timeframe, or position), at most ``rate`` sends per second; when updates come faster, the latest
waits and goes out at the next slot, the ones it replaced are dropped. A subscriber therefore ends
on the latest value this process sent, and a fast feed cannot queue more than ``rate`` messages per
second per key towards anyone.

One conflater per process, whatever offers to it: on_commit callbacks on any thread with
``conflate([...])`` (a job, the tick ingest, a gunicorn request), the position sweeps on the event
loop with ``conflate_async``. Offering only queues: the conflater's one thread sends everything,
due now or at its slot, in the order it became due, so a key's values reach the layer in order
however slow one send is, and a caller never waits for Redis or for a server's busy loop. On
Redis the thread sends with the layer's ``publish_blocking`` (one pipeline per shard); the
in-memory layer lives in its event loop, so there it hands each send to the loop the update came
from.

The REST tier (gunicorn) holds nothing back: its processes serve no socket, and a value held
there for its slot could reach the layer after a newer one sent by another process. There, every
offer goes out at once, in order; sockets' send queues conflate again by key.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings

from broadcast.stafffeed import count_fanout
from core import tier
from core.metrics import CONFLATED, PUBLISHED

logger = logging.getLogger(__name__)

Item = tuple[str, str, dict]  # (key, group, layer message)
PRUNE_AT = 10_000  # keys remembered before the ones past their interval are forgotten


def interval(key: str) -> float:
    conf = settings.AXISOR_MARKET
    if key.startswith("pos:"):  # position_status_update, per position
        return 1.0 / settings.AXISOR_MARGIN["POSITION_UPDATES_PER_SECOND"]
    rate = conf["HISTORY_PER_SECOND"] if key.startswith("hd:") else conf["UPDATES_PER_SECOND"]
    return 1.0 / rate


@dataclass(slots=True)
class Waiting:
    group: str
    message: dict
    loop: asyncio.AbstractEventLoop | None  # in-memory layer: the loop to send it on


class Conflater:
    """Per key: when it last went out, and the latest update waiting for its slot; and the sends
    due, in order, for this conflater's thread. Thread-safe."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.last: dict[str, float] = {}
        self.waiting: dict[str, Waiting] = {}
        self.slots: list[tuple[float, str]] = []  # (due, key) of every waiting key, a heap
        self.due: deque[Waiting] = deque()  # to send now, in order
        self.thread: threading.Thread | None = None
        self.prune_at = PRUNE_AT

    def offer(self, items: Iterable[Item], loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Queue each item: due now, or waiting for its slot (replacing the one of its key that
        waited before it). ``loop``: the caller's, for the in-memory layer."""
        now = time.monotonic()
        hold = tier.TIER != "wsgi"
        with self.cond:
            for key, group, message in items:
                update = Waiting(group, message, loop)
                due = self.last.get(key, float("-inf")) + interval(key)
                if not hold or (now >= due and key not in self.waiting):
                    self.last[key] = now
                    self.due.append(update)
                    continue
                if key in self.waiting:  # replaced by a newer update before its slot
                    CONFLATED.labels("process").inc()
                else:
                    heapq.heappush(self.slots, (due, key))
                self.waiting[key] = update
            self.cond.notify()
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="conflater", daemon=True)
                self.thread.start()
            if len(self.last) > self.prune_at:  # past its interval, a key is as good as never sent
                self.last = {k: t for k, t in self.last.items() if now < t + interval(k) or k in self.waiting}
                self.prune_at = max(PRUNE_AT, 2 * len(self.last))

    def _take(self) -> list[Waiting]:
        """Wait for sends due (under the lock): the queued ones, then the waiting ones whose slot came."""
        while not self.due and (not self.slots or self.slots[0][0] > time.monotonic()):
            self.cond.wait(self.slots[0][0] - time.monotonic() if self.slots else None)
        now = time.monotonic()
        while self.slots and self.slots[0][0] <= now:
            _, key = heapq.heappop(self.slots)
            self.last[key] = now
            self.due.append(self.waiting.pop(key))
        taken = list(self.due)
        self.due.clear()
        return taken

    def _run(self) -> None:
        while True:
            with self.cond:
                taken = self._take()
            try:
                _send(taken)
            except Exception:  # this thread must outlive any one send
                logger.exception("%d conflated send(s) failed", len(taken))

    def clear(self) -> None:
        """Forget every key and drop what waits (tests: one test's updates are not the next one's)."""
        with self.cond:
            self.last.clear()
            self.waiting.clear()
            self.slots.clear()
            self.due.clear()


conflater = Conflater()  # this process's


def _forget_in_child() -> None:  # a forked worker has no conflater thread: it starts its own
    global conflater
    conflater = Conflater()


os.register_at_fork(after_in_child=_forget_in_child)


def _sent(message: dict) -> None:
    PUBLISHED.labels(message.get("channel", "")).inc()
    count_fanout(message.get("channel", ""))


def _send(taken: list[Waiting]) -> None:
    """On the conflater's thread, in order: on Redis in one pipeline per shard, else each on the
    loop its update came from. A failed send is dropped: the next update of its key supersedes it."""
    layer = get_channel_layer()
    if hasattr(layer, "publish_blocking"):
        failed = layer.publish_blocking([(w.group, {**w.message, "group": w.group}) for w in taken])
        if failed:
            logger.warning(
                "%d of %d conflated send(s) failed (%r)", len(failed), len(taken), next(iter(failed.values()))
            )
        for i, w in enumerate(taken):
            if i not in failed:
                _sent(w.message)
        return
    for w in taken:
        if w.loop is not None and not w.loop.is_closed():
            try:
                w.loop.call_soon_threadsafe(_on_loop, layer, w.group, w.message)
            except RuntimeError:  # closed meanwhile
                pass


_tasks: set[asyncio.Task] = set()  # the in-memory layer's sends in flight: a task nobody holds can be collected


def _on_loop(layer, group: str, message: dict) -> None:
    task = asyncio.get_running_loop().create_task(_send_async(layer, group, message))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


async def _send_async(layer, group: str, message: dict) -> None:
    try:
        await layer.group_send(group, {**message, "group": group})
        _sent(message)
    except Exception:
        logger.exception("conflated send to %s failed", group)


def conflate(items: list[Item]) -> None:
    """From sync code (an on_commit callback): hand the events to this process's conflater.
    Never raises: the change is committed either way, and the next update supersedes these."""
    try:
        layer = get_channel_layer()
        if layer is None:
            return
        if hasattr(layer, "publish_blocking"):
            conflater.offer(items)
        else:  # the in-memory layer: only its event loop can send (a server's thread gets there)
            async_to_sync(conflate_async)(items)
    except Exception:
        logger.exception("conflation of %d update(s) failed", len(items))


async def conflate_async(items: list[Item]) -> None:
    """From the event loop (the position sweeps), or ``conflate`` on the in-memory layer."""
    conflater.offer(items, asyncio.get_running_loop())
