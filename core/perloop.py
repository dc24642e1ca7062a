"""One object per running event loop: a server process runs one loop, so this is one per process;
tests run many loops, and the objects of closed loops are dropped."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerLoop(Generic[T]):
    def __init__(self, make: Callable[[asyncio.AbstractEventLoop], T], drop: Callable[[T], None] | None = None) -> None:
        self.make = make
        self.drop = drop  # called with the object of a loop found closed, as it is let go
        self.by_loop: dict[asyncio.AbstractEventLoop, T] = {}

    def __call__(self) -> T:
        """This loop's object, made on first use."""
        loop = asyncio.get_running_loop()
        found = self.by_loop.get(loop)
        if found is None:
            for old in [lp for lp in self.by_loop if lp.is_closed()]:
                dropped = self.by_loop.pop(old)
                if self.drop is not None:
                    self.drop(dropped)
            found = self.by_loop[loop] = self.make(loop)
        return found

    def current(self) -> T | None:
        """This loop's object if it was made, without making it."""
        return self.by_loop.get(asyncio.get_running_loop())
