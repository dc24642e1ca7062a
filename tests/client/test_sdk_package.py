"""The SDK as users get it: ``python -m build clients/python`` makes the sdist and the wheel, the
wheel is installed into a directory of its own, and programs run from an empty directory (so the
checkout's ``axisor_client`` is out of reach) import it from there and use it against a real
daphne process: the examples of docs/topics/python-sdk.md as written (only the server's address
changed), the console script, typed errors with the server's ``code``, and the refresh token
rotating under a login throttle that a client falling back to its password would hit."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from margin.ticks import ticks_ingest
from notifications.services import notification_create
from tests.client.support import QUIET, set_login_password
from tests.orders.factories import execute, place
from tests.polling import window_room

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "topics" / "python-sdk.md"
DOCS_SERVER = "http://127.0.0.1:8000"


@pytest.fixture(scope="session")
def sdk(tmp_path_factory) -> Path:
    """Build the sdist and wheel (offline: the pinned setuptools and wheel of the venv) and install
    the wheel, without dependencies (the venv has the pinned ones), into a target directory."""
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(ROOT / "clients" / "python")],
        check=True,
        capture_output=True,
        cwd=tmp_path_factory.mktemp("build-cwd"),
    )
    wheels = list(dist.glob("axisor_client-*-py3-none-any.whl"))
    assert len(wheels) == 1 and list(dist.glob("axisor[-_]client-*.tar.gz")), sorted(p.name for p in dist.iterdir())
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(target), wheels[0]],
        check=True,
        capture_output=True,
    )
    return target


def run(sdk: Path, cwd: Path, *args: str, timeout: float = 60) -> str:
    env = {**os.environ, "PYTHONPATH": str(sdk)}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S)


def test_the_wheel_is_complete(sdk, tmp_path):
    wheel_files = {p.relative_to(sdk).as_posix() for p in sdk.rglob("*") if p.is_file()}
    assert "axisor_client/py.typed" in wheel_files
    assert any(re.fullmatch(r"axisor_client-[\d.]+\.dist-info/(licenses/)?LICENSE", f) for f in wheel_files)
    metadata = next(sdk.glob("axisor_client-*.dist-info")) / "METADATA"
    requires = [line for line in metadata.read_text().splitlines() if line.startswith("Requires-Dist:")]
    assert sorted(re.split(r"[<>=!~ ;]", r.split(maxsplit=1)[1])[0] for r in requires) == ["httpx", "websockets"]
    out = run(sdk, tmp_path, sys.executable, "-c", "import axisor_client; print(axisor_client.__file__)")
    assert Path(out.strip()).is_relative_to(sdk), out
    # the console script, as pip made it
    assert "tail" in run(sdk, tmp_path, str(sdk / "bin" / "axisor"), "--help")


def test_docs_examples_run_against_a_real_server(sdk, daphne, make_user, instruments, tmp_path):
    server = daphne(**QUIET)
    alice = make_user("alice")
    set_login_password(alice, "alice-demo-1")
    filled = place(alice, quantity="10", price="625.50")
    execute(filled, "accept")
    execute(filled, "fill", quantity="10", price="625.50")
    notification_create(user=alice, title="Welcome aboard", message="hi", category="system")
    ticks_ingest([{"symbol": "BTC_USD", "price": "43250.5", "volume": "1"}])

    blocks = examples()
    assert len(blocks) == 2, "docs/topics/python-sdk.md: the sync and async examples"
    outputs = []
    for i, block in enumerate(blocks):
        assert DOCS_SERVER in block
        script = tmp_path / f"example_{i}.py"
        script.write_text(block.replace(DOCS_SERVER, server.http))
        outputs.append(run(sdk, tmp_path, sys.executable, str(script)).splitlines())

    sync, asynchronous = outputs
    assert sync[0].startswith("available ") and float(sync[0].split()[1]) > 0
    assert sync[1:7] == [
        "guard True 0.2 notify",
        "modified True 2",
        "refused 409 invalid_transition",
        "history ORDER_PLACED ORDER_MODIFIED ORDER_CANCELLED",
        "trade SBIN-EQ 10 625.5",
        "position SBIN-EQ long 10",
    ], sync
    # the unread inbox: the notification made above and the fill's own, each marked read
    assert sorted(sync[7:]) == ["read Order executed", "read Welcome aboard"], sync
    assert asynchronous[:2] == ["update ORDER_PLACED PENDING", "update ORDER_CANCELLED CANCELLED"], asynchronous
    assert asynchronous[2].startswith("instruments ") and int(asynchronous[2].split()[1]) > 0
    events = asynchronous[3].split()
    assert events[0] == "events" and int(events[1]) == 10 and int(events[3]) > 10, asynchronous


CHECKS = """
import asyncio, sys
from axisor_client import AsyncRestClient, BadRequest, NotFound, RateLimited, RestClient, Unauthorized

