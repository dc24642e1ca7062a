"""Margin Guard benchmark: POSITIONS open positions over SYMBOLS instruments, then ticks through the
real ingest path (``ticks_ingest``: candles, snapshot, alerts, and ``positions_evaluate``), and
prints the cost of a tick and the sustained rate. Prices random-walk through the positions' guard
and liquidation prices, so guards fire and positions liquidate while it runs.

    python manage.py bench_margin [--positions 100000] [--symbols 10] [--users 10000] [--ticks 2000]
                                  [--seconds 20] [--connected 0]

Run it on PostgreSQL (DATABASE_URL). It creates its own instruments (MB00…) and users (bench-margin-…)
and replaces their positions on every run. ``--connected N`` marks N holders as having a live socket,
so every tick also sweeps their positions into position_status_update (through the channel layer).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from decimal import Decimal

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

import margin.ticks
from accounts.models import User
from broadcast import presence
from margin.formula import liquidation_price, price_at_distance
from margin.models import DEFAULT_THRESHOLD, MarginGuardConfig, MarginGuardExecution, Position
from margin.ticks import ticks_ingest
from market.models import Instrument, MarketState

M = Decimal("0.005")
START = 100.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Command(BaseCommand):
    help = "Benchmark Margin Guard evaluation on ticks with 100,000 open positions."

    def add_arguments(self, parser):
        parser.add_argument("--positions", type=int, default=100_000)
        parser.add_argument("--symbols", type=int, default=10)
        parser.add_argument("--users", type=int, default=10_000)
        parser.add_argument("--ticks", type=int, default=2000, help="single-tick calls for the per-tick figures")
        parser.add_argument("--seconds", type=float, default=20.0, help="length of the sustained run")
        parser.add_argument("--connected", type=int, default=0, help="holders with a (simulated) live socket")
        parser.add_argument(
            "--volatility",
            type=float,
            default=0.00005,
            help="relative standard deviation of one tick's move (BTC at 3 %% a day and 20 ticks/s is ~0.00002)",
        )

    def handle(self, *args, positions, symbols, users, ticks, seconds, connected, volatility, **options):
        settings.DEBUG = False
        if connection.vendor != "postgresql":
            raise CommandError("run the benchmark on PostgreSQL: set DATABASE_URL")
        if positions > users * symbols:
            raise CommandError(f"--positions {positions} is more than one per user and symbol ({users} x {symbols})")
        t0 = time.perf_counter()
        instruments = self.setup(positions, symbols, users)
        self.stdout.write(
            f"{positions} open positions over {symbols} symbols and {users} users created in "
            f"{time.perf_counter() - t0:.1f} s"
        )
        self.evaluations: list[float] = []
        self.quiet: list[float] = []  # evaluations of calls that changed no position's state
        self.changed: list[float] = []
        self.outcomes = {"candidates": 0, "liquidated": 0, "fired": 0}
        original = margin.ticks.positions_evaluate

        def timed(**kw):
            start = time.perf_counter()
            result = original(**kw)
            ms = (time.perf_counter() - start) * 1000
            self.evaluations.append(ms)
            (self.changed if result["fired"] or result["liquidated"] else self.quiet).append(ms)
            for key in self.outcomes:
                self.outcomes[key] += result[key]
            return result

        margin.ticks.positions_evaluate = timed  # the tick pipeline looks it up at call time
        try:
            asyncio.run(self.run(instruments, ticks, seconds, connected, volatility))
        finally:
            margin.ticks.positions_evaluate = original

    def setup(self, count: int, symbols: int, users: int) -> list[Instrument]:
        names = [f"MB{i:02d}" for i in range(symbols)]
        for name in names:
            Instrument.objects.update_or_create(
                symbol=name,
                defaults={"exchange": "BENCH", "tick_size": Decimal("0.01"), "lot_size": Decimal("1"),
                          "max_leverage": 100, "maintenance_margin_rate": M, "reference_price": Decimal(START),
                          "volatility": Decimal("0.001"), "active": True},
            )  # fmt: skip
        instruments = list(Instrument.objects.filter(symbol__in=names).order_by("symbol"))
        MarketState.objects.filter(instrument__in=instruments).delete()
        Position.objects.filter(instrument__in=instruments).delete()
        prefix = "bench-margin-"
        have = set(User.objects.filter(username__startswith=prefix).values_list("username", flat=True))
        password = make_password(None)
        User.objects.bulk_create(
            [User(username=f"{prefix}{i}", password=password) for i in range(users) if f"{prefix}{i}" not in have],
            batch_size=5000,
        )
        user_ids = list(
            User.objects.filter(username__startswith=prefix).order_by("id").values_list("id", flat=True)[:users]
        )
        MarginGuardConfig.objects.filter(user_id__in=user_ids).delete()  # the defaults: on, 0.85, notify
        MarginGuardExecution.objects.filter(user_id__in=user_ids).delete()
        band = Decimal(str(settings.AXISOR_MARGIN["REARM_BAND"]))
        rng = random.Random(3)
        rows, seen = [], set()
        while len(rows) < count:
            user_id, instrument = rng.choice(user_ids), rng.choice(instruments)
            if (user_id, instrument.pk) in seen:
                continue  # one open position per user and instrument
            side = rng.choice(("long", "short"))
            leverage = Decimal(rng.choice((2, 3, 5, 10, 20, 25, 50, 75, 100)))
            # Opened earlier at another price: place the entry so that at the starting price the
            # position is `distance` from liquidation (0.9 .. 3; none at risk, some close to it).
            distance = rng.uniform(0.9, 3.0)
            room = (distance - 1) * float(1 / leverage - M)
            entry_f = START / (1 + room) if side == "long" else START / (1 - room)
            if not 0.7 * START <= entry_f <= 1.3 * START:
                continue
            entry = Decimal(f"{entry_f:.2f}")
            liq = liquidation_price(side, entry, leverage, M)
            seen.add((user_id, instrument.pk))
            rows.append(
                Position(
                    user_id=user_id, instrument=instrument, side=side, quantity=Decimal(rng.randint(1, 10)),
                    entry_price=entry, leverage=leverage, liquidation_price=liq,
                    guard_price=price_at_distance(entry, liq, DEFAULT_THRESHOLD),
                    rearm_price=price_at_distance(entry, liq, min(Decimal(1), DEFAULT_THRESHOLD + band)),
                )
            )  # fmt: skip
        Position.objects.bulk_create(rows, batch_size=5000)
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM ANALYZE {Position._meta.db_table}")  # the previous run's rows are dead tuples
        self.user_ids, self.created = user_ids, len(rows)
        return instruments

    async def run(
        self, instruments: list[Instrument], ticks: int, seconds: float, connected: int, volatility: float
    ) -> None:
        if connected:
            await self.mark_online(self.user_ids[:connected])
        ingest = database_sync_to_async(ticks_ingest)
        rng = random.Random(11)
        prices = {i.symbol: START for i in instruments}

        def step(symbol: str) -> dict:
            prices[symbol] = max(50.0, min(150.0, prices[symbol] * (1 + rng.gauss(0, volatility))))
            return {"symbol": symbol, "price": f"{prices[symbol]:.2f}", "volume": "1"}

        # first prices (snapshot rows exist from here on), at the start price
        await ingest([{"symbol": i.symbol, "price": f"{START:.2f}", "volume": "1"} for i in instruments])
        self.evaluations.clear()
        self.quiet.clear()
        self.changed.clear()
        for key in self.outcomes:
            self.outcomes[key] = 0

        # 1. One tick per call, symbols in turn: the cost of one tick of one symbol.
        per_symbol: dict[str, list[float]] = {i.symbol: [] for i in instruments}
        for n in range(ticks):
            symbol = instruments[n % len(instruments)].symbol
            start = time.perf_counter()
            await ingest([step(symbol)])
            per_symbol[symbol].append((time.perf_counter() - start) * 1000)
        every = [ms for values in per_symbol.values() for ms in values]
        evaluation = list(self.evaluations)
        quiet, changed = list(self.quiet), list(self.changed)
        single = dict(self.outcomes)

        # 2. Sustained: calls of one tick per symbol, back to back, for `seconds`.
        self.evaluations.clear()
        for key in self.outcomes:
            self.outcomes[key] = 0
        loop = asyncio.get_running_loop()
        began, done, calls = loop.time(), 0, []
        while loop.time() - began < seconds:
            start = time.perf_counter()
            await ingest([step(i.symbol) for i in instruments])
            calls.append((time.perf_counter() - start) * 1000)
            done += len(instruments)
        elapsed = loop.time() - began
        sustained = dict(self.outcomes)

        lines = [
            "bench_margin results",
            f"  open positions at start {self.created}, one tick moves the price by N(0, {volatility:g})"
            f"  ({len(instruments)} symbols, {len(self.user_ids)} users, {connected} holders online)",
            "  one tick per call (ticks_ingest: tick row, candles, snapshot, alerts, positions):",
            f"    all symbols           p50 {statistics.median(every):.2f} ms  p99 {pct(every, 0.99):.2f} ms  ({len(every)} ticks)",
            f"    positions_evaluate    p50 {statistics.median(evaluation):.2f} ms  p99 {pct(evaluation, 0.99):.2f} ms",
            f"      ticks that changed no position ({len(quiet)}): p50 {statistics.median(quiet or [0]):.2f} ms"
            f"  p99 {pct(quiet or [0], 0.99):.2f} ms",
            f"      ticks that fired a guard or liquidated ({len(changed)}): p50 {statistics.median(changed or [0]):.2f} ms"
            f"  p99 {pct(changed or [0], 0.99):.2f} ms",
            f"    guard runs {single['fired']}, liquidations {single['liquidated']}, positions read {single['candidates']}"
            f" ({single['candidates'] / max(1, len(every)):.1f} per tick)",
        ]  # fmt: skip
        for symbol, values in per_symbol.items():
            lines.append(
                f"    {symbol}                  p50 {statistics.median(values):.2f} ms  p99 {pct(values, 0.99):.2f} ms"
            )
        lines += [
            f"  sustained, {len(instruments)} ticks per call (one per symbol), back to back for {elapsed:.0f} s:",
            f"    ticks/s               {done / elapsed:.0f}  ({done} ticks, {len(calls)} calls)",
            f"    ms per call           p50 {statistics.median(calls):.2f}  p99 {pct(calls, 0.99):.2f}",
            f"    positions_evaluate    p50 {statistics.median(self.evaluations):.2f} ms  p99 {pct(self.evaluations, 0.99):.2f} ms per call",
            f"    guard runs {sustained['fired']}, liquidations {sustained['liquidated']}, positions read {sustained['candidates']}",
        ]  # fmt: skip
        self.stdout.write("\n".join(lines))

    async def mark_online(self, user_ids: list[int]) -> None:
        for user_id in user_ids:
            await presence.join(user_id, "/ws", f"bench.{user_id}")
