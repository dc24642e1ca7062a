"""The `@axisor/realtime` package (clients/js) against a real daphne process: its Node test suite
(``node --test clients/js/test/``) runs with the server's address and the users made here."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import jwt_for

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "clients" / "js"


def built_package() -> Path:
    """clients/js/dist, built from the current sources (scripts/bootstrap runs `npm ci` and `tsc`)."""
    dist = PACKAGE / "dist"
    sources = list((PACKAGE / "src").glob("*.ts"))
    assert (dist / "index.js").exists(), "clients/js is not built: run scripts/bootstrap test (npm ci, npm run build)"
    newest = max(p.stat().st_mtime for p in sources)
    stale = [p.name for p in sources if not (dist / p.with_suffix(".js").name).exists()]
    assert not stale and (dist / "index.js").stat().st_mtime >= newest - 1, (
        "clients/js/dist is older than its sources: run `npm run build` in clients/js (or scripts/bootstrap test)"
    )
    return dist


def node_command() -> list[str]:
    node = shutil.which("node")
    assert node, "Node.js is needed for the JS package's tests (scripts/bootstrap installs it)"
    # Node 20 has its WebSocket behind this flag; later versions have it on (and still accept it).
    flag = subprocess.run([node, "--experimental-websocket", "-e", ""], capture_output=True).returncode == 0
    return [node, *(["--experimental-websocket"] if flag else []), "--no-warnings"]


@pytest.mark.django_db(transaction=True)
def test_node_suite_against_a_real_server(daphne, make_user, instruments):
    built_package()
    server = daphne()
    users = {
        name: make_user(f"js-{name}", tier=tier)
        for name, tier in (("events", "basic"), ("expiring", "basic"), ("orders", "premium"), ("limited", "basic"))
    }
    short_expiry = int(time.time()) + 12  # auth_expiring comes a quarter of the lifetime before
    live = {
        "http": server.http,
        "ws": server.ws,
        "users": {name: {"jwt": jwt_for(user)} for name, user in users.items()},
    }
    live["users"]["expiring"].update(shortJwt=jwt_for(users["expiring"], exp=short_expiry), shortExpiresAt=short_expiry)
    tests = sorted(str(p.relative_to(PACKAGE)) for p in (PACKAGE / "test").rglob("*.test.mjs"))
    started = time.monotonic()
    try:
        result = subprocess.run(
            [*node_command(), "--test", "--test-concurrency=4", "--test-timeout=40000", "--test-reporter=spec", *tests],
            cwd=PACKAGE,
            env={"PATH": "/usr/bin:/bin", "AXISOR_LIVE": json.dumps(live)},
            capture_output=True,
            text=True,
            timeout=90,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"node --test did not finish in 90 s:\n{exc.stdout}\n{exc.stderr}")
    print(f"\nnode --test: {time.monotonic() - started:.1f} s\n{result.stdout[-4000:]}")
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-4000:]
    assert "# fail 0" in result.stdout or "ℹ fail 0" in result.stdout
