"""One writer task per registry: ``Batcher.call(item)`` queues the item, and the writer runs
``run(items)`` once for everything asked for while its previous run was under way, in order. A
connect or disconnect storm costs a Redis pipeline per round trip, not a round trip per socket,
and a removal is never overtaken by a write of the same lease already on its way. The registries
of socket leases (gateway.limits) and of presence (broadcast.presence) write through one each."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def retrieved(done: asyncio.Future) -> None:
    if not done.cancelled():
        done.exception()  # a caller cancelled meanwhile (its socket closed): nothing to log


def _fail(batch: list[tuple[T, asyncio.Future]], exc: BaseException) -> None:
    for _, done in batch:
        if not done.done():
            done.set_exception(exc)


class Batcher(Generic[T, R]):
    """``run(items)`` returns one answer per item, which its ``call`` returns; what ``run`` raises
    (an ``Exception``) every call of the batch raises."""

    def __init__(self, run: Callable[[list[T]], Awaitable[list[R]]]) -> None:
        self.run = run
        self.queue: list[tuple[T, asyncio.Future]] = []
        self.sending: list[tuple[T, asyncio.Future]] = []  # the batch in the writer's run
        self.writer: asyncio.Task | None = None

    async def call(self, item: T) -> R:
        done = asyncio.get_running_loop().create_future()
        done.add_done_callback(retrieved)
        self.queue.append((item, done))
        if self.writer is None or self.writer.done():
            self.writer = asyncio.ensure_future(self._drain())
            self.writer.add_done_callback(self._writer_done)
        return await done  # ours alone: a cancelled caller cancels it; the item still goes out

    async def _drain(self) -> None:
        while self.queue:
            self.sending, self.queue = self.queue, []
            try:
                answers = await self.run([item for item, _ in self.sending])
            except Exception as exc:  # noqa: BLE001 - every caller in the batch gets it
                _fail(self.sending, exc)
                continue
            for (_, done), answer in zip(self.sending, answers, strict=True):
                if not done.done():
                    done.set_result(answer)
        self.sending = []

    def _writer_done(self, writer: asyncio.Task) -> None:
        """A loop closing cancels every task, the writer too (before it starts, or mid-run). A
        release waiting on it, shielded in a socket's disconnect, waited for good and the loop
        never closed: whatever it holds fails as a Redis outage would (a ConnectionError)."""
        if writer.cancelled() and writer is self.writer:  # a new writer owns what was asked for since
            pending, self.sending, self.queue = self.sending + self.queue, [], []
            _fail(pending, ConnectionError("the writer stopped: the event loop is closing"))

    async def idle(self) -> None:
        """Return once everything asked for so far is out (and whatever was asked for meanwhile)."""
        while (writer := self.writer) is not None and not writer.done():
            await asyncio.wait([writer])
