"""Fan-out benchmark: our server (daphne, Redis layer, the real publish path) against the ceiling
(a plain `websockets` server broadcasting in process), same machine, same lean load client.

    python manage.py bench_fanout [--mode all|fanout|orders|scaleout] [--sizes 1000,5000] [--burst 20]

Needs PostgreSQL and Redis (DATABASE_URL, REDIS_URL). Modes:

- ``fanout``: per N, deliveries/s at full burst, p50/p99 publish→receipt at 2,000 deliveries/s,
  connections/s, RSS per idle connection, and the ratio ours/ceiling for each.
- ``orders``: REST order placement → the order update on the client's /ws/orders socket, at
  ``--order-rate`` orders/s (100) for ``--order-seconds`` (10): p50/p99, twice: with REST served
  by the daphne process that holds the socket (scripts/run's one process), and as deployed
  (deploy/): REST on the gunicorn workers of deploy/gunicorn.conf.py, the socket on daphne.
- ``scaleout``: two daphne processes behind the same Redis, the N sockets split between them,
  one publish path: deliveries/s and p50/p99 at 2,000 deliveries/s.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from rest_framework_simplejwt.tokens import AccessToken

from accounts.models import User
from broadcast.outbox import publish
from broadcast.rooms import system_room
from orders.models import OrderSession
from orders.services import order_session_create, order_session_revoke
from wire import envelope

ROOT = Path(__file__).resolve().parents[3]
BENCH = ROOT / "devtools" / "bench"  # the load clients and the reference servers
# One benchmark user stands in for thousands: its servers lift the per-account caps of its
# (enterprise) tier on sockets and order placements (docs/reference/settings.md#caps-per-account-tier).
UNCAPPED = {"CAP_WS_SOCKETS_ENTERPRISE": "0", "CAP_ORDERS_PER_MINUTE_ENTERPRISE": "0"}
RATE = 2000  # deliveries per second for the latency figures
RATE_SECONDS = 5


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def percentile(values: list[float], p: float) -> float:
    return round(values[min(len(values) - 1, int(p * len(values)))], 1) if values else float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Command(BaseCommand):
    help = "Benchmark WebSocket fan-out against a plain websockets broadcast ceiling."

    def add_arguments(self, parser):
        parser.add_argument("--mode", choices=("all", "fanout", "orders", "scaleout"), default="all")
        parser.add_argument("--sizes", default="1000,5000")
        parser.add_argument("--burst", type=int, default=20, help="messages per burst (each to every socket)")
        parser.add_argument("--order-rate", type=float, default=100.0)
        parser.add_argument("--order-seconds", type=float, default=10.0)
        parser.add_argument("--scaleout-size", type=int, default=2000, help="sockets, split over two processes")

    def handle(self, *args, mode, sizes, burst, order_rate, order_seconds, scaleout_size, **options):
        if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql" or not settings.REDIS_URL:
            raise CommandError("run the benchmark on PostgreSQL and Redis: set DATABASE_URL and REDIS_URL")
        settings.DEBUG = False
        user, _ = User.objects.update_or_create(username="bench-fanout", defaults={"tier": "enterprise"})
        token = str(AccessToken.for_user(user))
        if mode in ("all", "fanout"):
            rows = []
            for n in [int(x) for x in sizes.split(",")]:
                for target in ("ceiling", "axisor"):
                    self.stdout.write(f"N={n} {target} …")
                    rows.append({"n": n, "target": target, **self.run(target, n, burst, token)})
            self.report(rows)
        if mode in ("all", "orders"):
            self.stdout.write(f"orders: {order_rate:g}/s for {order_seconds:g} s …")
            self.report_orders(self.run_orders(order_rate, order_seconds))
        if mode in ("all", "scaleout"):
            self.stdout.write(f"scale-out: N={scaleout_size} over two processes …")
            self.report_scaleout(scaleout_size, self.run_scaleout(scaleout_size, burst, token))

    # ---- orders: REST placement → update on /ws/orders --------------------------------------

    def run_orders(self, rate: float, seconds: float) -> list[dict]:
        user, _ = User.objects.update_or_create(username="bench-orders", defaults={"tier": "enterprise"})
        for old in OrderSession.objects.filter(user=user, revoked_at__isnull=True):  # earlier runs' sessions
            order_session_revoke(session=old)
        session, secret = order_session_create(user=user)
        jwt = str(AccessToken.for_user(user))
        results = []
        for rest in ("daphne", "gunicorn"):
            server, port = self.start_server("axisor")
            web = None
            try:
                web = self.start_gunicorn() if rest == "gunicorn" else None
                rest_port = web[1] if web else port
                results.append(
                    {
                        "rest": rest,
                        **asyncio.run(self._orders(port, rest_port, session.session, secret, jwt, rate, seconds)),
                    }
                )
            finally:
                for proc in (server, web[0] if web else None):
                    if proc is not None:
                        proc.terminate()
                        proc.wait(timeout=30)
        return results

    def start_gunicorn(self) -> tuple[subprocess.Popen, int]:
        """The REST tier as deploy/ runs it: gunicorn with deploy/gunicorn.conf.py."""
        port = free_port()
        env = {**os.environ, **UNCAPPED, "GUNICORN_BIND": f"127.0.0.1:{port}", "DEBUG": "0", "AXISOR_BACKGROUND": "0"}
        log = ROOT / "var" / f"bench-gunicorn-{port}.log"
        log.parent.mkdir(exist_ok=True)
        with log.open("w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py")],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.time() + 60
        while True:  # up when it answers; the workers load the app before they accept
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    return proc, port
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise CommandError(f"gunicorn did not start: see {log}")
            time.sleep(0.2)

    async def _orders(
        self, port: int, rest_port: int, session: str, secret: str, jwt: str, rate: float, seconds: float
    ) -> dict:
        import websockets  # a test-stack dependency, like the load client

        arrived: dict[str, float] = {}
        url = f"ws://127.0.0.1:{port}/ws/orders?session={session}&token={secret}"
        async with websockets.connect(url, max_queue=None) as sock:

            async def read() -> None:
                async for raw in sock:
                    if raw == "PING":
                        continue
                    msg = json.loads(raw)
                    if "orderId" in msg:
                        arrived.setdefault(msg["orderId"], time.time())

            reader = asyncio.create_task(read())
            local = threading.local()

            def place(i: int) -> tuple[str | None, float]:
                conn = getattr(local, "conn", None)
                if conn is None:
                    conn = local.conn = http.client.HTTPConnection("127.0.0.1", rest_port, timeout=30)
                body = json.dumps(
                    {
                        "tradingSymbol": "BTC_USD",
                        "orderType": "LIMIT",
                        "transactionType": "BUY",
                        "quantity": "0.001",
                        "price": "1000.0",
                    }
                )  # fmt: skip  far below the market: rests
                started = time.time()
                conn.request(
                    "POST", "/api/orders", body, {"Authorization": f"Bearer {jwt}", "Content-Type": "application/json"}
                )
                response = conn.getresponse()
                raw = response.read()
                if response.status != 201:
                    self.stderr.write(f"  order refused: HTTP {response.status} {raw[:200]!r}")
                    return None, started
                return json.loads(raw)["orderId"], started

            loop = asyncio.get_running_loop()

            async def paced(count: int) -> list[tuple[str | None, float]]:
                t0 = time.time()
                futures = []
                for i in range(count):
                    await asyncio.sleep(max(0.0, t0 + i / rate - time.time()))  # paced, not a burst
                    futures.append(loop.run_in_executor(pool, place, i))
                placed = await asyncio.gather(*futures)
                deadline = time.time() + 30
                while time.time() < deadline and not all(oid in arrived for oid, _ in placed if oid):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
                return placed

            with ThreadPoolExecutor(max_workers=16) as pool:
                # Warm-up, not measured: every server thread and worker imports what a placement
                # needs and opens its pooled connections on its first requests.
                await paced(max(1, round(rate / 2)))
                count = max(1, round(rate * seconds))
                placed = await paced(count)
            reader.cancel()
        lat = sorted((arrived[oid] - started) * 1000 for oid, started in placed if oid and oid in arrived)
        return {
            "orders": count,
            "refused": sum(1 for oid, _ in placed if not oid),
            "missing": sum(1 for oid, _ in placed if oid and oid not in arrived),
            "p50": percentile(lat, 0.5),
            "p99": percentile(lat, 0.99),
        }

    def report_orders(self, results: list[dict]) -> None:
        self.stdout.write(
            "\nbench_fanout orders (REST POST /api/orders → update on /ws/orders, PostgreSQL + Redis; "
            "target: p99 ≤ 50 ms at 100 orders/s, as deployed)"
        )
        where = {
            "daphne": "REST on the socket's daphne process (scripts/run)",
            "gunicorn": "REST on gunicorn workers, socket on daphne (deploy/, as deployed)",
        }
        for r in results:
            self.stdout.write(
                f"  {where[r['rest']]}:\n    orders {r['orders']}  refused {r['refused']}  "
                f"missing updates {r['missing']}  p50 {r['p50']} ms  p99 {r['p99']} ms"
            )

    # ---- scale-out: two processes, one Redis -----------------------------------------------

    def run_scaleout(self, n: int, burst: int, token: str) -> dict:
        servers = [self.start_server("axisor") for _ in range(2)]
        clients = []
        try:
            for i, (_, port) in enumerate(servers):
                share = n // 2 + (n % 2 if i == 0 else 0)
                clients.append(subprocess.Popen(
                    [sys.executable, str(BENCH / "fanout_client.py"), f"ws://127.0.0.1:{port}/ws", token, str(share)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                ))  # fmt: skip
            readies = [json.loads(c.stdout.readline()) for c in clients]

            def measure(count: int, rate: float) -> list[dict]:
                for c in clients:
                    c.stdin.write(json.dumps({"cmd": "expect", "count": count}) + "\n")
                    c.stdin.flush()
                self.publish("axisor", 0, count, rate)
                return [json.loads(c.stdout.readline()) for c in clients]

            full = measure(burst, 0)
            per_second = RATE / n
            paced = measure(max(2, round(per_second * RATE_SECONDS)), per_second)
            for c in clients:
                c.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                c.stdin.flush()
                c.wait(timeout=60)
            return {
                "failed": sum(r["failed"] for r in readies),
                "deliveries": sum(r["perSecond"] for r in full),
                "lost": sum(r["expected"] - r["received"] for r in full),
                "p50": max(r["p50ms"] for r in paced),
                "p99": max(r["p99ms"] for r in paced),
            }
        finally:
            for server, _ in servers:
                server.terminate()
                server.wait(timeout=30)

    def report_scaleout(self, n: int, r: dict) -> None:
        self.stdout.write(
            f"\nbench_fanout scale-out (two daphne processes, one Redis, N={n} split evenly)\n"
            f"  deliveries/s {r['deliveries']}  lost {r['lost']}  failed sockets {r['failed']}  "
            f"p50 {r['p50']} ms  p99 {r['p99']} ms (worse of the two processes, at {RATE:,} deliveries/s)"
        )

    def start_server(self, target: str):
        env = {**os.environ, **UNCAPPED, "AXISOR_BACKGROUND": "0", "LOG_LEVEL": "INFO", "DEBUG": "0"}
        if target == "ceiling":
            port = free_port()
            cmd = [sys.executable, str(BENCH / "ceiling_server.py"), str(port)]
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
        log = ROOT / "var" / f"bench-{target}-{port}.log"  # the server's errors, if any, for a look afterwards
        log.parent.mkdir(exist_ok=True)

        def drain() -> None:
            with log.open("w") as out:
                for line in proc.stderr:
                    if '" 20' not in line and "WSCONNECT" not in line and "WSDISCONNECT" not in line:
                        out.write(line)

        threading.Thread(target=drain, daemon=True).start()
        if target == "axisor":
            # One request before any measurement, as deploy/run-daphne.sh makes: what a process
            # sets up on its first request or socket is not timed as part of the first connects.
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            conn.close()
        return proc, port

    def run(self, target: str, n: int, burst: int, token: str) -> dict:
        server, port = self.start_server(target)
        try:
            base = rss_kb(server.pid)
            url = f"ws://127.0.0.1:{port}/" if target == "ceiling" else f"ws://127.0.0.1:{port}/ws"
            client = subprocess.Popen(
                [sys.executable, str(BENCH / "fanout_client.py"), url, "-" if target == "ceiling" else token, str(n)],
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
            publish(room=system_room(), event=envelope("bench", "system", {"i": i, "t": time.time(), "pad": "x" * 40}))
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