url, user, password = sys.argv[1:4]
with RestClient(url, username=user, password=password) as api:
    refresh_tokens = set()
    for _ in range(5):  # access tokens live 30 s, under the 60 s margin: every call refreshes first
        api.margin_guard()
        refresh_tokens.add(api._session.refresh)
    print("sync refreshes", len(refresh_tokens))
    try:
        api.order("999999999")
    except NotFound as exc:
        print("not found", exc.status, exc.code)
    try:
        api.place_order("SBIN-EQ", "BUY", -1, "LIMIT", price=600)
    except BadRequest as exc:
        print("bad request", exc.code, sorted(exc.fields))


async def main():
    async with AsyncRestClient(url, username=user, password=password) as api:
        for _ in range(3):
            await api.account()
        print("async guard", (await api.set_margin_guard(cooldown_seconds=120))["cooldownSeconds"])
    for _ in range(3):  # two logins an hour per username on this server
        async with AsyncRestClient(url, username="nobody", password="wrong") as api:
            try:
                await api.login()
            except RateLimited as exc:
                print("throttled", exc.status, exc.code, exc.retry_after > 0)
            except Unauthorized as exc:
                print("refused", exc.status, exc.code)


asyncio.run(main())
"""


def test_typed_errors_and_rotating_refresh(sdk, daphne, make_user, instruments, tmp_path):
    # Two logins an hour per username: a client that lost its rotated refresh token and fell back
    # to its password would be throttled on its third login.
    server = daphne(**QUIET, JWT_ACCESS_SECONDS="30", THROTTLE_LOGIN_USERNAME="2/h")
    bob = make_user("bob")
    set_login_password(bob, "bob-pass-1234")
    script = tmp_path / "checks.py"
    script.write_text(CHECKS)
    # The throttle counts per fixed window: the three logins must fall in one of them (a clock wait;
    # with a window of an hour it waits only in the last two minutes of one).
    time.sleep(window_room(period=3600, need=120))
    out = run(sdk, tmp_path, sys.executable, str(script), server.http, "bob", "bob-pass-1234").splitlines()
    assert out == [
        "sync refreshes 5",
        "not found 404 not_found",
        "bad request validation_error ['quantity']",
        "async guard 120",
        "refused 401 no_active_account",
        "refused 401 no_active_account",
        "throttled 429 throttled True",
    ], out


def test_tutorial_example_places_an_order_the_paper_venue_fills(sdk, daphne, make_user, instruments, tmp_path):
    """docs/tutorial.md section 4, as written: both sockets, a MARKET order placed with
    ``AsyncRestClient``, its ``ORDER_EXECUTED`` from the paper venue."""
    server = daphne(AXISOR_SIMULATE="venue")
    alice = make_user("alice")
    set_login_password(alice, "alice-demo-1")
    ticks_ingest([{"symbol": "BTC_USD", "price": "43000.5", "volume": "1"}])
    text = (ROOT / "docs" / "tutorial.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "AsyncRestClient" in b]
    script = tmp_path / "tutorial.py"
    script.write_text(block.replace(DOCS_SERVER, server.http))
    out = run(sdk, tmp_path, sys.executable, str(script)).splitlines()
    assert any(re.fullmatch(r"order \d+ executed at 43000\.5", line) for line in out), out
    assert any(re.fullmatch(r"order \d+ ORDER_PLACED PENDING seq \d+", line) for line in out), out
