"""Fan-out benchmark: our server (on daphne, and on uvicorn) against five references on the same
machine, each measured by the same lean load client (picows on uvloop, its own process, its CPU
checked) in the same command.

    python manage.py bench_fanout [--mode all|fanout|orders|scaleout] [--sizes 1000,5000] \
        [--targets axisor,ceiling,picows,channels,node,daphne,uvicorn] [--runs 3] [--deliveries 100000] [--json PATH]

Needs PostgreSQL and Redis (DATABASE_URL, REDIS_URL). Modes:

- ``fanout``: per N and target, N sockets (for our server, a different user behind each socket,
  within its tier's socket cap), then a burst of at least ``--deliveries`` deliveries and
  2,000 deliveries/s for 5 s. Figures, each the median of ``--runs`` runs (a fresh server each)
  with its spread: server CPU µs per delivery (/proc of the server process: the headline), deliveries/s,
  p50/p99 publish→receipt at full burst and at the fixed rate, connections/s and server CPU per
  connect (over the connect storm; connections/s is marked † when the clients or the machine, not
  the server, bounded it), KB per idle socket
  (after one socket opened and closed: what a process sets up once is its first socket's, reported
  apart), and the client's CPU (over 70 % of a core marks the run client-bound). Targets: ``axisor`` (ours:
  daphne, Redis pub/sub layer, room hubs, the real publish path), ``ceiling`` (a `websockets`
  server on uvloop calling ``broadcast()`` in process), ``picows`` (a picows server on uvloop,
  a faster Python ceiling), ``channels`` (stock Channels under daphne: an ``AsyncWebsocketConsumer``
  in one group, ``group_send`` on ``RedisPubSubChannelLayer``), ``node`` (Node's ``ws``
  broadcast: a reference from outside Python, ws from clients/js/node_modules), ``daphne`` (daphne
  tuned as ours runs it, serving a bare ASGI application that accepts and broadcasts with daphne's
  stock ``websocket.send``: what a connect costs the socket server alone), ``uvicorn`` (ours,
  the same application, on uvicorn instead of daphne: what the socket server costs). ``--json PATH``
  writes every run and the summary to PATH and a plot to PATH with ``.png``.
- ``orders``: REST order placement → the order update on the client's /ws/orders socket, at
  ``--order-rate`` orders/s (100) for ``--order-seconds`` (10): p50/p99, twice: with REST served
  by the daphne process that holds the socket (scripts/run's one process), and as deployed
  (deploy/): REST on the gunicorn workers of deploy/gunicorn.conf.py, the socket on daphne. The
  orders go round ``--order-users`` (10) funded users, each with its own /ws/orders socket; their
  limit buys rest 5 % under the market. ``--order-ramp`` steps the rate up on gunicorn.
- ``scaleout``: ours on one daphne process, then on ``--processes`` (2) behind the same Redis,
  ``--scaleout-size`` sockets split between them, each event published once, run by run in turn:
  deliveries/s, server CPU per delivery (all processes), the cores the servers and the load
  clients used, p50/p99 at 2,000 deliveries/s, and the ratio of deliveries/s to one process.

Load clients: at least ``--client-procs`` processes, client k of a run connecting from 127.0.B.(k+1)
with B new for every run (its own ephemeral ports, none left in TIME_WAIT by an earlier run), so N
can reach what the open-file limit allows (the server needs one per socket: N = 19,000 under a
limit of 20,000).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.client
import itertools
import json
import math
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.core.management.base import BaseCommand, CommandError

from accounts.models import User
from accounts.tokens import AccessToken
from broadcast.outbox import publish
from broadcast.rooms import system_room
from devtools.bench import stats
from ledger.models import EntryKind
from ledger.selectors import account_balance
from ledger.services import ledger_post
from market.models import Instrument
from market.selectors import latest_prices
from orders.models import OrderSession
from orders.services import order_cancel_all, order_session_create, order_session_revoke
from wire import envelope

ROOT = Path(__file__).resolve().parents[3]
BENCH = ROOT / "devtools" / "bench"  # the load client and the reference servers
# The node reference's `ws`: the JS client's pinned devDependency, which scripts/bootstrap installs
# (npm ci), so the benchmark adds no package of its own.
NODE_MODULES = ROOT / "clients" / "js" / "node_modules"
# The orders mode's one user places orders for thousands: its servers lift the per-account caps of
# its (enterprise) tier on sockets, their messages and placements (docs/reference/settings.md#caps-per-account-tier).
# The fan-out sockets are each a user of their own and run under the caps.
UNCAPPED = {
    "CAP_WS_SOCKETS_ENTERPRISE": "0",
    "CAP_WS_MESSAGES_PER_SECOND_ENTERPRISE": "0",
    "CAP_ORDERS_PER_MINUTE_ENTERPRISE": "0",
    "CAP_WORKING_ORDERS_ENTERPRISE": "0",
}
RATE = 2000  # deliveries per second for the fixed-rate latency figures
RATE_SECONDS = 5
RAMP_P99_MS = 100.0  # the orders ramp: the highest rate placed with p99 within this is "sustained"
ORDERS_BALANCE = Decimal(10_000_000)  # the orders user's funds: every resting order is margined
TARGETS = ("axisor", "ceiling", "picows", "channels", "node", "daphne", "uvicorn")
REFERENCES = ("ceiling", "picows", "channels", "node", "daphne")
OURS = ("axisor", "uvicorn")  # our application, as deployed on daphne and on uvicorn
# References that make each message in process as they broadcast it: a burst never queues in them,
# while ours (and stock Channels) get the whole burst from Redis at once, so the burst's latency
# ratio against them says how long the queue is, not how fast a delivery is.
IN_PROCESS = ("ceiling", "picows", "node", "daphne")
LABELS = {
    "axisor": "ours (daphne + RedisPubSubChannelLayer + room hubs)",
    "uvicorn": "ours on uvicorn (uvloop, httptools, websockets sans-I/O) instead of daphne",
    "ceiling": "websockets.broadcast on uvloop",
    "picows": "picows broadcast on uvloop",
    "channels": "stock Channels (group_send, RedisPubSubChannelLayer, daphne)",
    "node": "Node's ws broadcast (WebSocketServer, a send per client)",
    "daphne": "daphne as ours runs it, a bare ASGI app: accept; broadcast by stock websocket.send per socket",
}
# Every figure of a (N, target) row, in the JSON and the table; lower is better for all but
# deliveries/s and connections/s.
FIGURES = (
    "serverCpuUsPerDelivery",
    "deliveriesPerSecond",
    "burstP50Ms",
    "burstP99Ms",
    "rateP50Ms",
    "rateP99Ms",
    "connectsPerSecond",
    "serverCpuMsPerConnect",
    "idleKbPerSocket",
    "firstSocketKb",
    "clientCores",
)
# The ratios ours / reference: not the client's cores, nor the first socket's one-time cost (the
# references' is a few KB, so its ratio says nothing).
RATIO_FIGURES = tuple(f for f in FIGURES if f not in ("clientCores", "firstSocketKb"))
HIGHER_IS_BETTER = {"deliveriesPerSecond", "connectsPerSecond"}
# The third byte of the load clients' source addresses, one per storm (from a random start: a
# command run right after another does not take its predecessor's addresses either).
SOURCE_BLOCKS = itertools.count(random.randrange(250))
# A server's line per request or connection (daphne's access log, uvicorn's WebSocket lines): not kept.
PER_CONNECTION_LOG = ('" 20', "WSCONNECT", "WSDISCONNECT", "[accepted]", "connection open", "connection closed")


def percentile(values: list[float], p: float) -> float:
    return round(values[min(len(values) - 1, int(p * len(values)))], 1) if values else float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@functools.cache  # asked once a command, not at every server start
def node_binary() -> str:
    """Node.js for the node reference, once its `ws` is installed; else what is missing and what installs it."""
    node = shutil.which("node")
    if node is None or not (NODE_MODULES / "ws").is_dir():
        missing = "Node.js (node on PATH)" if node is None else f"ws in {NODE_MODULES.relative_to(ROOT)}"
        raise CommandError(f"the node target needs {missing}: run scripts/bootstrap test")
    # The binary itself, not a version manager's shim that would run node as its child: the
    # server's CPU and memory are read from the pid this starts.
    found = subprocess.run([node, "-p", "process.execPath"], capture_output=True, text=True, timeout=30)
    return found.stdout.strip() if found.returncode == 0 and found.stdout.strip() else node


def tokens_for(users: list) -> str:
    """A file of fresh access tokens, one line per user (the lean client's TOKENS_FILE)."""
    handle, path = tempfile.mkstemp(prefix="bench-tokens-", suffix=".txt")
    with os.fdopen(handle, "w") as out:
        out.write("\n".join(str(AccessToken.for_user(u)) for u in users))
    return path


def lean_client(url: str, tokens: str, count: int, first_message: bool, source: str | None = None) -> subprocess.Popen:
    """A load client process (devtools/bench/lean_client.py) of ``count`` sockets to ``url``."""
    return subprocess.Popen(
        [sys.executable, str(BENCH / "lean_client.py"), url, tokens, str(count), "1" if first_message else "0",
         *([source] if source else [])],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip


def bench_text(i: int) -> str:
    """The references' message: the same shape and size as our `bench` event."""
    return json.dumps(
        {"type": "bench", "channel": "system", "data": {"i": i, "t": time.time(), "pad": "x" * 40}},
        separators=(",", ":"),  # compact, as our server writes its events
    )


@dataclass(frozen=True)
class Trader:
    """One user of the orders mode: its /ws/orders credentials and a JWT for REST."""

    user: User
    session: str
    secret: str
    jwt: str


class Command(BaseCommand):
    help = "Benchmark WebSocket fan-out: our server against websockets, picows, stock Channels and Node's ws."

    def add_arguments(self, parser):
        parser.add_argument("--mode", choices=("all", "fanout", "orders", "scaleout"), default="all")
        parser.add_argument("--sizes", default="1000,5000")
        parser.add_argument("--targets", default=",".join(TARGETS), help="of " + ",".join(TARGETS))
        parser.add_argument("--runs", type=int, default=3, help="runs per N and target; figures are their median")
        parser.add_argument(
            "--deliveries", type=int, default=100_000, help="at least this many deliveries per burst (messages × N)"
        )
        parser.add_argument("--json", dest="json_path", default="", help="write the results here, the plot beside")
        parser.add_argument("--rate-seconds", type=float, default=RATE_SECONDS, help="length of the fixed-rate run")
        parser.add_argument("--client-procs", type=int, default=1, help="load client processes (sockets split)")
        parser.add_argument("--order-rate", type=float, default=100.0)
        parser.add_argument("--order-seconds", type=float, default=10.0)
        parser.add_argument(
            "--order-users",
            type=int,
            default=10,
            help="the orders are spread over this many users, each with its /ws/orders socket (1: one user "
            "places them all, serialised by its account's lock)",
        )
        parser.add_argument(
            "--order-ramp",
            default="",
            help="orders/s to step through as deployed (REST on gunicorn), e.g. 100,200,400,800: the highest "
            f"with p99 ≤ {RAMP_P99_MS:g} ms and nothing refused, rejected or missing is reported",
        )
        parser.add_argument("--scaleout-size", type=int, default=2000, help="sockets, split over the processes")
        parser.add_argument(
            "--processes", type=int, default=2, help="scaleout: ours on this many processes against one"
        )

    def handle(self, *args, mode, sizes, targets, runs, deliveries, json_path, rate_seconds, client_procs,
               order_rate, order_seconds, order_ramp, order_users, scaleout_size, processes,
               **options):  # fmt: skip
        if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql" or not settings.REDIS_URL:
            raise CommandError("run the benchmark on PostgreSQL and Redis: set DATABASE_URL and REDIS_URL")
        chosen = [t for t in targets.split(",") if t]
        if unknown := set(chosen) - set(TARGETS):
            raise CommandError(f"unknown targets: {', '.join(sorted(unknown))}")
        if "node" in chosen and mode in ("all", "fanout"):
            node_binary()  # refused now, not after the other targets' runs
        settings.DEBUG = False
        self.client_procs = max(1, client_procs)
        self.rate_seconds = rate_seconds
        ns = [int(x) for x in sizes.split(",")]
        if mode in ("all", "fanout"):
            self.users(max(ns))
            runs_out: list[dict] = []
            for n in ns:
                messages = max(1, math.ceil(deliveries / n))
                for run in range(runs):
                    for target in chosen:  # targets interleaved, so the machine's swings hit all alike
                        self.stdout.write(f"N={n} {target} run {run + 1}/{runs} …")
                        one = self.run(target, n, messages)
                        runs_out.append({"n": n, "target": target, "run": run, **one})
                        self.stdout.write(
                            f"  {one['serverCpuUsPerDelivery']} µs CPU/delivery, {one['deliveriesPerSecond']} "
                            f"deliveries/s, client {one['clientCores']} cores{' CLIENT-BOUND' if one['clientBound'] else ''}; "
                            f"{one['serverCpuMsPerConnect']} ms CPU/connect, {one['connectsPerSecond']} conn/s"
                            f"{' (client- or machine-bound)' if one['connectBound'] else ''}"
                        )
                        if json_path:  # what is measured so far survives a run that fails later
                            done = self.summarise(runs_out, ns, chosen, runs, deliveries)
                            Path(json_path).write_text(json.dumps(done, indent=1))
            result = self.summarise(runs_out, ns, chosen, runs, deliveries)
            self.report(result)
            if json_path:
                Path(json_path).write_text(json.dumps(result, indent=1))
                self.plot(result, Path(json_path).with_suffix(".png"))
                self.stdout.write(f"wrote {json_path} and {Path(json_path).with_suffix('.png')}")
        if mode in ("all", "orders"):
            if order_users < 1:
                raise CommandError("--order-users must be at least 1")
            self.stdout.write(f"orders: {order_rate:g}/s for {order_seconds:g} s over {order_users} user(s) …")
            self.report_orders(self.run_orders(order_rate, order_seconds, order_users))
            if order_ramp:
                rates = [float(r) for r in order_ramp.split(",") if r]
                self.stdout.write(f"orders ramp: {order_ramp}/s for {order_seconds:g} s each …")
                self.report_ramp(self.run_orders(0, order_seconds, order_users, ramp=rates))
        if mode in ("all", "scaleout"):
            self.users(scaleout_size)
            scaled = self.run_scaleout(scaleout_size, max(2, processes), runs, deliveries)
            self.report_scaleout(scaled)
            if json_path:
                out = Path(json_path)
                out = out.with_name(f"{out.stem}-scaleout{out.suffix}") if mode == "all" else out
                out.write_text(json.dumps(scaled, indent=1))
                self.stdout.write(f"wrote {out}")

    # ---- users: one per socket ----------------------------------------------------------------

    def users(self, n: int) -> None:
        """At least n basic users `bench-fanout-<i>`, made once and kept for later runs."""
        have = User.objects.filter(username__startswith="bench-fanout-").count()
        if have < n:
            User.objects.bulk_create(
                [User(username=f"bench-fanout-{i}", password=make_password(None)) for i in range(have, n)],
                ignore_conflicts=True,
                batch_size=5000,
            )

    def tokens_file(self, n: int, part: int, parts: int) -> str:
        """A file of fresh access tokens for share `part` of n sockets (minted now: a run outlives none)."""
        return tokens_for(
            list(User.objects.filter(username__startswith="bench-fanout-").order_by("id")[:n])[part::parts]
        )

    # ---- orders: REST placement → update on /ws/orders --------------------------------------

    def run_orders(self, rate: float, seconds: float, users: int, ramp: list[float] | None = None) -> list[dict]:
        """Placement → update at ``rate`` with REST on daphne and on gunicorn; or, with ``ramp``,
        on gunicorn (as deployed) at each rate of it in turn, up to the first that misses the
        ramp's p99 (every higher one would too). The orders go round ``users`` users."""
        traders = []
        for k in range(users):
            name = "bench-orders" if k == 0 else f"bench-orders-{k}"
            user, _ = User.objects.update_or_create(username=name, defaults={"tier": "enterprise"})
            order_cancel_all(user=user)  # an earlier run's resting orders hold margin
            current, _ = account_balance(user_id=user.pk)
            if current < ORDERS_BALANCE:  # funded, so no placement is rejected for margin
                ledger_post(
                    user_id=user.pk, kind=EntryKind.DEPOSIT, amount=ORDERS_BALANCE - current, note="bench funds"
                )
            for old in OrderSession.objects.filter(user=user, revoked_at__isnull=True):  # earlier runs' sessions
                order_session_revoke(session=old)
            session, secret = order_session_create(user=user)
            traders.append(Trader(user, session.session, secret, str(AccessToken.for_user(user))))
        # A limit buy 5 % under the market rests (it neither fills nor leaves the exchange's price band).
        btc = Instrument.objects.get(symbol="BTC_USD")
        price = str((latest_prices()["BTC_USD"] * Decimal("0.95") // btc.tick_size) * btc.tick_size)
        results = []
        for rest in ("gunicorn",) if ramp else ("daphne", "gunicorn"):
            server, port = self.start_server("axisor", uncapped=True)
            web = None
            try:
                web = self.start_gunicorn() if rest == "gunicorn" else None
                rest_port = web[1] if web else port
                for r in ramp or [rate]:
                    for trader in traders:  # each step starts with no resting order
                        order_cancel_all(user=trader.user)
                    one = {"rest": rest, "rate": r, "users": users}
                    servers = [server.pid] + ([web[0].pid, *stats.children(web[0].pid)] if web else [])
                    one |= asyncio.run(self._orders(port, rest_port, traders, price, r, seconds, servers))
                    results.append(one)
                    if ramp:
                        self.stdout.write(
                            f"  {r:g}/s: p50 {one['p50']} ms, p99 {one['p99']} ms, {one['achieved']}/s placed"
                        )
                        if not self.sustained(one):
                            break
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
        self,
        port: int,
        rest_port: int,
        traders: list[Trader],
        price: str,
        rate: float,
        seconds: float,
        servers: list[int],
    ) -> dict:
        """``servers``: the pids whose CPU is the server's (daphne, gunicorn's master and workers);
        the client's is this process's (its event loop, its socket readers, its 16 HTTP threads)."""
        import websockets  # a test-stack dependency, like the load client

        arrived: dict[str, float] = {}
        async with contextlib.AsyncExitStack() as stack:
            socks = [
                await stack.enter_async_context(
                    websockets.connect(
                        f"ws://127.0.0.1:{port}/ws/orders?session={t.session}&token={t.secret}", max_queue=None
                    )
                )
                for t in traders
            ]

            async def read(sock) -> None:
                async for raw in sock:
                    if raw == "PING":
                        continue
                    msg = json.loads(raw)
                    if "orderId" in msg:
                        arrived.setdefault(msg["orderId"], time.time())

            readers = [asyncio.create_task(read(sock)) for sock in socks]
            local = threading.local()

            rejected = []  # placed (201) but rejected by the pre-trade check: not what is measured

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
                        "price": price,
                    }
                )  # fmt: skip
                started = time.time()
                jwt = traders[i % len(traders)].jwt
                conn.request(
                    "POST", "/api/orders", body, {"Authorization": f"Bearer {jwt}", "Content-Type": "application/json"}
                )
                response = conn.getresponse()
                raw = response.read()
                if response.status != 201:
                    self.stderr.write(f"  order refused: HTTP {response.status} {raw[:200]!r}")
                    return None, started
                answer = json.loads(raw)
                if answer.get("orderStatus") == "REJECTED":
                    rejected.append(answer.get("rejectionReason"))
                return answer["orderId"], started

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
                cpu = {pid: stats.cpu_seconds(pid) for pid in [os.getpid(), *servers]}
                database = stats.cpu_of(stats.named("postgres"))  # every backend, the pool's included
                wall = time.monotonic()
                placed = await paced(count)
                wall = time.monotonic() - wall
                cpu = {pid: stats.cpu_seconds(pid) - used for pid, used in cpu.items()}
                after = stats.cpu_of(stats.named("postgres"))
                database_cpu = sum(used - database.get(pid, 0.0) for pid, used in after.items())
            for reader in readers:
                reader.cancel()
        lat = sorted((arrived[oid] - started) * 1000 for oid, started in placed if oid and oid in arrived)
        starts = [started for _, started in placed]  # when a client thread began each request
        span = max(starts) - min(starts)
        return {
            "orders": count,
            "refused": sum(1 for oid, _ in placed if not oid),
            "rejected": len(rejected),
            "missing": sum(1 for oid, _ in placed if oid and oid not in arrived),
            "p50": percentile(lat, 0.5),
            "p99": percentile(lat, 0.99),
            # the rate the requests really went out at: below the one asked when the server (or
            # the client's 16 threads) could not keep up
            "achieved": round((count - 1) / span, 1) if span > 0 else float(count),
            # the measured window (the placements and their updates' arrival): server CPU per order,
            # PostgreSQL's (every postgres process of the machine) and whether the client may have
            # been the limit
            "serverCpuMsPerOrder": round(1000 * sum(cpu[pid] for pid in servers) / count, 2),
            "databaseCpuMsPerOrder": round(1000 * database_cpu / count, 2),
            "clientCores": round(stats.cores(cpu[os.getpid()], wall), 2),
            "clientBound": stats.client_bound(cpu[os.getpid()], wall),
        }

    def sustained(self, one: dict) -> bool:
        return (
            one["refused"] == 0
            and one["rejected"] == 0
            and one["missing"] == 0
            and not one["clientBound"]  # a step the client limited says nothing of the server
            and one["p99"] <= RAMP_P99_MS
            and one["achieved"] >= 0.95 * one["rate"]
        )

    def report_ramp(self, results: list[dict]) -> None:
        self.stdout.write(
            f"\nbench_fanout orders ramp (as deployed: REST on gunicorn, socket on daphne; sustained = p99 ≤ "
            f"{RAMP_P99_MS:g} ms, nothing refused, rejected or missing, ≥ 95 % of the rate placed, the client not "
            "the limit; "
            f"{results[0]['users'] if results else 0} user(s))"
        )
        for r in results:
            self.stdout.write(
                f"  {r['rate']:>6g}/s  placed {r['achieved']}/s  refused {r['refused']}  rejected {r['rejected']}  "
                f"missing {r['missing']}  p50 {r['p50']} ms  p99 {r['p99']} ms  {self.cpu_text(r)}"
                f"{'' if self.sustained(r) else '  (not sustained)'}"
            )
        best = max((r["rate"] for r in results if self.sustained(r)), default=None)
        self.stdout.write(f"  highest sustained rate: {f'{best:g} orders/s' if best else 'none of these'}")

    def report_orders(self, results: list[dict]) -> None:
        self.stdout.write(
            "\nbench_fanout orders (REST POST /api/orders → update on /ws/orders, PostgreSQL + Redis; "
            "target: p99 ≤ 20 ms at 100 orders/s, as deployed)"
        )
        where = {
            "daphne": "REST on the socket's daphne process (scripts/run)",
            "gunicorn": "REST on gunicorn workers, socket on daphne (deploy/, as deployed)",
        }
        for r in results:
            self.stdout.write(
                f"  {where[r['rest']]}, {r['users']} user(s):\n    orders {r['orders']}  refused {r['refused']}  "
                f"rejected {r['rejected']}  "
                f"missing updates {r['missing']}  p50 {r['p50']} ms  p99 {r['p99']} ms  {self.cpu_text(r)}"
            )
        self.stdout.write(
            "  server CPU: daphne and gunicorn per order placed; PostgreSQL: every postgres process of the machine "
            "over the same window; CLIENT-BOUND: this command's "
            f"client used > {stats.CLIENT_BOUND:.0%} of a core (the figures understate the server)"
        )

    def cpu_text(self, r: dict) -> str:
        bound = "  CLIENT-BOUND" if r["clientBound"] else ""
        return (
            f"server CPU {r['serverCpuMsPerOrder']} ms/order  PostgreSQL {r['databaseCpuMsPerOrder']} ms/order  "
            f"client {r['clientCores']} cores{bound}"
        )

    # ---- scale-out: two processes, one Redis -----------------------------------------------

    def run_scaleout(self, n: int, processes: int, runs: int, deliveries: int) -> dict:
        """Ours on one process, then on ``processes`` behind the one Redis, run by run in turn, the
        same n sockets (split evenly) and the same bursts published once: is fan-out shared out?"""
        messages = max(1, math.ceil(deliveries / n))
        done: list[dict] = []
        for run in range(runs):
            for count in (1, processes):
                self.stdout.write(f"N={n} ours on {count} process(es), run {run + 1}/{runs} …")
                one = self.run("axisor", n, messages, processes=count)
                done.append({"processes": count, "run": run, **one})
                self.stdout.write(
                    f"  {one['deliveriesPerSecond']} deliveries/s, {one['serverCpuUsPerDelivery']} µs CPU/delivery, "
                    f"servers {one['serverCores']} cores, clients {one['clientCoresTotal']} cores"
                )
        keys = ("deliveriesPerSecond", "serverCpuUsPerDelivery", "serverCores", "clientCoresTotal", "rateP50Ms",
                "rateP99Ms", "connectsPerSecond", "idleKbPerSocket")  # fmt: skip
        rows = {}
        for count in (1, processes):
            mine = [r for r in done if r["processes"] == count]
            rows[count] = {key: stats.summary([r[key] for r in mine]) for key in keys}
            rows[count]["lost"] = sum(r["lost"] for r in mine)
            rows[count]["failed"] = sum(r["failed"] for r in mine)
            rows[count]["clientBound"] = any(r["clientBound"] for r in mine)
        one, many = rows[1]["deliveriesPerSecond"]["median"], rows[processes]["deliveriesPerSecond"]["median"]
        return {
            "n": n,
            "processes": processes,
            "cpus": os.cpu_count(),
            "rows": {str(k): v for k, v in rows.items()},
            "ratio": round(many / one, 2) if one and many else None,
            "runs": [{k: v for k, v in r.items() if k != "burstQuantilesMs"} for r in done],
        }

    def report_scaleout(self, r: dict) -> None:
        def cell(s: dict) -> str:
            if s["median"] is None:
                return "-"
            return f"{s['median']:g}" if s["min"] == s["max"] else f"{s['median']:g} [{s['min']:g}–{s['max']:g}]"

        k = r["processes"]
        lines = [f"\nbench_fanout scale-out: N={r['n']:,}, ours on 1 and on {k} daphne processes behind one Redis "
                 f"(sockets split evenly, each event published once); {r['cpus']} CPUs",
                 "  processes | deliveries/s | CPU µs/deliv (all servers) | server cores | client cores | "
                 f"{RATE}/s p50/p99 ms | conn/s | KB/idle"]  # fmt: skip
        for count in (1, k):
            row = r["rows"][str(count)]
            flags = f"  lost {row['lost']}" if row["lost"] else ""
            flags += f"  failed {row['failed']}" if row["failed"] else ""
            flags += "  CLIENT-BOUND" if row["clientBound"] else ""
            lines.append(
                f"  {count:9} | {cell(row['deliveriesPerSecond'])} | {cell(row['serverCpuUsPerDelivery'])} | "
                f"{cell(row['serverCores'])} | {cell(row['clientCoresTotal'])} | {cell(row['rateP50Ms'])} / "
                f"{cell(row['rateP99Ms'])} | {cell(row['connectsPerSecond'])} | {cell(row['idleKbPerSocket'])}{flags}"
            )
        lines.append(
            f"  {k} processes / 1: deliveries/s {r['ratio']}× (target ≥ 1.7×). Server + client cores over a burst "
            f"cannot pass the machine's {r['cpus']}: what the load clients use, the servers cannot."
        )
        self.stdout.write("\n".join(lines))

    # ---- the servers and the client ------------------------------------------------------------

    def start_server(self, target: str, uncapped: bool = False):
        env = {**os.environ, "AXISOR_BACKGROUND": "0", "LOG_LEVEL": "INFO", "DEBUG": "0"}
        if uncapped:
            env.update(UNCAPPED)
        # Twisted's listen backlog defaults to 50: a burst of connects overflows it and waits
        # out SYN retransmits. Every server here gets the same backlog (ours would otherwise
        # take LISTEN_BACKLOG's 4096; 1,024 is beyond the client's 500 handshakes in flight).
        endpoint = "tcp:port=0:interface=127.0.0.1:backlog=1024"
        if target in ("ceiling", "picows"):
            script = "ceiling_server.py" if target == "ceiling" else "picows_server.py"
            cmd = [sys.executable, str(BENCH / script), str(free_port())]
        elif target == "node":
            # node itself, no shell or npm between: its pid is the one whose CPU and memory are read
            env["NODE_PATH"] = str(NODE_MODULES)
            cmd = [node_binary(), str(BENCH / "node_ws_server.cjs"), str(free_port())]
        elif target == "channels":
            env.pop("DJANGO_SETTINGS_MODULE", None)
            env.update(BENCH_REDIS_URL=settings.REDIS_URL, BENCH_LAYER_PREFIX=f"bst{uuid.uuid4().hex[:8]}")
            self.stock_prefix = env["BENCH_LAYER_PREFIX"]
            cmd = [sys.executable, "-m", "daphne", "-e", endpoint, "devtools.bench.channels_stock:application"]
        elif target == "daphne":
            cmd = [sys.executable, "-m", "daphne", "-e", endpoint, "devtools.bench.daphne_server:application"]
        elif target == "uvicorn":
            # The same application and settings as ours on daphne. No permessage-deflate: ours never
            # compresses. Its per-connection lines are dropped unread below, as daphne's are.
            cmd = [sys.executable, "-m", "uvicorn", "axisor.asgi:application", "--host", "127.0.0.1",
                   "--port", "0", "--backlog", "1024", "--loop", "uvloop", "--http", "httptools",
                   "--ws", "websockets-sansio", "--ws-per-message-deflate", "false", "--lifespan", "off",
                   "--no-access-log", "--log-level", "info"]  # fmt: skip
        else:
            cmd = [sys.executable, "-m", "daphne", "-e", endpoint, "axisor.asgi:application"]
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for line in proc.stderr:
            if "Listening on TCP address" in line:
                port = int(line.strip().rsplit(":", 1)[1])
                break
            if "Uvicorn running on" in line:  # "… on http://127.0.0.1:PORT (Press CTRL+C to quit)"
                port = int(line.split("Uvicorn running on ", 1)[1].split()[0].rsplit(":", 1)[1])
                break
        else:
            raise CommandError(f"{target} server did not start")
        log = ROOT / "var" / f"bench-{target}-{port}.log"  # the server's errors, if any, for a look afterwards
        log.parent.mkdir(exist_ok=True)

        def drain() -> None:
            with log.open("w") as out:
                for line in proc.stderr:
                    if not any(mark in line for mark in PER_CONNECTION_LOG):
                        out.write(line)

        threading.Thread(target=drain, daemon=True).start()
        if target in OURS:
            # One request before any measurement, as deploy/run-daphne.sh makes: what a process
            # sets up on its first request or socket is not timed as part of the first connects.
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            conn.close()
        return proc, port

    def start_clients(self, urls: list[str], n: int, first_message: bool) -> list:
        """Lean client processes for the first n users, each socket its own user: at least
        ``--client-procs``, a whole number per server (client k connects to server k mod servers).
        Client k connects from source address 127.0.B.(k+1): each has its own ~28,000 ephemeral
        ports (net.ipv4.ip_local_port_range), so N past one address's ports still connects. B is
        new for every storm: the sockets an earlier run closed hold their ports in TIME_WAIT for a
        minute, and a client binding among thousands of them connected at a fifth of the rate."""
        parts = len(urls) * math.ceil(self.client_procs / len(urls))
        block = next(SOURCE_BLOCKS) % 250 + 1
        clients = []
        for part in range(parts):
            path = self.tokens_file(n, part, parts)
            share = n // parts + (1 if part < n % parts else 0)
            clients.append(
                (lean_client(urls[part % len(urls)], path, share, first_message, f"127.0.{block}.{part + 1}"), path)
            )
        return clients

    def first_socket(self, urls: list[str], first_message: bool) -> None:
        """One socket on each server, of a user of its own (not one of the N), open until it is
        connected (ours: its ``connection`` message), then closed."""
        # Not under the N users' prefix (users() counts them by it).
        user, _ = User.objects.get_or_create(username="bench-first-socket", defaults={"password": make_password(None)})
        path = tokens_for([user])
        clients = [(lean_client(url, path, 1, first_message), path) for url in urls]
        try:
            for proc, _ in clients:
                ready = json.loads(proc.stdout.readline())
                if ready["failed"]:
                    raise CommandError(f"the first socket did not connect: {ready['error'] or '?'}")
        finally:
            self.stop_clients(clients)

    def settled_rss(self, pids: list[int]) -> int:
        """The servers' RSS once it has stopped moving (a server sees a socket's close after the
        client has gone: what it does then belongs to the first socket, not to the idle ones)."""
        last, steady, deadline = None, 0, time.monotonic() + 5
        while time.monotonic() < deadline:
            now = sum(stats.rss_kb(pid) for pid in pids)
            steady = steady + 1 if now == last else 0
            if steady >= 5:  # the same for half a second
                break
            last = now
            time.sleep(0.1)
        return sum(stats.rss_kb(pid) for pid in pids)

    def stop_clients(self, clients: list) -> None:
        for proc, path in clients:
            try:
                if proc.poll() is None:
                    proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                    proc.stdin.flush()
                    proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
            Path(path).unlink(missing_ok=True)

    def run(self, target: str, n: int, messages: int, processes: int = 1) -> dict:
        """One run of ``target`` with n sockets; ours on ``processes`` daphne processes behind the
        one Redis (the sockets split between them, each event published once), its CPU and
        memory the sum of theirs."""
        servers = [self.start_server(target) for _ in range(processes)]
        pids = [proc.pid for proc, _ in servers]
        clients: list = []
        try:
            path = "/ws" if target in OURS else "/"
            # One socket first, opened and closed, on every server: what a process sets up once, on
            # its first socket (ours: the database pool's connection, Redis connections, their
            # threads, ~2 MB), is that socket's alone (firstSocketKb), not spread over the N idle
            # ones; every target gets the same.
            cold = sum(stats.rss_kb(pid) for pid in pids)
            self.first_socket([f"ws://127.0.0.1:{port}{path}" for _, port in servers], target in OURS)
            base = self.settled_rss(pids)
            # Every target gets the same request, a token included; ours answers with `connection`
            # once it has authenticated the socket, and that is when ours counts as connected.
            before = sum(stats.cpu_seconds(pid) for pid in pids)
            clients = self.start_clients([f"ws://127.0.0.1:{port}{path}" for _, port in servers], n, target in OURS)
            readies = [json.loads(c.stdout.readline()) for c, _ in clients]
            connect_cpu = sum(stats.cpu_seconds(pid) for pid in pids) - before
            failed = sum(r["failed"] for r in readies)
            if failed:
                self.stdout.write(f"  {failed} of {n} sockets failed to connect: {readies[0]['error'] or '?'}")
            connected = n - failed
            storm = self.storm(readies, connect_cpu, connected)
            idle_kb = (sum(stats.rss_kb(pid) for pid in pids) - base) / max(1, connected)
            port = servers[0][1]
            full = self.measure(target, port, pids, clients, messages, 0.0, connected)
            per_second = RATE / n
            paced = self.measure(target, port, pids, clients, max(2, round(per_second * self.rate_seconds)),
                                 per_second, connected)  # fmt: skip
            return {
                "serverCpuUsPerDelivery": full["cpuUs"],
                "deliveriesPerSecond": full["perSecond"],
                "burstP50Ms": full["p50"],
                "burstP99Ms": full["p99"],
                "rateP50Ms": paced["p50"],
                "rateP99Ms": paced["p99"],
                "connectsPerSecond": round(sum(r["connectPerSecond"] for r in readies), 1),
                **storm,
                "idleKbPerSocket": round(idle_kb, 1),
                "firstSocketKb": round((base - cold) / len(servers)),
                "clientCores": max(full["clientCores"], paced["clientCores"]),
                "clientBound": full["clientBound"] or paced["clientBound"],
                "serverCores": full["serverCores"],
                "clientCoresTotal": full["clientCoresTotal"],
                "messages": messages,
                "deliveries": full["received"],
                "lost": full["lost"] + paced["lost"],
                "failed": failed,
                "burstQuantilesMs": full["quantiles"],
            }
        finally:
            self.stop_clients(clients)
            for server, _ in servers:
                self.stop_server(server)

    @staticmethod
    def storm(readies: list[dict], server_cpu: float, connected: int) -> dict:
        """The connect storm's server CPU per connect (its servers' CPU from /proc over the storm), and
        whether connections/s measured the load clients or the machine rather than the server: a
        client used more than CLIENT_BOUND of a core, or the clients and the servers together kept
        MACHINE_BOUND of the machine's cores busy (on 2 cores the clients' handshakes take what the
        server would have had)."""
        wall = max((r["connectSeconds"] for r in readies), default=0.0)
        client_cores = [stats.cores(r["connectCpuSeconds"], r["connectSeconds"]) for r in readies]
        busy = sum(client_cores) + stats.cores(server_cpu, wall)
        return {
            "serverCpuMsPerConnect": round(server_cpu / connected * 1000, 3) if connected else float("nan"),
            "connectClientCores": round(max(client_cores, default=0.0), 2),
            "connectCores": round(busy, 2),
            "connectBound": max(client_cores, default=0.0) > stats.CLIENT_BOUND
            or busy >= stats.MACHINE_BOUND * (os.cpu_count() or 1),
        }

    def stop_server(self, server: subprocess.Popen) -> None:
        """SIGTERM, then SIGKILL: daphne waits for every consumer of thousands to finish closing."""
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)

    def measure(self, target: str, port: int, pids: list[int], clients: list, count: int, rate: float,
                connected: int) -> dict:  # fmt: skip
        """Publish count messages (rate per second, 0 = a burst) and wait for every socket to get them.
        Server CPU (every server process's) is read from /proc before the first publish and after
        the last receipt."""
        timeout = 60 + count * connected / 2000  # stock Channels at N = 20,000 takes its time

        def server_seconds() -> float:
            return sum(stats.cpu_seconds(pid) for pid in pids)

        server_cpu, client_cpu = server_seconds(), [stats.cpu_seconds(c.pid) for c, _ in clients]
        for c, _ in clients:
            c.stdin.write(json.dumps({"cmd": "expect", "count": count, "timeout": timeout}) + "\n")
            c.stdin.flush()
        self.publish(target, port, count, rate)
        answers = [json.loads(c.stdout.readline()) for c, _ in clients]
        server_cpu = server_seconds() - server_cpu
        client_cpu = [stats.cpu_seconds(c.pid) - cpu for (c, _), cpu in zip(clients, client_cpu, strict=True)]
        got = [a for a in answers if a["received"]]
        received = sum(a["received"] for a in answers)
        first_sent = min((a["firstSent"] for a in got), default=0.0)
        first = min((a["first"] for a in got), default=0.0)
        last = max((a["last"] for a in got), default=0.0)
        # a client's share of a core while frames arrived (its own receive window)
        spans = [max(a["last"] - a["first"], 0.01) if a["received"] else 1.0 for a in answers]
        quantiles = sorted(q for a in got for q in a["quantiles"])
        return {
            "received": received,
            "lost": sum(a["expected"] for a in answers) - received,
            "perSecond": round(received / max(last - first_sent, 1e-6)) if got else 0,
            "cpuUs": round(server_cpu / received * 1e6, 2) if received else float("nan"),
            "clientCores": round(max(stats.cores(cpu, span) for cpu, span in zip(client_cpu, spans, strict=True)), 2),
            "clientBound": any(stats.client_bound(cpu, span) for cpu, span in zip(client_cpu, spans, strict=True)),
            # cores the servers and all the clients used over the burst (publish of the first to the last
            # receipt): on a 2-core machine what the clients take, the servers cannot have
            "serverCores": round(stats.cores(server_cpu, max(last - first_sent, 0.01)), 2) if got else 0.0,
            "clientCoresTotal": round(stats.cores(sum(client_cpu), max(last - first_sent, 0.01)), 2) if got else 0.0,
            "p50": percentile(quantiles, 0.5),
            "p99": percentile(quantiles, 0.99),
            "quantiles": [quantiles[min(len(quantiles) - 1, i * len(quantiles) // 100)] for i in range(101)]
            if quantiles
            else [],
            "receiveSeconds": round(last - first, 3),
        }

    def publish(self, target: str, port: int, count: int, rate: float) -> None:
        if target in IN_PROCESS:  # the server broadcasts in process; this only asks it to
            import websockets  # a test-stack dependency, like the load client

            async def ask() -> None:
                url = f"ws://127.0.0.1:{port}/publish?count={count}&rate={rate}"
                async with websockets.connect(url, open_timeout=60) as ws:
                    await ws.recv()

            asyncio.run(ask())
            return
        if target == "channels":
            from channels_redis.pubsub import RedisPubSubChannelLayer

            async def send() -> None:
                layer = RedisPubSubChannelLayer(hosts=[settings.REDIS_URL], prefix=self.stock_prefix)
                for i in range(count):
                    await layer.group_send("bench", {"type": "bench.message", "text": bench_text(i)})
                    if rate:
                        await asyncio.sleep(1 / rate)
                await layer.flush()

            asyncio.run(send())
            return
        for i in range(count):
            publish(room=system_room(), event=envelope("bench", "system", {"i": i, "t": time.time(), "pad": "x" * 40}))
            if rate:
                time.sleep(1 / rate)

    # ---- summary, table, plot ------------------------------------------------------------------

    def summarise(self, runs: list[dict], ns: list[int], targets: list[str], count: int, deliveries: int) -> dict:
        rows = []
        for n in ns:
            for target in targets:
                mine = [r for r in runs if r["n"] == n and r["target"] == target]
                if not mine:
                    continue
                row = {"n": n, "target": target, "runs": len(mine)}
                for key in FIGURES:
                    row[key] = stats.summary([r[key] for r in mine])
                row["clientBound"] = any(r["clientBound"] for r in mine)
                row["connectBound"] = any(r["connectBound"] for r in mine)
                row["lost"] = sum(r["lost"] for r in mine)
                row["failed"] = sum(r["failed"] for r in mine)
                middle = sorted(mine, key=lambda r: r["burstP99Ms"])[len(mine) // 2]
                row["burstQuantilesMs"] = middle["burstQuantilesMs"]  # the CDF of the median run
                rows.append(row)
        ratios = []
        by = {(r["n"], r["target"]): r for r in rows}
        # Each of ours against every reference; ours on uvicorn against ours on daphne too.
        pairs = [(mine, ref) for mine in OURS for ref in (*REFERENCES, "axisor") if ref != mine]
        for n, (mine, ref) in itertools.product(ns, pairs):
            ours, theirs = by.get((n, mine)), by.get((n, ref))
            if not ours or not theirs:
                continue
            ratio = {"n": n, "ours": mine, "reference": ref}
            for key in RATIO_FIGURES:
                a, b = ours[key]["median"], theirs[key]["median"]
                ratio[key] = round(a / b, 2) if a is not None and b else None
            ratios.append(ratio)
        return {
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
            "params": {
                "sizes": ns,
                "targets": targets,
                "runs": count,
                "deliveriesPerBurst": deliveries,
                "rate": RATE,
                "rateSeconds": self.rate_seconds,
                "clientProcs": self.client_procs,
                "clientBoundAbove": stats.CLIENT_BOUND,
                "machineBoundAbove": stats.MACHINE_BOUND,
            },
            "rows": rows,
            "ratios": ratios,
            "runs": [{k: v for k, v in r.items() if k != "burstQuantilesMs"} for r in runs],
        }

    def report(self, result: dict) -> None:
        def cell(s: dict) -> str:
            if s["median"] is None:
                return "-"
            if s["min"] == s["max"]:
                return f"{s['median']:g}"
            return f"{s['median']:g} [{s['min']:g}–{s['max']:g}]"

        heads = ("CPU µs/deliv", "deliveries/s", "burst p50/p99 ms", f"{RATE}/s p50/p99 ms", "conn/s",
                 "CPU ms/conn", "KB/idle", "1st socket KB", "client cores")  # fmt: skip
        runs = result["params"]["runs"]
        lines = [
            "",
            f"bench_fanout: median of {runs} run(s) [lowest–highest]; server CPU from /proc of the server process",
            *(f"  {t:9} {LABELS[t]}" for t in result["params"]["targets"]),
        ]
        for n in result["params"]["sizes"]:
            lines.append(f"\nN = {n:,}")
            lines.append(f"  {'':9} " + " | ".join(heads))
            for r in (r for r in result["rows"] if r["n"] == n):
                flag = "  CLIENT-BOUND" if r["clientBound"] else ""
                lost = f"  lost {r['lost']}" if r["lost"] else ""
                failed = f"  failed {r['failed']}" if r["failed"] else ""
                lines.append(
                    f"  {r['target']:9} {cell(r['serverCpuUsPerDelivery'])} | {cell(r['deliveriesPerSecond'])} | "
                    f"{cell(r['burstP50Ms'])} / {cell(r['burstP99Ms'])} | {cell(r['rateP50Ms'])} / "
                    f"{cell(r['rateP99Ms'])} | {cell(r['connectsPerSecond'])}{'†' if r['connectBound'] else ''} | "
                    f"{cell(r['serverCpuMsPerConnect'])} | {cell(r['idleKbPerSocket'])} | "
                    f"{cell(r['firstSocketKb'])} | {cell(r['clientCores'])}{flag}{lost}{failed}"
                )
            for q in (q for q in result["ratios"] if q["n"] == n):
                name = "ours" if q["ours"] == "axisor" else q["ours"]
                queued = "*" if q["reference"] in IN_PROCESS else ""
                bound = "†" if any(r["connectBound"] for r in result["rows"] if r["n"] == n
                                   and r["target"] in (q["ours"], q["reference"])) else ""  # fmt: skip
                lines.append(
                    f"  {name}/{q['reference']:9} CPU/deliv {q['serverCpuUsPerDelivery']}×  deliveries/s "
                    f"{q['deliveriesPerSecond']}×  burst p99 {q['burstP99Ms']}×{queued}  p99 at {RATE}/s "
                    f"{q['rateP99Ms']}×  conn/s {q['connectsPerSecond']}×{bound}  CPU/conn "
                    f"{q['serverCpuMsPerConnect']}×  KB/idle {q['idleKbPerSocket']}×"
                )
        lines.append(
            "\ntargets (issue 21): CPU/delivery ≤ 1.0× ceiling's and ≤ 1/20 of stock Channels'; deliveries/s ≥ 0.9× "
            f"ceiling; p99 at {RATE}/s ≤ 1.5× ceiling's; conn/s ≥ 0.6× ceiling; KB/idle ≤ 1.5× ceiling's. "
            f"CLIENT-BOUND: the load client used > {stats.CLIENT_BOUND:.0%} of a core (its figures understate the server)."
        )
        if any(r["connectBound"] for r in result["rows"]):
            lines.append(
                f"† connections/s measured the load clients or the machine, not the server: a client used > "
                f"{stats.CLIENT_BOUND:.0%} of a core over the connect storm, or the clients and the server together "
                f"kept ≥ {stats.MACHINE_BOUND:.0%} of the machine's {os.cpu_count()} cores busy. Its ratio understates "
                "the faster server's lead; CPU ms/conn (the server's CPU over the storm per connect) compares them."
            )
        if any(q["reference"] in IN_PROCESS for q in result["ratios"]):
            lines.append(
                "* burst p99 against a reference that makes each message in process as it broadcasts it: not "
                "comparable (ours gets the whole burst from Redis at once, and later messages wait behind earlier "
                f"ones); p99 at {RATE}/s is the latency target."
            )
        self.stdout.write("\n".join(lines))

    def plot(self, result: dict, path: Path) -> None:
        import matplotlib  # a dev dependency (requirements-dev.in)

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt

        fig, (rate_ax, cpu_ax, connect_ax, cdf_ax) = plt.subplots(1, 4, figsize=(20, 4.5))
        for target in result["params"]["targets"]:
            rows = sorted((r for r in result["rows"] if r["target"] == target), key=lambda r: r["n"])
            ns = [r["n"] for r in rows]
            for ax, key in ((rate_ax, "deliveriesPerSecond"), (cpu_ax, "serverCpuUsPerDelivery"),
                            (connect_ax, "serverCpuMsPerConnect")):  # fmt: skip
                med = [r[key]["median"] or 0 for r in rows]
                err = [[m - (r[key]["min"] or 0) for m, r in zip(med, rows, strict=True)],
                       [(r[key]["max"] or 0) - m for m, r in zip(med, rows, strict=True)]]  # fmt: skip
                ax.errorbar(ns, med, yerr=err, marker="o", capsize=3, label=target)
            biggest = rows[-1]
            qs = biggest["burstQuantilesMs"]
            if qs:
                cdf_ax.plot(qs, [i / (len(qs) - 1) for i in range(len(qs))], label=f"{target} (N={biggest['n']:,})")
        rate_ax.set(xscale="log", xlabel="N sockets", ylabel="deliveries/s (full burst)", title="Throughput")
        cpu_ax.set(xscale="log", yscale="log", xlabel="N sockets", ylabel="server CPU µs per delivery",
                   title="Server CPU per delivery")  # fmt: skip
        connect_ax.set(xscale="log", xlabel="N sockets", ylabel="server CPU ms per connect", ylim=(0, None),
                       title="Server CPU per connect (connect storm)")  # fmt: skip
        cdf_ax.set(xscale="log", xlabel="publish → receipt, ms (full burst)", ylabel="share of deliveries",
                   title="Latency CDF, largest N")  # fmt: skip
        for ax in (rate_ax, cpu_ax, connect_ax, cdf_ax):
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
