"""Conflation of value streams (market data, candles, position values): per key (symbol, symbol +
timeframe, or position), at most ``rate`` sends per second; when updates come faster, the latest
waits and goes out at the next slot, the ones it replaced are dropped. A subscriber therefore ends
on the latest value this process sent, and a fast feed cannot queue more than ``rate`` messages per
second per key towards anyone.

One conflater per process, whatever offers to it: on_commit callbacks on any thread with
``conflate([...])`` (a job, the tick ingest, a gunicorn request), the position sweeps on the event
loop with ``conflate_async``. One sender at a time sends what is due, in the order it became due:
a sync caller, inline, when nothing else is queued or in flight (no thread hop for the usual
update), else the conflater's thread, which also sends each waiting value at its slot. So a key's
values reach the layer in order however slow one send is; the event loop never sends (a send may
block as long as Redis takes), and no caller builds a loop or waits for a server's busy one. On
Redis sends go with the layer's ``publish_blocking`` (one pipeline per shard); the in-memory layer
lives in its event loop, so there each send is handed to the loop its value came from. At exit
what is due or waiting is sent at once (the thread is a daemon).

The REST tier (gunicorn) holds nothing back: its processes serve no socket, and a value held there
for its slot could reach the layer after a newer one sent by another process. There every offer
goes out at once, inline, in order; sockets' send queues conflate again by key. Across processes
(a server's held value can land after a newer one sent elsewhere meanwhile) each value carries a
version by the database's clock, and a process's hub passes on none older than one of its key it
already did, within the time a value can be held (``gateway/hub.py``).
"""

from __future__ import annotations

import asyncio
import atexit
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
    due, in order. One sender at a time (``sending``): a sync caller, inline, when nothing is
    queued or in flight, else this conflater's thread. Thread-safe."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.last: dict[str, float] = {}
        self.waiting: dict[str, Waiting] = {}
        self.slots: list[tuple[float, str]] = []  # (due, key) of every waiting key, a heap
        self.due: deque[Waiting] = deque()  # to send now, in order
        self.sending = False  # a batch is in flight (the thread's or an inline caller's)
        self.thread: threading.Thread | None = None
        self.prune_at = PRUNE_AT

    def offer(self, items: Iterable[Item], loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Queue each item: due now, or waiting for its slot (replacing the one of its key that
        waited before it). From a thread (no ``loop``) on Redis, what is due goes out from the
        caller when nothing else is queued or in flight; from the event loop (``loop``) never:
        a send may block for as long as Redis takes."""
        now = time.monotonic()
        hold = tier.TIER != "wsgi"
        taken: list[Waiting] = []
        with self.cond:
            wake = False
            for key, group, message in items:
                update = Waiting(group, message, loop)
                due = self.last.get(key, float("-inf")) + interval(key)
                if not hold or (now >= due and key not in self.waiting):
                    self.last[key] = now
                    self.due.append(update)
                    wake = True
                    continue
                if key in self.waiting:  # replaced by a newer update before its slot
                    CONFLATED.labels("process").inc()
                else:
                    heapq.heappush(self.slots, (due, key))
                    wake = wake or self.slots[0][1] == key  # the earliest slot moved
                self.waiting[key] = update
            if loop is None and self.due and not self.sending:
                taken = self._taken()
            elif wake:
                self.cond.notify()
            if (self.due or self.slots) and (self.thread is None or not self.thread.is_alive()):
                self.thread = threading.Thread(target=self._run, name="conflater", daemon=True)
                self.thread.start()
            if len(self.last) > self.prune_at:  # past its interval, a key is as good as never sent
                self.last = {k: t for k, t in self.last.items() if now < t + interval(k) or k in self.waiting}
                self.prune_at = max(PRUNE_AT, 2 * len(self.last))
        if taken:
            self._send(taken)

    def _taken(self) -> list[Waiting]:
        """Under the lock: what is due, now in flight."""
        taken = list(self.due)
        self.due.clear()
        self.sending = True
        return taken

    def _send(self, taken: list[Waiting]) -> None:
        try:
            _send(taken)
        except Exception:  # a sender must outlive any one send
            logger.exception("%d conflated send(s) failed", len(taken))
        finally:
            with self.cond:
                self.sending = False
                self.cond.notify()  # the thread waits for it when more is due

    def _take(self) -> list[Waiting]:
        """Under the lock, wait for sends due and nothing in flight: the queued ones, then the
        waiting ones whose slot came, in that order."""
        while True:
            now = time.monotonic()
            while self.slots and self.slots[0][0] <= now:
                _, key = heapq.heappop(self.slots)
                self.last[key] = now
                self.due.append(self.waiting.pop(key))
            if self.due and not self.sending:
                return self._taken()
            # in flight: its end notifies; else the next slot, or an offer, wakes this
            self.cond.wait(None if self.sending or not self.slots else self.slots[0][0] - now)

    def _run(self) -> None:
        while True:
            try:
                with self.cond:
                    taken = self._take()
            except Exception:  # a bug: say so, and go on a little later
                logger.exception("the conflater could not take its sends")
                time.sleep(1.0)
                continue
            self._send(taken)

    def drain(self) -> None:
        """At exit: send what is due and what waits, now (the thread is a daemon: it dies with
        the process). Redis only: the in-memory layer's loop is gone by then."""
        with self.cond:
            if self.sending:
                return  # the thread is sending: what it took goes, if the process lasts
            for _, key in sorted(self.slots):
                self.due.append(self.waiting.pop(key))
            self.slots.clear()
            taken = self._taken() if self.due else []
        if taken and hasattr(get_channel_layer(), "publish_blocking"):
            self._send(taken)

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
atexit.register(lambda: conflater.drain())  # whichever conflater the process has by then


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
