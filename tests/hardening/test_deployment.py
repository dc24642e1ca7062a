"""Issue 22, item 4: the deployment of deploy/, run for real. Debian's nginx with deploy/nginx.conf
itself (ports, certificate and log paths replaced; a self-signed certificate made here) in front of
two daphne processes, the gunicorn tier and a ``manage.py worker``, each started with the ExecStart
and Environment of its systemd unit in deploy/systemd/ (paths replaced), on PostgreSQL and Redis.

- The seeds' own clients connect through ``wss://``: seed 004's Python order-updates client hears an
  order placed over HTTPS (nginx → gunicorn) go ORDER_PLACED … ORDER_EXECUTED (the worker's paper
  venue fills it), seed 000's client (run by Node) gets the market ticks posted through nginx.
- Django sees HTTPS (X-Forwarded-Proto): HSTS through nginx, a redirect without it.
- One daphne process, holding both seed clients and some of the other clients, is SIGKILLed while
  notifications stream: every client on it reconnects through nginx to the survivor (the access log
  shows nginx's own failover: the dead process tried, the next one taking the socket), new
  connections succeed, and every resuming client ends with every personal event of its user
  exactly once. Restarted (what ``Restart=always`` does), the process gets sockets again.
- The access and error logs hold the request lines but no query string and no credential.

The unit files themselves are checked by ``systemd-analyze verify`` (and ``security``)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import queue
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import websockets
from channels.db import database_sync_to_async
from django.conf import settings

from tests.conftest import jwt_for
from tests.hardening.conftest import ROOT, recv_json, server_is_clean
from tests.hardening.fleet import Fleet, latest_seqs
from tests.hardening.test_tls_proxy import HOSTS, Nginx, https, nginx, plain  # noqa: F401 - nginx: the fixture
from tests.integration.conftest import (
    LISTENING,
    WORKER_READY,
    WORKER_STARTED,
    fresh_cache_prefix,
    stop_process,
    subprocess_database_url,
    watch,
)
from tests.integration.http import free_port
from tests.integration.seed_order_client import OrderUpdatesClient
from tests.js.test_seed_margin_client import node_command
from tests.polling import until

UNITS = ROOT / "deploy" / "systemd"
INSTALLED = "/srv/axisor"  # where the units expect the checkout (WorkingDirectory, ExecStart)
SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
SEED_EVENTS_CLIENT = ROOT / "tests" / "js" / "seed_events_client.mjs"
SERVED_AGAIN_SECONDS = 15


# ---- the unit files -------------------------------------------------------------------------------


def unit_entries(name: str) -> list[tuple[str, str, str]]:
    """(section, key, value) of a unit file in order: comments dropped, continued lines joined."""
    entries: list[tuple[str, str, str]] = []
    section, pending = "", ""
    for raw in (UNITS / name).read_text().splitlines():
        line = pending + raw.strip()
        if line.endswith("\\"):
            pending = line[:-1].rstrip() + " "
            continue
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.append((section, key.strip(), value.strip()))
    return entries


def unit_values(name: str, section: str, key: str) -> list[str]:
    return [v for s, k, v in unit_entries(name) if (s, k) == (section, key)]


def unit_command(name: str, instance: str = "") -> tuple[list[str], dict[str, str]]:
    """The unit's ExecStart (``%i`` the instance, this interpreter for the virtualenv's python) and
    the variables of its Environment= lines."""
    (workdir,) = unit_values(name, "Service", "WorkingDirectory")
    assert workdir == INSTALLED, workdir
    (exec_start,) = unit_values(name, "Service", "ExecStart")
    argv = shlex.split(exec_start.replace("%i", instance))
    assert argv[0] == f"{INSTALLED}/.venv/bin/python", argv
    env = dict(pair.split("=", 1) for line in unit_values(name, "Service", "Environment") for pair in shlex.split(line))
    return [sys.executable, *argv[1:]], env


SERVICES = ("axisor-daphne@.service", "axisor-gunicorn.service", "axisor-worker.service")


def test_unit_files_pass_systemd_analyze_verify_and_set_limits_restarts_and_hardening(tmp_path):
    assert Path(SYSTEMD_ANALYZE).exists(), "systemd-analyze is missing (Debian: the systemd package)"
    names = sorted(p.name for p in UNITS.iterdir() if p.suffix in (".service", ".target"))
    assert names == ["axisor-daphne@.service", "axisor-gunicorn.service", "axisor-worker.service", "axisor.target"]
    # verify wants each ExecStart binary to exist: a copy with this checkout's interpreter.
    for name in names:
        text = (UNITS / name).read_text().replace(f"{INSTALLED}/.venv/bin/python", sys.executable)
        (tmp_path / name).write_text(text)
    units = [str(tmp_path / n) for n in ("axisor-daphne@8001.service", *names[1:])]
    done = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", "--generators=no", *units],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    # verify exits 0 on unknown keys and bad values, only warning about them: no output at all.
    assert (done.returncode, done.stdout, done.stderr) == (0, "", ""), done

    # The checker catches what a typo would be.
    broken = (tmp_path / "axisor-worker.service").read_text().replace("LimitNOFILE=8192", "LimitNOFILE=lots")
    (tmp_path / "axisor-worker.service").write_text(broken.replace("Restart=always", "Restart=always\nRestrat=1"))
    done = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", "--generators=no", str(tmp_path / "axisor-worker.service")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert "Unknown key 'Restrat'" in done.stderr and "Failed to parse resource value" in done.stderr, done

    limits = {}
    for name in SERVICES:
        service = dict((k, v) for s, k, v in unit_entries(name) if s == "Service")
        limits[name] = int(service["LimitNOFILE"])
        assert service["Restart"] in ("always", "on-failure") and float(service["RestartSec"]) > 0, name
        assert service["EnvironmentFile"] == "/etc/axisor/axisor.env", name
        assert service["User"] == service["Group"] == "axisor", name
        hardening = {k: service.get(k) for k in ("NoNewPrivileges", "ProtectSystem", "PrivateTmp", "ReadWritePaths")}
        assert hardening == {
            "NoNewPrivileges": "yes",
            "ProtectSystem": "strict",
            "PrivateTmp": "yes",
            "ReadWritePaths": f"{INSTALLED}/var",
        }, name
        assert unit_values(name, "Unit", "PartOf") == ["axisor.target"], name
        assert unit_values(name, "Install", "WantedBy") == ["axisor.target"], name
        # systemd's own exposure score of the sandbox (0 = locked down, 10 = none): "OK" is under 3.
        instance = tmp_path / name.replace("@.", "@8001.")
        exposure = subprocess.run(
            [SYSTEMD_ANALYZE, "security", "--offline=true", "--no-pager", str(instance)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        score = re.search(r"Overall exposure level for \S+: ([\d.]+)", exposure.stdout)
        assert score and float(score.group(1)) < 3.0, exposure.stdout[-500:]
    assert limits["axisor-daphne@.service"] >= 65536  # every socket is a file descriptor
    assert unit_values("axisor.target", "Install", "WantedBy") == ["multi-user.target"]
    # The daphne unit starts what deploy/run-daphne.sh starts, on its instance's port.
    argv, env = unit_command("axisor-daphne@.service", "8001")
    assert "tcp:port=8001:interface=127.0.0.1" in argv and "--proxy-headers" in argv  # backlog: LISTEN_BACKLOG
    assert env["AXISOR_BACKGROUND"] == "0" and env["AXISOR_ENV"] == "production"


# ---- the tiers, as their units start them ---------------------------------------------------------


@dataclass
class Tier:
    unit: str
    proc: subprocess.Popen
    port: int = 0
    lines: list[str] = field(default_factory=list)

    def stop(self, kill: bool = False) -> None:
        stop_process(self.proc, self.lines, self.unit, kill=kill, timeout=25)

    def sockets(self) -> int:
        """Established TCP connections on its listening port (nginx's upstream connections)."""
        if self.proc.poll() is not None:
            return 0
        conns = psutil.Process(self.proc.pid).net_connections(kind="tcp")
        return sum(c.status == psutil.CONN_ESTABLISHED and c.laddr.port == self.port for c in conns)


@pytest.fixture
def tiers(transactional_db):
    """``start(unit, instance, **env)``: a process as its systemd unit starts it (its ExecStart and
    Environment; the environment file's settings from here), on the test database and Redis."""
    started: list[Tier] = []
    shared = {
        **os.environ,
        "DATABASE_URL": subprocess_database_url(),
        "CACHE_KEY_PREFIX": fresh_cache_prefix(),
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": HOSTS,
        "JWT_SIGNING_KEY": settings.SIMPLE_JWT["SIGNING_KEY"],  # the tokens this test mints
    }
    ready = {"axisor-daphne@.service": LISTENING, "axisor-gunicorn.service": WORKER_READY}

    def start(unit: str, instance: str = "", *, port: int = 0, ready_count: int = 1, **extra: str) -> Tier:
        argv, unit_env = unit_command(unit, instance)
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**shared, **unit_env, **extra},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        tier = Tier(unit.replace("@", f"@{instance}"), proc, port or int(instance or 0))
        started.append(tier)
        found = watch(proc, tier.lines, ready.get(unit, WORKER_STARTED), ready_count, tier.unit)
        if unit == "axisor-daphne@.service":
            assert int(found[0].group(1)) == tier.port
        return tier

    yield start
    failures = []
    for tier in started:
        try:
            tier.stop()
        except AssertionError as exc:
            failures.append(str(exc))
    assert not failures, "\n".join(failures)


