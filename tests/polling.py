"""The one way tests wait for a condition they cannot await: state in another process (Redis, the
database, a server coming up) that sends no event. Anything that can be awaited is awaited instead."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any


async def until(
    condition: Callable[[], Any],
    *,
    timeout: float = 20.0,
    what: str = "condition",
    interval: float = 0.05,
    in_thread: bool = False,
) -> Any:
    """Poll ``condition`` (a function, or a coroutine function) until it returns something truthy,
    and return that. ``in_thread``: call it on a worker thread (blocking I/O, the ORM). Fails with
    an AssertionError that names ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(condition) if in_thread else condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(interval)


def until_sync(
    condition: Callable[[], Any], *, timeout: float = 20.0, what: str = "condition", interval: float = 0.05
) -> Any:
    """``until`` for code without an event loop."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def window_room(period: float = 60.0, need: float = 15.0) -> float:
    """Seconds to wait so that the next ``need`` seconds fall inside one fixed rate window of
    ``period`` seconds (the throttles count per window aligned to the epoch: a burst across a window
    edge is counted in two). 0 when the current window has room."""
    left = period - time.time() % period
    return 0.0 if left >= need else left + 0.05
