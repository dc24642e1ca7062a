"""The reconnect schedule of seed 004: 1, 2, 4, 8 s, then capped at 10 s, at most 300 tries; plus jitter
so that a thousand clients dropped by one server restart do not all come back in the same instant."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """``next()`` gives the delay before the next attempt, or None once ``max_tries`` are used up.

    Attempt n waits ``min(initial * 2**(n-1), max_delay)`` shortened by up to ``jitter`` (a fraction):
    with the defaults 0.75–1 s, 1.5–2 s, 3–4 s, 6–8 s, then 7.5–10 s. ``reset()`` after a connection that
    worked starts the schedule again, as the seed does on ``open``.
    """

    def __init__(
        self,
        initial: float = 1.0,
        max_delay: float = 10.0,
        max_tries: int | None = 300,
        jitter: float = 0.25,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if initial < 0 or max_delay < 0 or not 0 <= jitter <= 1:
            raise ValueError("initial and max_delay must be >= 0 and jitter within [0, 1]")
        self.initial = initial
        self.max_delay = max_delay
        self.max_tries = max_tries
        self.jitter = jitter
        self.rng = rng
        self.attempt = 0

    def reset(self) -> None:
        self.attempt = 0

    @property
    def exhausted(self) -> bool:
        return self.max_tries is not None and self.attempt >= self.max_tries

    def base_delay(self, attempt: int) -> float:
        """The un-jittered delay before attempt ``attempt`` (1-based)."""
        return min(self.initial * 2 ** min(attempt - 1, 62), self.max_delay)

    def next(self, *, slow: bool = False) -> float | None:
        """The delay before the next attempt; ``slow`` (the server said "too many") waits the maximum."""
        if self.exhausted:
            return None
        self.attempt += 1
        delay = self.max_delay if slow else self.base_delay(self.attempt)
        return delay * (1 - self.jitter * self.rng())
