"""Fan-out benchmark: our server (daphne, Redis layer, the real publish path) against the ceiling
(a plain `websockets` server broadcasting in process), same machine, same lean load client.

    python manage.py bench_fanout [--sizes 1000,5000] [--burst 20]

Needs PostgreSQL and Redis (DATABASE_URL, REDIS_URL). Prints, per N: deliveries/s at full burst,
p50/p99 publish→receipt at 2,000 deliveries/s, connections/s, RSS per idle connection, and the
ratio ours/ceiling for each.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from rest_framework_simplejwt.tokens import AccessToken

from accounts.models import User
from axisor.realtime.publish import publish
from axisor.realtime.rooms import system_room

ROOT = Path(__file__).resolve().parents[4]
RATE = 2000  # deliveries per second for the latency figures
RATE_SECONDS = 5


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Command(BaseCommand):
    help = "Benchmark WebSocket fan-out against a plain websockets broadcast ceiling."

    def add_arguments(self, parser):
        parser.add_argument("--sizes", default="1000,5000")
        parser.add_argument("--burst", type=int, default=20, help="messages per burst (each to every socket)")

    def handle(self, *args, sizes, burst, **options):
        if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql" or not settings.REDIS_URL:
            raise CommandError("run the benchmark on PostgreSQL and Redis: set DATABASE_URL and REDIS_URL")
        settings.DEBUG = False
        user, _ = User.objects.get_or_create(username="bench-fanout")
        token = str(AccessToken.for_user(user))
        rows = []
        for n in [int(x) for x in sizes.split(",")]:
            for target in ("ceiling", "axisor"):
                self.stdout.write(f"N={n} {target} …")
                rows.append({"n": n, "target": target, **self.run(target, n, burst, token)})
        self.report(rows)

    def start_server(self, target: str):
        env = {**os.environ, "AXISOR_BACKGROUND": "0", "LOG_LEVEL": "INFO", "DEBUG": "0"}
        if target == "ceiling":
            port = free_port()
            cmd = [sys.executable, str(ROOT / "bench" / "ceiling_server.py"), str(port)]
        else:
            # Twisted's listen backlog defaults to 50: a burst of connects overflows it and waits
            # out SYN retransmits. Both servers get the same backlog (deploy/run-daphne.sh too).
            endpoint = "tcp:port=0:interface=127.0.0.1:backlog=1024"
            cmd = [sys.executable, "-m", "daphne", "-e", endpoint, "axisor.asgi:application"]
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for line in proc.stderr:
            if "Listening on TCP address" in line:
                port = int(line.strip().rsplit(":", 1)[1])
                break
        else:
            raise CommandError(f"{target} server did not start")
        threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
        return proc, port

    def run(self, target: str, n: int, burst: int, token: str) -> dict:
        server, port = self.start_server(target)
        try:
            base = rss_kb(server.pid)
            url = f"ws://127.0.0.1:{port}/" if target == "ceiling" else f"ws://127.0.0.1:{port}/ws"
            client = subprocess.Popen(
                [sys.executable, str(ROOT / "bench" / "fanout_client.py"), url, "-" if target == "ceiling" else token, str(n)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            ready = json.loads(client.stdout.readline())
            if ready["failed"]:
                self.stdout.write(f"  {ready['failed']} of {n} sockets failed to connect: {ready['error']}")
            idle_kb = (rss_kb(server.pid) - base) / n

            def measure(count: int, rate: float) -> dict:
                client.stdin.write(json.dumps({"cmd": "expect", "count": count}) + "\n")
                client.stdin.flush()
                self.publish(target, port, count, rate)
                return json.loads(client.stdout.readline())

            full = measure(burst, 0)
            per_second = RATE / n
            paced = measure(max(2, round(per_second * RATE_SECONDS)), per_second)
            client.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            client.stdin.flush()
            client.wait(timeout=60)
            return {
                "deliveries": full["perSecond"],
                "lost": full["expected"] - full["received"],
                "p50": paced["p50ms"],
                "p99": paced["p99ms"],
                "connects": ready["connectPerSecond"],
                "failed": ready["failed"],
                "idleKb": round(idle_kb, 1),
            }
        finally:
            server.terminate()
            server.wait(timeout=30)

    def publish(self, target: str, port: int, count: int, rate: float) -> None:
        if target == "ceiling":
            urlws = f"ws://127.0.0.1:{port}/publish?count={count}&rate={rate}"
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    f"import asyncio,websockets\nasync def m():\n async with websockets.connect({urlws!r}) as w: await w.recv()\nasyncio.run(m())",
                ],
                check=True,
            )
            return
        for i in range(count):
            publish(
                room=system_room(), type="bench", channel="system", data={"i": i, "t": time.time(), "pad": "x" * 40}
            )
            if rate:
                time.sleep(1 / rate)

    def report(self, rows: list[dict]) -> None:
        by = {(r["n"], r["target"]): r for r in rows}
        lines = ["", "bench_fanout results (ours = daphne + RedisPubSubChannelLayer + room hubs; ceiling = websockets.broadcast)",
                 f"{'N':>6} {'':8} {'deliveries/s':>13} {'lost':>6} {'p50 ms':>8} {'p99 ms':>8} {'conn/s':>8} {'KB/idle':>8}"]  # fmt: skip
        for n in sorted({r["n"] for r in rows}):
            for target in ("ceiling", "axisor"):
                r = by[(n, target)]
                lines.append(
                    f"{n:>6} {target:8} {r['deliveries']:>13} {r['lost']:>6} {r['p50']:>8} {r['p99']:>8} {r['connects']:>8} {r['idleKb']:>8}"
                )
            c, o = by[(n, "ceiling")], by[(n, "axisor")]
            lines.append(
                f"{n:>6} {'ratio':8} {o['deliveries'] / c['deliveries']:>13.2f} {'':>6} {o['p99'] / max(c['p99'], 0.1):>17.2f} "
                f"{o['connects'] / c['connects']:>8.2f} {o['idleKb'] / max(c['idleKb'], 0.1):>8.2f}"
            )
        lines.append("targets: deliveries ≥ 0.6× ceiling; p99 ≤ 2× ceiling's; conn/s ≥ 0.4×; KB/idle ≤ 2.5×")
        self.stdout.write("\n".join(lines))