@pytest.fixture
def stops():
    """Callables that stop the test's clients, called before the servers stop (a failing test too)."""
    callables: list = []
    yield callables
    while callables:
        callables.pop()()


class SystemdNotify:
    """A NOTIFY_SOCKET as systemd offers one to a Type=notify service."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="axn")  # a short path: AF_UNIX allows 108 bytes
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)

    def received(self, timeout: float) -> str:
        self.sock.settimeout(timeout)
        return self.sock.recv(4096).decode()

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


# ---- clients --------------------------------------------------------------------------------------


class SeedEventsClient:
    """Seed 000's AxisorWebSocketClient run by Node (tests/js/seed_events_client.mjs, its "Market
    Data Streaming" example): one JSON line per event its handlers get."""

    def __init__(self, url: str, token: str, cert: Path) -> None:
        env = {**os.environ, "NODE_EXTRA_CA_CERTS": str(cert)}  # trust the test's certificate
        self.proc = subprocess.Popen(
            node_command(SEED_EVENTS_CLIENT, url, token, "market", "300"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[tuple[float, str]] = queue.Queue()
        self.said: list[tuple[float, str]] = []  # (when, line)
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.said.append((time.monotonic(), line))
            self.lines.put((time.monotonic(), line))

    def wait_for(self, pred, timeout: float = 20) -> dict:
        """The next line (parsed, with ``at``: when it came) that satisfies ``pred``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                at, line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                said = [line for _, line in self.said[-20:]]
                raise AssertionError(f"seed 000 client: nothing matching within {timeout} s: {said}") from None
            item = json.loads(line) if line.startswith("{") else {"log": line.strip()}
            if pred(item):
                return {**item, "at": at}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


class SeedOrdersClient:
    """Seed 004's OrderUpdatesClient (tests/integration/seed_order_client.py, verbatim but for its
    URL), its connection statuses and order updates in queues."""

    def __init__(self, base_url: str, creds: dict) -> None:
        self.statuses: queue.Queue[tuple[str, float]] = queue.Queue()
        self.updates: queue.Queue[dict] = queue.Queue()
        self.client = OrderUpdatesClient(creds["session"], creds["token"], base_url=base_url)
        self.client.on_all_orders(self.updates.put)
        self.client.on_connection_status(lambda status: self.statuses.put((status, time.monotonic())))
        self.client.connect()

    def status(self, timeout: float = 20) -> tuple[str, float]:
        return self.statuses.get(timeout=timeout)

    def updates_until_executed(self, order_id: str, timeout: float = 20) -> list[dict]:
        """The order's updates up to its ORDER_EXECUTED (the paper venue may fill it in parts)."""
        got: list[dict] = []
        deadline = time.monotonic() + timeout
        while not got or got[-1]["updateType"] != "ORDER_EXECUTED":
            update = self.updates.get(timeout=max(0.01, deadline - time.monotonic()))
            if update["orderId"] == order_id:
                got.append(update)
        return got

    def stop(self) -> None:
        self.client.max_reconnect = 0  # its on_close would reconnect
        self.client.disconnect()


# ---- the case -------------------------------------------------------------------------------------


def api(proxy: Nginx, method: str, path: str, body=None, token: str | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    status, _, raw = https(proxy, method, path, data, headers)
    return status, json.loads(raw or b"{}")


def order_body(**extra) -> dict:
    # 0.05 BTC_USD: 50 lots, what the paper venue fills in one step (a larger order fills in parts)
    return {"tradingSymbol": "BTC_USD", "orderType": "MARKET", "transactionType": "BUY", "quantity": 0.05, **extra}


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_the_deployment_behind_nginx_serves_the_seed_clients_and_routes_around_a_killed_daphne(
    tiers,
    nginx,  # noqa: F811 - the fixture imported above
    make_user,
    instruments,
    monkeypatch,
    tmp_path,
    stops,
):
    loop_time = time.monotonic
    notify = SystemdNotify()
    daphne_ports = [free_port() for _ in range(2)]
    rest_port = free_port()
    try:
        sockets_a, sockets_b, web, jobs = await asyncio.gather(
            *(asyncio.to_thread(tiers, "axisor-daphne@.service", str(port)) for port in daphne_ports),
            asyncio.to_thread(
                tiers,
                "axisor-gunicorn.service",
                port=rest_port,
                ready_count=2,
                GUNICORN_BIND=f"127.0.0.1:{rest_port}",
                WEB_CONCURRENCY="2",
                PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
                NOTIFY_SOCKET=notify.path,
            ),
            # the worker's paper venue fills the orders: the worker tier's part of the updates
            asyncio.to_thread(tiers, "axisor-worker.service", AXISOR_SIMULATE="venue", WORKER_POLL_SECONDS="0.1"),
        )
        # Type=notify: gunicorn told "systemd" it is up.
        assert "READY=1" in await asyncio.to_thread(notify.received, 10)
    finally:
        notify.close()
    proxy: Nginx = await asyncio.to_thread(nginx, daphne_ports, rest_port)
    daphnes = {sockets_a.port: sockets_a, sockets_b.port: sockets_b}
    monkeypatch.setenv("WEBSOCKET_CLIENT_CA_BUNDLE", str(proxy.cert))  # websocket-client (seed 004) trusts it
    wss = f"wss://127.0.0.1:{proxy.https_port}"
    ctx = proxy.context()

    staff = await database_sync_to_async(make_user)("ops-deploy", superuser=True)
    trader = await database_sync_to_async(make_user)("seed-trader", tier="premium")
    prober = await database_sync_to_async(make_user)("prober", tier="enterprise")
    newcomer = await database_sync_to_async(make_user)("newcomer", tier="premium")
    people = [await database_sync_to_async(make_user)(f"dep-{i}") for i in range(8)]
    staff_jwt, trader_jwt = jwt_for(staff), jwt_for(trader)
    secrets_seen = {staff_jwt, trader_jwt}

    # ---- HTTPS to the REST tier: Django sees a secure request (X-Forwarded-Proto) ----------------
    status, headers, body = await asyncio.to_thread(
        https, proxy, "GET", "/api/orders", None, {"Authorization": f"Bearer {trader_jwt}"}
    )
    assert status == 200 and headers["Strict-Transport-Security"].startswith("max-age=31536000"), body
    # Directly, without the header, gunicorn and daphne redirect to HTTPS: the header made the difference.
    for tier in (web, sockets_a, sockets_b):
        assert (await asyncio.to_thread(plain, tier.port, "/api/orders"))[0] == 301
    assert (await asyncio.to_thread(plain, proxy.http_port, "/ws"))[0] == 301

    # ---- seed 004's client on /ws/orders, seed 000's on /ws, both on the same daphne process -----
    status, creds = await asyncio.to_thread(api, proxy, "POST", "/api/auth/sessions", None, trader_jwt)
    assert status == 201, creds
    secrets_seen |= {creds["session"], creds["token"]}
    orders_client = SeedOrdersClient(f"{wss}/ws/orders", creds)
    stops.append(orders_client.stop)
    assert (await asyncio.to_thread(orders_client.status))[0] == "connected"
    assert orders_client.client.url == f"{wss}/ws/orders?session={creds['session']}&token={creds['token']}"
    held = await until(lambda: [p for p, d in daphnes.items() if d.sockets() == 1], what="the seed 004 socket")
    doomed, survivor = daphnes[held[0]], daphnes[next(p for p in daphnes if p != held[0])]

    # least_conn sends a new socket to the process with fewer: make the doomed one that process.
    probes = []
    for _ in range(8):
        if survivor.sockets() > doomed.sockets():
            break
        before = doomed.sockets()
        probe = await websockets.connect(
            f"{wss}/ws", ssl=ctx, additional_headers={"Authorization": f"Bearer {jwt_for(prober)}"}
        )
        assert (await recv_json(probe))["type"] == "connection"
        if doomed.sockets() > before:
            await probe.close()  # the wrong one: the next tie goes to the other process
            await until(lambda n=before: doomed.sockets() == n, what="the probe's socket closed")
        else:
            probes.append(probe)
    before = doomed.sockets()
    events_client = SeedEventsClient(f"{wss}/ws", trader_jwt, proxy.cert)
    stops.append(events_client.stop)
    await asyncio.to_thread(events_client.wait_for, lambda m: m.get("status") == "connected")
    subscribed = await asyncio.to_thread(events_client.wait_for, lambda m: m.get("handler") == "room_subscription")
    assert subscribed["message"]["channel"] == "market:BTC_USD"
    assert doomed.sockets() == before + 1, "seed 000's socket is not on the same process as seed 004's"
    for probe in probes:
        await probe.close()

    # ---- events through nginx: a tick (→ daphne: 202, not a redirect, so daphne saw HTTPS too), an
    # order (→ gunicorn, filled by the worker's paper venue) ------------------------------------------
    status, answer = await asyncio.to_thread(
        api, proxy, "POST", "/api/internal/ticks", [{"symbol": "BTC_USD", "price": 100, "volume": 1}], staff_jwt
    )
    assert (status, answer) == (202, {"applied": 1})
    tick = await asyncio.to_thread(events_client.wait_for, lambda m: m.get("handler") == "market_data_update")
    assert tick["price"] == 100 and tick["message"]["channel"] == "market_data"
    status, order = await asyncio.to_thread(api, proxy, "POST", "/api/orders", order_body(), trader_jwt)
    assert status == 201, order
    updates = await asyncio.to_thread(orders_client.updates_until_executed, order["orderId"])
    assert [(u["updateType"], u["orderStatus"], u["version"]) for u in updates] == [
        ("ORDER_PLACED", "PENDING", 1),
        ("TRADE_UPDATE", "COMPLETE", 2),  # the worker's paper venue filled it
        ("ORDER_EXECUTED", "COMPLETE", 3),
    ]
    assert (updates[-1]["averagePrice"], updates[-1]["filledQuantity"]) == (100, 0.05)

    # ---- resuming clients (the axisor_client library) on both processes ---------------------------
    fleet = Fleet()
    statuses: list[list[tuple[str, float]]] = []  # per client: (status, when)
    resumes: list[list[dict]] = []  # per client: the server's "resumed" answers
    for user in people:
        # the library's default backoff (first retry after 1 s ± 25 %), not the fleet's quick one
        fleet.add([f"{wss}/ws"], user, connect_kwargs={"ssl": ctx}, initial_delay=1.0, max_delay=10.0)
        seen: list[tuple[str, float]] = []
        fleet.clients[-1][0].on_connection_status(lambda s, seen=seen: seen.append((str(s), loop_time())))
        statuses.append(seen)
        resumed: list[dict] = []
        fleet.clients[-1][0].on_resumed(resumed.append)
        resumes.append(resumed)
    secrets_seen |= {jwt_for(u) for u in people}
    note = {"audience": "all", "type": "info", "category": "system"}
    sent: dict[int, int] = {}

    async def notify_everyone(tag: str) -> int:
        status, _ = await asyncio.to_thread(
            api, proxy, "POST", "/api/notifications", {**note, "title": tag, "message": tag}, staff_jwt
        )
        sent[status] = sent.get(status, 0) + 1
        return status

    async def stream() -> None:
        """A notification to everyone every 0.5 s, through nginx to the REST tier."""
        for i in itertools.count():
            assert await notify_everyone(f"stream {i}") == 201
            await asyncio.sleep(0.5)

    async with fleet:
        on_doomed = doomed.sockets() - 2  # the fleet's sockets on the doomed process
        assert 1 <= on_doomed <= len(people) - 1, on_doomed  # least_conn spread them over both
        assert await notify_everyone("before") == 201
        await fleet.wait_all_beyond([0] * len(people), 20)

        streaming = asyncio.ensure_future(stream())
        try:
            await until(lambda: sent.get(201, 0) >= 3, what="the stream under way")
            await asyncio.to_thread(doomed.stop, kill=True)  # SIGKILL
            killed = loop_time()
            marks = await database_sync_to_async(latest_seqs)([u.pk for u in people])

            # The sockets on it are cut: nginx closes the clients' side.
            assert (await asyncio.to_thread(orders_client.status))[0] == "disconnected"
            await until(
                lambda: sum(any(s == "reconnecting" for s, _ in seen) for seen in statuses) == on_doomed,
                timeout=10,
                what="the clients on the killed process to see the loss",
            )
            # An event while they are away (their first retry is 0.75 s or more after the loss).
            assert await notify_everyone("while they are away") == 201
            away = loop_time() - killed
            # The next new socket: least_conn sends it to the dead process (it has the fewest), which
            # refuses the connect; nginx moves it on to the other (the access log shows both). A
            # /ws/orders socket, credentials in its query string: nginx's error log must not get them.
            status, fresh_creds = await asyncio.to_thread(
                api, proxy, "POST", "/api/auth/sessions", None, jwt_for(newcomer)
            )
            assert status == 201, fresh_creds
            secrets_seen |= {fresh_creds["session"], fresh_creds["token"]}
            query = f"session={fresh_creds['session']}&token={fresh_creds['token']}"
            async with websockets.connect(f"{wss}/ws/orders?{query}", ssl=ctx) as sock:
                await sock.send('{"type":"ping"}')
                assert (await recv_json(sock))["type"] == "heartbeat"
            for _ in range(2):  # and more new sockets, all served
                sock = await websockets.connect(
                    f"{wss}/ws", ssl=ctx, additional_headers={"Authorization": f"Bearer {jwt_for(newcomer)}"}
                )
                assert (await recv_json(sock))["type"] == "connection"
                await sock.close()
            first_new = loop_time() - killed

            # Every resuming client is served again, those on the dead process through a reconnect.
            await fleet.wait_all_beyond([marks[u.pk] for _, u, _ in fleet.clients], SERVED_AGAIN_SECONDS)
            moved = [i for i, seen in enumerate(statuses) if any(s == "reconnecting" for s, _ in seen)]
            assert len(moved) == on_doomed, (moved, on_doomed, statuses)
            served = [
                next(t for s, t in fleet.clients[i][2] if s > marks[fleet.clients[i][1].pk]) - killed for i in moved
            ]
            reconnected = [next(t for s, t in statuses[i] if s == "connected" and t > killed) - killed for i in moved]
            # Each came back with ?since=<its last seq> and was replayed what it missed, at least the
            # notification sent while it was away, before it reconnected.
            assert min(reconnected) > away, (reconnected, away)
            await until(lambda: all(resumes[i] for i in moved), timeout=10, what="the resumed answers")
            replayed = [sum(r["replayed"] for r in resumes[i]) for i in moved]
            assert all(n >= 1 for n in replayed), (replayed, resumes)

            # Seed 004's client reconnects by itself (after 2 s), through nginx to the survivor.
            assert (await asyncio.to_thread(orders_client.status))[0] == "reconnecting"
            state, at = await asyncio.to_thread(orders_client.status)
            assert state == "connected"
            seed_orders_back = at - killed
        finally:
            streaming.cancel()
            await asyncio.gather(streaming, return_exceptions=True)
        # Restarted, as Restart=always does (RestartSec=2), while the seed clients are checked.
        restarting = asyncio.ensure_future(asyncio.to_thread(tiers, "axisor-daphne@.service", str(doomed.port)))

        # ... and hears the next order go ORDER_PLACED … ORDER_EXECUTED.
        status, order = await asyncio.to_thread(api, proxy, "POST", "/api/orders", order_body(), trader_jwt)
        assert status == 201, order
        updates = await asyncio.to_thread(orders_client.updates_until_executed, order["orderId"])
        assert [u["updateType"] for u in updates] == ["ORDER_PLACED", "TRADE_UPDATE", "ORDER_EXECUTED"]

        # Seed 000's client reconnects by itself (after 1 s), re-subscribes market:BTC_USD, gets ticks.
        again = await asyncio.to_thread(
            events_client.wait_for, lambda m: m.get("handler") == "room_subscription", SERVED_AGAIN_SECONDS
        )
        assert again["message"]["channel"] == "market:BTC_USD"
        seed_events_back = again["at"] - killed
        assert any("Reconnecting... (attempt 1)" in line for _, line in events_client.said)
        status, answer = await asyncio.to_thread(
            api, proxy, "POST", "/api/internal/ticks", [{"symbol": "BTC_USD", "price": 101, "volume": 1}], staff_jwt
        )
        assert (status, answer) == (202, {"applied": 1})
        await asyncio.to_thread(
            events_client.wait_for, lambda m: m.get("handler") == "market_data_update" and m["price"] == 101
        )
        # everyone is on the survivor now: the fleet and both seed clients
        assert survivor.sockets() >= len(people) + 2

        # After fail_timeout nginx tries the process again, and it takes sockets.
        reborn = await restarting
        late: list = []

        async def lands_on_reborn() -> bool:
            sock = await websockets.connect(
                f"{wss}/ws", ssl=ctx, additional_headers={"Authorization": f"Bearer {jwt_for(prober)}"}
            )
            assert (await recv_json(sock))["type"] == "connection"
            late.append(sock)
            if reborn.sockets():
                return True
            await sock.close()  # on the survivor: nginx still counts the process failed
            return False

        await until(lands_on_reborn, timeout=20, interval=0.5, what="a socket on the restarted process")
        back_in_rotation = loop_time() - killed

        # A rolling restart's second half: the other process goes down while the restarted one holds
        # sockets (the one above stays open). New sockets must reach the restarted one at once. With
        # max_fails=1 nginx counted it failed until its first socket since closed, and answered
        # 502 "no live upstreams" for 7-18 s (an outside operator's run of deploy/nginx.conf).
        await asyncio.to_thread(survivor.stop, kill=True)
        second_kill = loop_time()
        for _ in range(3):  # a 502 raises here (websockets' InvalidStatus)
            sock = await websockets.connect(
                f"{wss}/ws", ssl=ctx, additional_headers={"Authorization": f"Bearer {jwt_for(prober)}"}
            )
            assert (await recv_json(sock))["type"] == "connection"
            late.append(sock)
        second_new = loop_time() - second_kill
        assert reborn.sockets() >= 4
        for sock in late:
            await sock.close()

        assert await notify_everyone("final") == 201
        total = await fleet.check_exactly_once(timeout=30)
        duplicates_dropped = sum(client.duplicates for client, _, _ in fleet.clients)

    while stops:
        stops.pop()()
    assert sent.get(201, 0) == sum(sent.values()), sent  # no REST call failed around the kill

    # ---- the logs: request lines, nginx's failover, and no credential --------------------------
    def logged() -> bool:
        log = proxy.access_log()
        return all(f'"GET {p}" 101' in log for p in ("/ws", "/ws/orders")) and '"POST /api/orders" 201' in log

    await until(logged, timeout=20, what="the socket lines in the access log")
    access, errors = proxy.access_log(), proxy.log()
    for needed in ('"POST /api/auth/sessions" 201', '"POST /api/internal/ticks" 202', '"POST /api/notifications" 201'):
        assert needed in access, needed
    dead, live = f"127.0.0.1:{doomed.port}", f"127.0.0.1:{survivor.port}"
    failover = [line for line in access.splitlines() if f'"{dead}, {live}" "502, 101"' in line]
    assert any('"GET /ws/orders" 101' in line for line in failover), "nginx did not move the socket on itself"
    for text, name in ((access, "access"), (errors, "error")):
        assert "token=" not in text and "session=" not in text and "since=" not in text, name
        leaked = [s for s in secrets_seen if s in text]
        assert not leaked, f"credentials in nginx's {name} log"
    assert "?" not in access
    assert "[emerg]" not in errors and "[crit]" not in errors, errors

    for tier in (reborn, web, jobs):
        server_is_clean(tier)
    print(
        f"\nDeployment behind nginx: daphne SIGKILLed under {len(people) + 2} clients ({on_doomed} resuming "
        f"clients and both seed clients on it); 3 new sockets (the first tried on the dead process, moved on by "
        f"nginx) all served by {first_new:.2f} s after the kill; the "
        f"{on_doomed} moved clients connected again {min(reconnected):.2f}-{max(reconnected):.2f} s and served "
        f"again {min(served):.2f}-{max(served):.2f} s after it (replayed {min(replayed)}-{max(replayed)} missed "
        f"events each); seed 004 back {seed_orders_back:.2f} s, seed 000 "
        f"re-subscribed {seed_events_back:.2f} s after it; {total} personal events, every client exactly "
        f"1..latest (events lost = 0, duplicates = 0; the client dropped {duplicates_dropped} repeats); "
        f"REST calls {sent}; nginx moved {len(failover)} handshake(s) on from the dead process itself; "
        f"restarted, it got sockets again {back_in_rotation:.1f} s after the kill; the other one SIGKILLed "
        f"then, 3 new sockets all on the restarted one {second_new:.2f} s after"
    )
