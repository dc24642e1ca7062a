"""The developer commands run as a developer runs them: `manage.py <command>` in its own process,
on a PostgreSQL database of its own, with small sizes. Each finishes and prints its figures."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def scratch_env():
    """A migrated scratch database (dropped afterwards) and the environment to run commands on it."""
    base = os.environ["DATABASE_URL"]
    name = f"axdev_{uuid.uuid4().hex[:8]}"
    admin = re.sub(r"/[^/]*$", "/postgres", base)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    env = {
        **os.environ,
        "DATABASE_URL": re.sub(r"/[^/]*$", f"/{name}", base),
        "CHANNEL_LAYER_PREFIX": f"axdev{uuid.uuid4().hex[:6]}",
        "AXISOR_BACKGROUND": "0",
    }
    run(env, "migrate", "-v0")
    try:
        yield env
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run(env: dict, *args: str, timeout: float = 180) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    sys.stderr.write(done.stderr)  # shown with a failing test: what a command said of refusals
    return done.stdout


def test_seed_demo_creates_the_demo_accounts(scratch_env):
    out = run(scratch_env, "seed_demo")
    assert "alice" in out and "admin" in out


def test_market_feed_feeds_rounds(scratch_env):
    assert "fed 3 round(s)" in run(scratch_env, "market_feed", "--count", "3")


def test_bench_market_prints_its_figures(scratch_env):
    out = run(scratch_env, "bench_market", "--symbols", "2", "--rate", "20", "--subscribers", "5", "--alerts", "50",
              "--seconds", "2")  # fmt: skip
    assert re.search(r"updates delivered/s\s+[1-9]", out), out


def test_bench_margin_times_the_guard_through_the_tick_pipeline(scratch_env):
    out = run(scratch_env, "bench_margin", "--positions", "200", "--users", "100", "--symbols", "2", "--ticks", "20",
              "--seconds", "1", "--connected", "10")  # fmt: skip
    # the evaluation timings come from wrapping the guard where the tick pipeline calls it
    assert re.search(r"positions_evaluate\s+p50 [0-9.]+ ms", out) and "(20 ticks)" in out, out


def test_bench_margin_refuses_more_positions_than_users_times_symbols(scratch_env):
    done = subprocess.run(
        [sys.executable, "manage.py", "bench_margin", "--positions", "200", "--users", "20", "--symbols", "2"],
        cwd=ROOT, env=scratch_env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0 and "more than one per user and symbol" in done.stderr


def test_bench_fanout_measures_ours_against_the_references(scratch_env, tmp_path):
    """A smoke run (tiny N, one run): every target, Node's ws and ours on uvicorn among them, is
    measured by the lean client, the table and the ratios are printed, and the JSON holds every
    figure; the PNG plot is written beside it."""
    out_json = tmp_path / "fanout.json"
    out = run(scratch_env, "bench_fanout", "--mode", "fanout", "--sizes", "10", "--runs", "1", "--deliveries", "50",
              "--rate-seconds", "0.5", "--json", str(out_json))  # fmt: skip
    targets = ("axisor", "ceiling", "picows", "channels", "node", "daphne", "uvicorn")
    references = targets[1:-1]
    for target in targets:
        assert re.search(rf"^  {target}\s+\S+ \| [1-9]\d* \|", out, re.M), out  # CPU µs | deliveries/s > 0
    for ours, reference in [*(("ours", r) for r in references), *(("uvicorn", r) for r in (*references, "axisor"))]:
        assert re.search(rf"{ours}/{reference}\s+CPU/deliv \S+×\s+deliveries/s [0-9.]+×", out), out
        assert re.search(rf"{ours}/{reference}\s+.* conn/s \S+×†?  CPU/conn \S+×  KB/idle", out), out
    # A burst's latency against an in-process reference is marked not comparable; against stock
    # Channels (the burst from Redis too) it is not marked.
    assert re.search(r"ours/ceiling\s+.* burst p99 \S+×\*  ", out) and "* burst p99 against a reference" in out, out
    assert re.search(r"ours/channels\s+.* burst p99 \S+×  ", out), out
    result = json.loads(out_json.read_text())
    figures = {"serverCpuUsPerDelivery", "deliveriesPerSecond", "burstP50Ms", "burstP99Ms", "rateP50Ms", "rateP99Ms",
               "connectsPerSecond", "serverCpuMsPerConnect", "idleKbPerSocket", "firstSocketKb",
               "clientCores"}  # fmt: skip
    assert [(r["n"], r["target"]) for r in result["rows"]] == [(10, t) for t in targets]
    for row in result["rows"]:
        assert figures <= row.keys()
        assert {"clientBound", "connectBound", "lost", "failed", "burstQuantilesMs"} <= row.keys()
        assert all(set(row[f]) == {"median", "min", "max"} for f in figures)
        assert row["deliveriesPerSecond"]["median"] > 0 and row["lost"] == 0 and row["failed"] == 0, row
        assert isinstance(row["clientBound"], bool) and len(row["burstQuantilesMs"]) == 101
        # /proc counts CPU in 10 ms ticks: ten connects may read as none
        assert isinstance(row["connectBound"], bool) and row["serverCpuMsPerConnect"]["median"] >= 0, row
    # What ours sets up on its first socket (its database pool's connection, Redis connections, their
    # threads) is reported apart from the idle sockets' memory.
    assert {r["target"]: r["firstSocketKb"]["median"] for r in result["rows"]}["axisor"] > 100
    assert [(q["ours"], q["reference"]) for q in result["ratios"]] == [
        *(("axisor", r) for r in references),
        *(("uvicorn", r) for r in (*references, "axisor")),
    ]
    assert all(figures - {"clientCores", "firstSocketKb"} == q.keys() & figures for q in result["ratios"])
    assert len(result["runs"]) == len(targets) and result["params"]["clientBoundAbove"] == 0.7
    assert result["params"]["machineBoundAbove"] == 0.9
    assert result["params"]["targets"] == list(targets)
    assert out_json.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_fanout_node_target_says_what_installs_node(scratch_env, tmp_path):
    """Without Node.js on PATH the node reference is refused before any run, naming what installs it."""
    env = {**scratch_env, "PATH": str(tmp_path)}  # an empty directory: no node (python is started by its full path)
    done = subprocess.run(
        [sys.executable, "manage.py", "bench_fanout", "--mode", "fanout", "--sizes", "10", "--targets", "axisor,node"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0 and "needs Node.js" in done.stderr and "scripts/bootstrap test" in done.stderr, (
        done.stderr
    )


def test_bench_fanout_scaleout_compares_two_processes_with_one(scratch_env, tmp_path):
    """A smoke run of the scale-out mode: ours on one process, then on two behind the one Redis,
    sockets split between them (one client each, from its own source address), each event published
    once; both rows, the ratio and the cores used are printed and in the JSON. No timing asserted."""
    out_json = tmp_path / "scaleout.json"
    out = run(scratch_env, "bench_fanout", "--mode", "scaleout", "--scaleout-size", "10", "--processes", "2",
              "--runs", "1", "--deliveries", "50", "--rate-seconds", "0.5", "--json", str(out_json))  # fmt: skip
    for count in (1, 2):
        assert re.search(rf"^\s+{count} \| [1-9]\d* \| \S+ \| ", out, re.M), out  # deliveries/s > 0
    assert re.search(r"2 processes / 1: deliveries/s [0-9.]+×", out), out
    result = json.loads(out_json.read_text())
    assert result["n"] == 10 and result["processes"] == 2 and result["ratio"] > 0
    for count in ("1", "2"):
        row = result["rows"][count]
        assert row["lost"] == 0 and row["failed"] == 0, row
        assert row["deliveriesPerSecond"]["median"] > 0, row
        # /proc counts CPU in 10 ms ticks: a burst this small may read as none
        assert row["serverCores"]["median"] >= 0 and row["clientCoresTotal"]["median"] >= 0, row
    assert [(r["processes"], r["deliveries"]) for r in result["runs"]] == [(1, 50), (2, 50)]


def test_bench_fanout_orders_measures_both_tiers_and_a_ramp(scratch_env):
    """A smoke run of the orders mode: placement → update with REST on daphne and on gunicorn, then
    the ramp as deployed, each step reporting what it placed; the orders go round three funded users
    (each update awaited on its own user's socket), their limit buys inside the price band after the
    module's earlier commands moved the market, so none is refused or rejected. No timing asserted:
    whether a step is sustained depends on the machine."""
    out = run(scratch_env, "bench_fanout", "--mode", "orders", "--order-rate", "10", "--order-seconds", "1",
              "--order-ramp", "10,20", "--order-users", "3")  # fmt: skip
    for tier in ("REST on the socket's daphne process", "REST on gunicorn workers"):
        figures = (
            r"orders 10  refused 0  rejected 0  missing updates 0  p50 [0-9.]+ ms  p99 [0-9.]+ ms  "
            r"server CPU [0-9.]+ ms/order  PostgreSQL [0-9.]+ ms/order  client [0-9.]+ cores"
        )
        assert re.search(rf"{tier}.*, 3 user\(s\):\n\s+{figures}", out), out
    steps = re.findall(r"^\s+(\d+)/s  placed [0-9.]+/s  refused 0  rejected 0  missing 0  p50 [0-9.]+ ms", out, re.M)
    assert steps and steps[0] == "10", out
    assert re.search(r"highest sustained rate: (\d+ orders/s|none of these)", out), out
