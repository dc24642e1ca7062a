"""Real daphne processes on the test database and Redis, for multi-process tests."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.db import connection

from tests.integration.http import free_port

ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"Listening on TCP address [\d.]+:(\d+)")
WORKER_READY = re.compile(r"Worker \d+ ready")


@dataclass
class Daphne:
    proc: subprocess.Popen
    port: int
    lines: list[str] = field(default_factory=list)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def stop(self, kill: bool = False) -> None:
        stop_process(self.proc, self.lines, "daphne", kill=kill, timeout=15)


def stop_process(proc: subprocess.Popen, lines: list[str], name: str, *, kill: bool, timeout: float) -> None:
    """SIGTERM (or SIGKILL) and wait; a process that ignores SIGTERM is killed (never left holding
    the test database) and the test fails with the end of its log."""
    if proc.poll() is None:
        (proc.kill if kill else proc.terminate)()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
            tail = "".join(lines[-30:])
            raise AssertionError(f"{name} did not stop within {timeout:.0f} s of SIGTERM:\n{tail}") from None


def subprocess_database_url() -> str:
    s = connection.settings_dict
    return f"postgres://{s['USER'] or 'postgres'}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def fresh_cache_prefix() -> str:
    """A cache namespace of the test's own: the servers of one test count logins together (as a
    fleet does), and no test inherits another's throttle counts (each test has a fresh database)."""
    from django.conf import settings

    return f"{settings.CACHE_KEY_PREFIX}:{uuid.uuid4().hex[:12]}"


def watch(proc: subprocess.Popen, lines: list[str], pattern: re.Pattern, count: int, name: str) -> list[re.Match]:
    """Keep every stderr line of ``proc`` in ``lines`` (a thread reads for the process's life) and
    return the first ``count`` matches of ``pattern``; RuntimeError if the process exits first."""
    found: queue.Queue[re.Match | None] = queue.Queue()

    def pump() -> None:
        for line in proc.stderr:
            lines.append(line)
            if m := pattern.search(line):
                found.put(m)
        found.put(None)

    threading.Thread(target=pump, daemon=True).start()
    matches = []
    for _ in range(count):
        if (m := found.get(timeout=60)) is None:
            raise RuntimeError(f"{name} exited:\n" + "".join(lines[-40:]))
        matches.append(m)
    return matches


@pytest.fixture
def daphne(transactional_db):
    """Start daphne processes on the test database: ``server = daphne(*daphne_args, **extra_env)``
    (e.g. ``daphne("--ping-interval", "1", WS_AUTH_TIMEOUT_SECONDS="2")``)."""
    started: list[Daphne] = []
    cache_prefix = fresh_cache_prefix()

    def start(*daphne_args: str, module: str = "daphne", **extra_env: str) -> Daphne:
        """``module``: what ``python -m`` runs (daphne, or a test's launcher of daphne's CLI)."""
        env = {
            **os.environ,
            "DATABASE_URL": subprocess_database_url(),
            "PYTHONUNBUFFERED": "1",
            "AXISOR_BACKGROUND": "1",
            "CACHE_KEY_PREFIX": cache_prefix,
        }
        env.update(extra_env)
        proc = subprocess.Popen(
            [sys.executable, "-m", module, "-b", "127.0.0.1", "-p", "0", *daphne_args, "axisor.asgi:application"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        server = Daphne(proc=proc, port=0)
        server.port = int(watch(proc, server.lines, LISTENING, 1, "daphne")[0].group(1))
        started.append(server)
        return server

    yield start
    failures = []
    for server in started:  # stop every one, even when one of them hangs
        try:
            server.stop()
        except AssertionError as exc:
            failures.append(str(exc))
    assert not failures, "\n".join(failures)


@dataclass
class Gunicorn:
    proc: subprocess.Popen
    port: int
    metrics_dir: Path
    lines: list[str] = field(default_factory=list)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def gunicorn(transactional_db, tmp_path):
    """Start the REST tier as deploy/ runs it (gunicorn with deploy/gunicorn.conf.py) on the test
    database: ``web = gunicorn(workers=2, **extra_env)``; returns once every worker has loaded."""
    started: list[Gunicorn] = []
    cache_prefix = fresh_cache_prefix()

    def start(workers: int = 2, **extra_env: str) -> Gunicorn:
        port = free_port()
        metrics_dir = tmp_path / f"metrics-{port}"
        env = {
            **os.environ,
            "DATABASE_URL": subprocess_database_url(),
            "PYTHONUNBUFFERED": "1",
            "GUNICORN_BIND": f"127.0.0.1:{port}",
            "WEB_CONCURRENCY": str(workers),
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "CACHE_KEY_PREFIX": cache_prefix,
            **extra_env,
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py")],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        server = Gunicorn(proc=proc, port=port, metrics_dir=metrics_dir)
        started.append(server)
        watch(proc, server.lines, WORKER_READY, workers, "gunicorn")
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.proc.terminate()
            try:
                server.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.proc.kill()
                server.proc.wait(timeout=15)


WORKER_STARTED = re.compile(r"worker (\S+): \d+ job thread")


@dataclass
class WorkerProcess:
    proc: subprocess.Popen
    lines: list[str] = field(default_factory=list)

    def log(self) -> str:
        return "".join(self.lines)

    def stop(self, kill: bool = False) -> None:
        stop_process(self.proc, self.lines, "worker", kill=kill, timeout=20)


@pytest.fixture
def worker(transactional_db):
    """Start ``manage.py worker`` processes on the test database and Redis:
    ``w = worker(**extra_env)``; returns once its job threads run."""
    started: list[WorkerProcess] = []

    def start(*args: str, **extra_env: str) -> WorkerProcess:
        env = {**os.environ, "DATABASE_URL": subprocess_database_url(), "PYTHONUNBUFFERED": "1", **extra_env}
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "worker", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        process = WorkerProcess(proc=proc)
        watch(proc, process.lines, WORKER_STARTED, 1, "worker")
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop(kill=True)
