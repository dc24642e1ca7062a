"""Price sources for ``ticks_ingest``: a random walk per instrument (its own volatility) and CSV
replay (``symbol,price,volume[,timestamp]`` per line)."""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal

from .models import Instrument
from .selectors import latest_prices


class RandomWalkFeed:
    def __init__(self, seed: int | None = None) -> None:
        self.rng = random.Random(seed)
        self.instruments = {i.symbol: i for i in Instrument.objects.filter(active=True)}
        self.prices = {s: p for s, p in latest_prices().items() if s in self.instruments}

    def ticks(self) -> list[dict]:
        """One tick per instrument."""
        out = []
        for symbol, inst in self.instruments.items():
            moved = self.prices[symbol] * Decimal(str(1 + self.rng.gauss(0, float(inst.volatility))))
            price = max(
                inst.tick_size, (moved / inst.tick_size).quantize(Decimal(1), rounding=ROUND_HALF_UP) * inst.tick_size
            )
            self.prices[symbol] = price
            volume = (inst.lot_size * self.rng.randint(1, 200)).normalize()
            out.append({"symbol": symbol, "price": str(price), "volume": str(volume)})
        return out


def csv_ticks(path: str) -> Iterator[dict]:
    with open(path, newline="") as handle:
        for row in csv.reader(handle):
            if not row or row[0].startswith("#") or row[0] == "symbol":
                continue
            tick = {"symbol": row[0], "price": row[1], "volume": row[2] if len(row) > 2 else "0"}
            if len(row) > 3 and row[3]:
                tick["timestamp"] = row[3]
            yield tick
