"""A private Redis Sentinel deployment on loopback: a master, a replica and three sentinels (Debian's
``redis-sentinel``, installed by scripts/bootstrap), each a real process on a free port, no persistence.
The machine's shared Redis (6379) is never touched."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from tests.hardening.conftest import wait_port
from tests.integration.http import free_port
from tests.polling import until_sync

MASTER_NAME = "axisor"
# Sentinel's own clocks: a master silent for DOWN_AFTER_MS is subjectively down; two of three
# sentinels agreeing make it objectively down and one of them promotes the replica.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


@dataclass
class SentinelDeployment:
    workdir: Path
    password: str | None = None  # the servers' requirepass (REDIS_PASSWORD)
    sentinel_password: str | None = None  # the sentinels' own (REDIS_SENTINEL_PASSWORD)
    servers: dict[int, subprocess.Popen] = field(default_factory=dict)  # port → redis-server
    sentinels: dict[int, subprocess.Popen] = field(default_factory=dict)  # port → redis-sentinel

    @property
    def env(self) -> dict[str, str]:
        """The settings a server process needs to use this deployment (and no REDIS_URL)."""
        addresses = ",".join(f"127.0.0.1:{port}" for port in self.sentinels)
        return {
            "REDIS_URL": "",
            "REDIS_SENTINELS": addresses,
            "REDIS_SENTINEL_MASTER": MASTER_NAME,
            "REDIS_PASSWORD": self.password or "",
            "REDIS_SENTINEL_PASSWORD": self.sentinel_password or "",
        }

    def server(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, password=self.password, decode_responses=True)

    def sentinel(self, port: int | None = None) -> redis.Redis:
        port = port or next(iter(self.sentinels))
        return redis.Redis(port=port, password=self.sentinel_password, decode_responses=True)

    def _server(self, *args: str) -> int:
        port = free_port()
        self.servers[port] = subprocess.Popen(
            [
                *("redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"),
                *("--dir", str(self.workdir), "--dbfilename", f"dump-{port}.rdb", *args),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(port)
        return port

    def _auth(self) -> tuple[str, ...]:
        return ("--requirepass", self.password, "--masterauth", self.password) if self.password else ()

    def _sentinel(self, master_port: int) -> None:
        port = free_port()
        conf = self.workdir / f"sentinel-{port}.conf"  # Sentinel rewrites its file: one each
        auth = f"sentinel auth-pass {MASTER_NAME} {self.password}\n" if self.password else ""
        if self.sentinel_password:  # its own, and the one it gives the other sentinels
            auth += f"requirepass {self.sentinel_password}\nsentinel sentinel-pass {self.sentinel_password}\n"
        conf.write_text(
            f"bind 127.0.0.1\nport {port}\ndir {self.workdir}\n{auth}"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        )
        self.sentinels[port] = subprocess.Popen(
            ["redis-sentinel", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_port(port)

    def start(self) -> None:
        assert shutil.which("redis-sentinel"), "redis-sentinel is not installed (scripts/bootstrap installs it)"
        master = self._server(*self._auth())
        replica = self._server(*self._auth(), "--replicaof", "127.0.0.1", str(master))
        until_sync(
            lambda: self.server(replica).info("replication")["master_link_status"] == "up",
            what="the replica in sync with the master",
        )
        for _ in range(3):
            self._sentinel(master)

        def every_sentinel_sees_all() -> bool:
            for port in self.sentinels:
                with self.sentinel(port) as s:
                    # (redis-py 6.4's sentinel_master() breaks on a plain client: the raw command)
                    reply = s.execute_command("SENTINEL", "MASTER", MASTER_NAME)
                state = dict(zip(reply[::2], reply[1::2], strict=True))
                if int(state["num-slaves"]) < 1 or int(state["num-other-sentinels"]) < 2:
                    return False
            return True

        # Sentinels find the replica and each other through the master (hello messages every 2 s);
        # until then no quorum could elect a leader to fail over.
        until_sync(every_sentinel_sees_all, timeout=30, what="three sentinels that know the replica and each other")

    def master_port(self) -> int:
        """The port of the master the sentinels name now."""
        with self.sentinel() as s:
            return int(s.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)[1])

    def kill_master(self) -> int:
        """SIGKILL the current master (no persistence: what it held and had not replicated is gone)."""
        port = self.master_port()
        self.servers[port].send_signal(signal.SIGKILL)
        self.servers[port].wait(timeout=10)
        return port

    def stop(self) -> None:
        for proc in [*self.sentinels.values(), *self.servers.values()]:
            if proc.poll() is None:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)


@contextlib.contextmanager
def sentinel_deployment(**passwords: str):
    workdir = Path(tempfile.mkdtemp(prefix="axsentinel-"))
    deployment = SentinelDeployment(workdir=workdir, **passwords)
    try:
        deployment.start()
        yield deployment
    finally:
        deployment.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def sentinel_redis():
    with sentinel_deployment() as deployment:
        yield deployment
