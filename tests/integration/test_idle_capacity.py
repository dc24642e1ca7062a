"""10,000 idle /ws connections on one daphne process (the scale-out guidance's figure): every one
opens, every one still receives a broadcast, and the process still answers HTTP. The sockets come
from the benchmark's lean load client in a process of its own."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from broadcast.outbox import publish
from broadcast.rooms import system_room
from tests.conftest import jwt_for
from wire import envelope

ROOT = Path(__file__).resolve().parents[2]
SOCKETS = int(os.environ.get("IDLE_CAPACITY_SOCKETS", "10000"))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.mark.timeout(600)
def test_ten_thousand_idle_connections_on_one_process(daphne, make_user, instruments):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = SOCKETS + 2000
    assert hard >= need, f"open-files hard limit {hard} < {need}: raise it (see docs/topics/deployment.md)"
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))  # inherited by both processes
    # One enterprise user with no /ws socket cap stands in for 10,000 users (caps: tests/hardening/test_caps.py).
    server = daphne(CAP_WS_SOCKETS_ENTERPRISE="0")
    before = rss_mib(server.proc.pid)
    token = jwt_for(make_user("idle", tier="enterprise"))
    client = subprocess.Popen(
        [sys.executable, str(ROOT / "devtools" / "bench" / "fanout_client.py"), f"{server.ws}/ws", token, str(SOCKETS)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        ready = json.loads(client.stdout.readline())
        assert ready["failed"] == 0, (ready, "".join(line for line in server.lines[-40:] if "WSCONNECT" not in line))
        after = rss_mib(server.proc.pid)
        client.stdin.write(json.dumps({"cmd": "expect", "count": 1}) + "\n")
        client.stdin.flush()
        publish(room=system_room(), event=envelope("bench", "system", {"i": 0, "t": time.time(), "pad": ""}))
        got = json.loads(client.stdout.readline())
        assert got["received"] == got["expected"] == SOCKETS
        with urllib.request.urlopen(f"{server.http}/healthz", timeout=30) as response:
            assert response.status == 200
        print(
            f"\n{SOCKETS} idle sockets: {ready['connectPerSecond']} connections/s, "
            f"server RSS {before:.0f} → {after:.0f} MiB ({(after - before) * 1024 / SOCKETS:.1f} KiB per socket), "
            f"broadcast p99 {got['p99ms']} ms"
        )
    finally:
        client.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
        client.stdin.flush()
        client.wait(timeout=120)
