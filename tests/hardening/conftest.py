"""Fixtures for the hardening suite (issue 10): private Redis and PostgreSQL instances the tests may
kill and restart, a TCP proxy that can cut a link, memory and file-descriptor helpers.

Everything here talks to real processes over loopback. The machine's shared PostgreSQL (5432) and
Redis (6379) are never stopped or reconfigured: a test that breaks a service breaks its own copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import shutil
import socket
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import websockets

from tests.integration.http import call, free_port
from tests.polling import until_sync

# The newest PostgreSQL server binaries installed (Debian layout: /usr/lib/postgresql/<major>/bin).
PG_BIN = max(
    Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]), default=Path("/none/x")
).parent
ROOT = Path(__file__).resolve().parents[2]


def wait_port(port: int, timeout: float = 30) -> None:
    """An external process coming up: nothing to await but the port."""

    def listening() -> bool:
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", port)) == 0

    until_sync(listening, timeout=timeout, what=f"a listener on 127.0.0.1:{port}")


def rss_mib(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / (1 << 20)


def raise_nofile() -> int:
    """Raise this process's open-files soft limit to the hard limit (thousands of test sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ---- a private Redis ---------------------------------------------------------------------------


@dataclass
class PrivateRedis:
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert shutil.which("redis-server"), "redis-server is not installed"
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port)

    def kill(self) -> None:
        """SIGKILL: no persistence, so everything it held (subscriptions, leases) is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.kill()
        self.start()


@pytest.fixture
def private_redis():
    redis = PrivateRedis()
    redis.start()
    yield redis
    redis.kill()


# ---- a private PostgreSQL cluster ----------------------------------------------------------------


@dataclass
class PrivatePostgres:
    datadir: Path
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/axisor"

    def _run(self, *args: str, timeout: float = 60) -> None:
        cmd = [str(PG_BIN / args[0]), *args[1:]]
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, timeout=timeout, capture_output=True)

    def init(self) -> None:
        self._run("initdb", "-D", str(self.datadir), "-U", "postgres", "-A", "trust", "--no-sync")
        self.start()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "axisor")

    def start(self) -> None:
        opts = f"-p {self.port} -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.datadir), "-o", opts, "-w", "-l", str(self.datadir / "log"), "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "stop")


@pytest.fixture
def private_postgres():
    if not (PG_BIN / "initdb").exists():
        pytest.fail(f"PostgreSQL server binaries not found in {PG_BIN}")
    tmp = Path(tempfile.mkdtemp(prefix="axhard-pg-"))
    if os.geteuid() == 0:
        shutil.chown(tmp, "postgres")
    pg = PrivatePostgres(datadir=tmp / "data")
    pg.init()
    yield pg
    with contextlib.suppress(subprocess.SubprocessError):
        pg.stop("immediate")
    shutil.rmtree(tmp, ignore_errors=True)


# ---- a TCP proxy that can cut a link -------------------------------------------------------------


class TcpProxy:
    """127.0.0.1:<port> → target, on its own thread and event loop. ``cut()`` drops every link and
    stops listening (the target looks gone: connects are refused); ``blackhole()`` keeps the links
    open (and accepts new ones) but stops moving bytes (a peer that vanished without a FIN, or a
    network partition: no FIN, no RST, nothing answers); ``restore()`` undoes both. Bytes held by a
    black hole flow on after ``restore()``, as TCP retransmits them when a partition heals.
    ``slow(seconds)`` holds every chunk that long before passing it on, both ways (a far or busy
    peer: what is written arrives, late)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.server: asyncio.AbstractServer | None = None
        self.links: set[asyncio.StreamWriter] = set()
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.lag = 0.0
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._call(self._listen())

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)

    async def _listen(self) -> None:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", self.port)

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self.links |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    await self.flowing.wait()  # black-holed: the bytes wait (and the kernel's buffers fill)
                    if self.lag:
                        await asyncio.sleep(self.lag)
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.links -= {writer, up_writer}

    async def _cut(self) -> None:
        self.server.close()
        for writer in list(self.links):
            writer.transport.abort()
        self.links.clear()

    def cut(self) -> None:
        self._call(self._cut())

    async def _flow(self, on: bool) -> None:
        (self.flowing.set if on else self.flowing.clear)()

    async def _slow(self, seconds: float) -> None:
        self.lag = seconds

    def slow(self, seconds: float) -> None:
        self._call(self._slow(seconds))

    def blackhole(self) -> None:
        self._call(self._flow(False))

    def restore(self) -> None:
        self._call(self._flow(True))
        if not self.server.is_serving():
            self._call(self._listen())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._call(self._cut())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


@pytest.fixture
def tcp_proxy():
    proxies: list[TcpProxy] = []

    def make(target_port: int) -> TcpProxy:
        proxies.append(TcpProxy(target_port))
        return proxies[-1]

    yield make
    for proxy in proxies:
        proxy.close()


def server_is_clean(server, *, expected: tuple[str, ...] = ()) -> None:
    """No traceback in the daphne process's log (except under records naming one of ``expected``,
    e.g. a library logging a lost Redis connection in a fault test), and it is still running."""
    record = ""
    for n, line in enumerate(server.lines):
        if line[:4].isdigit():
            record = line
        elif line.startswith("Traceback") and not any(marker in record for marker in expected):
            where = "".join(server.lines[n : n + 60])  # the traceback itself, then the log's end
            raise AssertionError(f"traceback under {record!r}:\n{where}\n...\n{''.join(server.lines[-30:])}")
    assert server.proc.poll() is None, "daphne died"


# ---- wire helpers --------------------------------------------------------------------------------


async def recv_json(sock, timeout: float = 10) -> dict:
    return json.loads(await asyncio.wait_for(sock.recv(), timeout))


async def recv_until(sock, pred, timeout: float = 10) -> dict:
    """Read until a message satisfies ``pred``; fail after ``timeout`` seconds in all."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        msg = await recv_json(sock, max(0.01, deadline - loop.time()))
        if pred(msg):
            return msg


async def open_ws(server, token: str, *, path: str = "/ws", **kwargs):
    """Open /ws with a bearer header and return (socket, connection message)."""
    sock = await websockets.connect(
        f"{server.ws}{path}", additional_headers={"Authorization": f"Bearer {token}"}, **kwargs
    )
    hello = await recv_json(sock)
    assert hello["type"] == "connection", hello
    return sock, hello


async def close_code(sock, timeout: float = 10) -> int | None:
    """Read until the server closes; the close code it sent (None: no close frame)."""
    with contextlib.suppress(asyncio.TimeoutError):
        async with asyncio.timeout(timeout):
            with contextlib.suppress(websockets.ConnectionClosed):
                while True:
                    await sock.recv()
    assert sock.state is websockets.State.CLOSED, f"still open after {timeout} s"
    return sock.close_code


async def rest(method: str, url: str, body: dict | None = None, **kwargs) -> tuple[int, dict]:
    return await asyncio.to_thread(call, method, url, body, **kwargs)


async def readiness(server) -> int:
    """The status /readyz of a server process answers (off the event loop)."""
    status, _ = await asyncio.to_thread(call, "GET", f"{server.http}/readyz")
    return status
