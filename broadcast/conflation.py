"""Conflation of value streams (market data, candles, position values): per key (symbol, symbol +
timeframe, or position), at most ``rate`` sends per second; when updates come faster, the latest
waits and goes out at the next slot, the ones it replaced are dropped. A subscriber therefore always
ends on the latest value, and a fast feed cannot queue more than ``rate`` messages per second per
key towards anyone.

One conflater per process, whatever offers to it: on_commit callbacks on any thread with
``conflate([...])`` (a gunicorn request, a job, the tick ingest), the position sweeps on the event
loop with ``conflate_async``. What is due goes out at once from the caller; what must wait for its
slot is sent by the conflater's own thread. On Redis both send with the layer's
``publish_blocking`` (one pipeline per shard): no event loop is needed or waited for, so a sync
caller neither builds a loop and a Redis connection per call (``async_to_sync`` outside a server)
nor waits for a turn of a server's busy loop. The in-memory layer lives in its event loop: there,
sends go to the loop the update came from.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from redis.exceptions import RedisError

from broadcast.stafffeed import count_fanout
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
    """Per key: when it last went out, and the latest update waiting for its slot. Thread-safe."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.last: dict[str, float] = {}
        self.waiting: dict[str, Waiting] = {}
        self.slots: list[tuple[float, str]] = []  # (due, key) of every waiting key, a heap
        self.thread: threading.Thread | None = None
        self.prune_at = PRUNE_AT

    def admit(self, items: Iterable[Item], loop: asyncio.AbstractEventLoop | None = None) -> list[tuple[str, dict]]:
        """The ``(group, message)`` of the items due now, for the caller to send; the others wait
        (each replacing the one of its key that waited before it) for this conflater's thread."""
        now = time.monotonic()
        due_now = []
        with self.cond:
            for key, group, message in items:
                due = self.last.get(key, float("-inf")) + interval(key)
                if now >= due and key not in self.waiting:
                    self.last[key] = now
                    due_now.append((group, message))
                    continue
                if key in self.waiting:  # replaced by a newer update before its slot
                    CONFLATED.labels("process").inc()
                else:
                    heapq.heappush(self.slots, (due, key))
                    self.cond.notify()
                self.waiting[key] = Waiting(group, message, loop)
            if self.slots and self.thread is None:
                self.thread = threading.Thread(target=self._run, name="conflater", daemon=True)
                self.thread.start()
            if len(self.last) > self.prune_at:  # past its interval, a key is as good as never sent
                self.last = {k: t for k, t in self.last.items() if now < t + interval(k) or k in self.waiting}
                self.prune_at = max(PRUNE_AT, 2 * len(self.last))
        return due_now

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.slots or self.slots[0][0] > (now := time.monotonic()):
                    self.cond.wait(self.slots[0][0] - time.monotonic() if self.slots else None)
                taken = []
                while self.slots and self.slots[0][0] <= now:
                    _, key = heapq.heappop(self.slots)
                    self.last[key] = now
                    taken.append(self.waiting.pop(key))
            try:
                _send_taken(taken)
            except Exception:  # this thread must outlive any one send
                logger.exception("conflated sends failed")

    def clear(self) -> None:
        """Forget every key and drop what waits (tests: one test's updates are not the next one's)."""
        with self.cond:
            self.last.clear()
            self.waiting.clear()
            self.slots.clear()


conflater = Conflater()  # this process's


def _forget_in_child() -> None:  # a forked worker has no conflater thread: it starts its own
    global conflater
    conflater = Conflater()


os.register_at_fork(after_in_child=_forget_in_child)


def _sent(message: dict) -> None:
    PUBLISHED.labels(message.get("channel", "")).inc()
    count_fanout(message.get("channel", ""))


def send_blocking(layer, sends: list[tuple[str, dict]]) -> None:
    """Send conflated ``(group, message)`` pairs now, from this thread, with ``publish_blocking``.
    A failed send is dropped: the next update of its key supersedes it."""
    if not sends:
        return
    failed = layer.publish_blocking([(group, {**message, "group": group}) for group, message in sends])
    for i, (group, message) in enumerate(sends):
        if i in failed:
            logger.warning("conflated send to %s failed (%r)", group, failed[i])
        else:
            _sent(message)


async def send_async(layer, group: str, message: dict) -> None:
    try:
        await layer.group_send(group, {**message, "group": group})
        _sent(message)
    except (OSError, RedisError) as exc:  # its layer server unreachable: the next update supersedes it
        logger.warning("conflated send to %s failed (%r)", group, exc)
    except Exception:
        logger.exception("conflated send to %s failed", group)


_tasks: set[asyncio.Task] = set()  # the in-memory layer's sends in flight: a task nobody holds can be collected


def _on_loop(layer, sends: list[tuple[str, dict]]) -> None:
    for group, message in sends:
        task = asyncio.get_running_loop().create_task(send_async(layer, group, message))
        _tasks.add(task)
        task.add_done_callback(_tasks.discard)


def _send_taken(taken: list[Waiting]) -> None:
    """On the conflater's thread: send what waited for its slot."""
    layer = get_channel_layer()
    if hasattr(layer, "publish_blocking"):
        send_blocking(layer, [(w.group, w.message) for w in taken])
        return
    for w in taken:
        if w.loop is not None and not w.loop.is_closed():
            try:
                w.loop.call_soon_threadsafe(_on_loop, layer, [(w.group, w.message)])
            except RuntimeError:  # closed meanwhile
                pass


def conflate(items: list[Item]) -> None:
    """From sync code (an on_commit callback): hand the events to this process's conflater."""
    layer = get_channel_layer()
    if layer is None:
        return
    if hasattr(layer, "publish_blocking"):
        send_blocking(layer, conflater.admit(items))
    else:  # the in-memory layer: only its event loop can send (a server's thread gets there)
        async_to_sync(conflate_async)(items)


async def conflate_async(items: list[Item]) -> None:
    """From the event loop (the position sweeps), or ``conflate`` on the in-memory layer."""
    layer = get_channel_layer()
    for group, message in conflater.admit(items, asyncio.get_running_loop()):
        await send_async(layer, group, message)
