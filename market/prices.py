"""Latest prices for the paper venue.

Until the market-data service lands this is a process-local random walk per instrument, started
at the instrument's reference price; the venue only asks ``latest(symbol)`` and ``step()``.
"""

from __future__ import annotations

import random
from decimal import ROUND_HALF_UP, Decimal

from .models import Instrument

VOLATILITY = 0.0015  # per step, relative


class RandomWalkPrices:
    def __init__(self, seed: int | None = None) -> None:
        self.rng = random.Random(seed)
        self.prices: dict[str, Decimal] = {}
        self.ticks: dict[str, Decimal] = {}

    def load(self) -> None:
        for inst in Instrument.objects.filter(active=True):
            self.prices.setdefault(inst.symbol, inst.reference_price)
            self.ticks[inst.symbol] = inst.tick_size

    def step(self) -> dict[str, Decimal]:
        for symbol, price in self.prices.items():
            tick = self.ticks[symbol]
            moved = price * Decimal(1 + self.rng.gauss(0, VOLATILITY))
            self.prices[symbol] = max(tick, (moved / tick).quantize(Decimal(1), rounding=ROUND_HALF_UP) * tick)
        return dict(self.prices)

    def latest(self, symbol: str) -> Decimal | None:
        return self.prices.get(symbol)
