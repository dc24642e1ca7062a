"""Market-data benchmark: feeds SYMBOLS symbols at RATE ticks/s into SUBSCRIBERS sockets on a real
daphne process, with ALERTS active price alerts, and prints the figures. Run it on PostgreSQL and
Redis (DATABASE_URL, REDIS_URL); it creates its own instruments (BX00…), user and alerts.

    python manage.py bench_market [--symbols 50] [--rate 200] [--subscribers 1000] [--alerts 100000] [--seconds 10]
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

from channels.db import database_sync_to_async
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from accounts.models import User
from accounts.tokens import AccessToken
from margin.ticks import ticks_ingest
from market.models import Instrument, PriceAlert

ROOT = Path(__file__).resolve().parents[3]
BENCH = ROOT / "devtools" / "bench"  # the load clients and the reference servers


def rss_peak_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


class Command(BaseCommand):
    help = "Benchmark market-data ingest and fan-out against a real daphne process."

    def add_arguments(self, parser):
        parser.add_argument("--symbols", type=int, default=50)
        parser.add_argument("--rate", type=float, default=200.0, help="ticks per second, all symbols together")
        parser.add_argument("--subscribers", type=int, default=1000)
        parser.add_argument("--alerts", type=int, default=100_000)
        parser.add_argument("--seconds", type=float, default=10.0)

    def handle(self, *args, symbols, rate, subscribers, alerts, seconds, **options):
        settings.DEBUG = False  # no per-query bookkeeping while measuring
        if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql" or not settings.REDIS_URL:
            raise CommandError("run the benchmark on PostgreSQL and Redis: set DATABASE_URL and REDIS_URL")
        names = [f"BX{i:02d}" for i in range(symbols)]
        for name in names:
            Instrument.objects.update_or_create(
                symbol=name,
                defaults={"exchange": "BENCH", "tick_size": Decimal("0.01"), "lot_size": Decimal("1"), "max_leverage": 10,
                          "maintenance_margin_rate": Decimal("0.01"), "reference_price": Decimal("100"), "active": True},
            )  # fmt: skip
        # One user stands in for every subscriber: enterprise, its server without the socket cap.
        user, _ = User.objects.update_or_create(username="bench-market", defaults={"tier": "enterprise"})
        PriceAlert.objects.filter(user=user).delete()
        instruments = list(Instrument.objects.filter(symbol__in=names))
        rng = random.Random(7)
        # Thresholds outside the band the feed moves in (60..180): every tick evaluates them, none fires.
        sides = {"above": (200, 400), "below": (1, 50), "crosses": (200, 400)}
        conditions = [rng.choice(list(sides)) for _ in range(alerts)]
        PriceAlert.objects.bulk_create(
            [PriceAlert(user=user, instrument=rng.choice(instruments), condition=c,
                        price=Decimal(rng.uniform(*sides[c])).quantize(Decimal("0.01"))) for c in conditions],
            batch_size=5000,
        )  # fmt: skip
        token = str(AccessToken.for_user(user))
        server = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", "0", "axisor.asgi:application"],
            cwd=ROOT, env={**os.environ, "CAP_WS_SOCKETS_ENTERPRISE": "0", "CAP_WS_MESSAGES_PER_SECOND_ENTERPRISE": "0",
                          "AXISOR_BACKGROUND": "0", "LOG_LEVEL": "INFO",
                          "DEBUG": "0"},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            port = None
            for line in server.stderr:
                if "Listening on TCP address" in line:
                    port = int(line.rsplit(":", 1)[1])
                    break
            if port is None:
                raise CommandError("daphne did not start")
            threading.Thread(target=lambda: [None for _ in server.stderr], daemon=True).start()  # keep the pipe drained
            self.stdout.write(
                f"daphne pid {server.pid} on port {port}; {alerts} active alerts; {subscribers} subscribers"
            )
            load = subprocess.Popen(
                [sys.executable, str(BENCH / "ws_load.py"), f"ws://127.0.0.1:{port}/ws", token,
                 str(subscribers), ",".join(names), str(seconds)],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            ready = json.loads(load.stdout.readline())
            self.stdout.write(f"connected {subscribers} sockets in {ready['connectSeconds']} s")
            timings = asyncio.run(self.feed(names, rate, seconds + 1.5))
            summary = json.loads(load.stdout.readline())
            load.wait(timeout=60)
            peak = rss_peak_kb(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=30)
        per_tick = sorted(timings["per_tick_ms"])
        self.stdout.write(
            "\n".join([
                "bench_market results",
                f"  ticks ingested/s        {timings['ticks'] / timings['seconds']:.1f}  (target {rate:g})",
                f"  ingest ms per tick      p50 {statistics.median(per_tick):.2f}  p99 {per_tick[int(0.99 * len(per_tick))]:.2f}  (with {alerts} active alerts)",
                f"  updates delivered/s     {summary['perSecond']}  ({summary['received']} in {summary['seconds']} s to {subscribers} sockets)",
                f"  tick→client latency     p50 {summary['p50ms']} ms  p99 {summary['p99ms']} ms",
                f"  connections/s           {summary['connectPerSecond']}",
                f"  server peak RSS         {peak / 1024:.1f} MiB",
            ])
        )  # fmt: skip

    async def feed(self, names: list[str], rate: float, seconds: float) -> dict:
        ingest = database_sync_to_async(ticks_ingest)
        prices = {name: 100.0 for name in names}
        rng = random.Random(11)
        batch = max(1, int(rate / 20))  # 20 batches per second
        interval = batch / rate
        per_tick, ticks = [], 0
        loop = asyncio.get_running_loop()
        start = loop.time()
        next_at = start
        while loop.time() - start < seconds:
            chunk = []
            for _ in range(batch):
                name = names[ticks % len(names)]
                prices[name] = max(60.0, min(180.0, prices[name] * (1 + rng.gauss(0, 0.001))))
                chunk.append(
                    {
                        "symbol": name,
                        "price": f"{prices[name]:.2f}",
                        "volume": "1",
                        "timestamp": timezone.now().isoformat(),
                    }
                )
                ticks += 1
            t0 = time.perf_counter()
            await ingest(chunk)
            per_tick.append((time.perf_counter() - t0) * 1000 / len(chunk))
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))
        return {"ticks": ticks, "seconds": loop.time() - start, "per_tick_ms": per_tick}
