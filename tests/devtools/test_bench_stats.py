"""bench_fanout's /proc readings and its client-bound check (devtools/bench/stats.py), on real
processes."""

from __future__ import annotations

import subprocess
import sys

from devtools.bench import stats
from devtools.management.commands.bench_fanout import Command

BURN = """
import sys, time
while time.process_time() < 0.3:
    pass
print("burnt", flush=True)
sys.stdin.readline()
"""


def test_a_client_over_seventy_percent_of_a_core_is_client_bound():
    assert stats.client_bound(cpu=0.8, wall=1.0)
    assert stats.client_bound(cpu=1.5, wall=2.0)
    assert not stats.client_bound(cpu=0.7, wall=1.0)  # at the threshold: not over it
    assert not stats.client_bound(cpu=0.3, wall=1.0)
    assert not stats.client_bound(cpu=0.0, wall=0.0)  # no window, no verdict
    assert stats.cores(cpu=3.0, wall=2.0) == 1.5


def test_a_connect_storm_is_bound_by_a_busy_client_or_a_busy_machine(monkeypatch):
    """A storm's connections/s says nothing of the server when a client used more than 70 % of a
    core, or when clients and server together kept 90 % of the machine's cores busy; its server CPU
    per connect is the servers' CPU over the storm per connected socket."""
    monkeypatch.setattr("os.cpu_count", lambda: 2)

    def storm(server_cpu: float, *clients: tuple[float, float]) -> dict:
        readies = [{"connectSeconds": wall, "connectCpuSeconds": cpu} for wall, cpu in clients]
        return Command.storm(readies, server_cpu, connected=1000)

    quiet = storm(0.8, (1.0, 0.3), (0.9, 0.3))  # server 0.8 + clients 0.63 cores of 2
    assert quiet == {"serverCpuMsPerConnect": 0.8, "connectClientCores": 0.33, "connectCores": 1.43,
                     "connectBound": False}  # fmt: skip
    assert storm(0.3, (1.0, 0.75))["connectBound"]  # one client over 70 % of a core
    busy = storm(1.0, (1.0, 0.45), (1.0, 0.4))  # no client over 70 %, but 1.85 of 2 cores busy
    assert busy["connectBound"] and busy["connectCores"] == 1.85
    assert storm(0.0, (1.0, 0.1))["serverCpuMsPerConnect"] == 0.0
    assert Command.storm([], 0.5, connected=0)["serverCpuMsPerConnect"] != 0.5  # nothing connected: NaN


def test_cpu_seconds_reads_what_a_process_used():
    proc = subprocess.Popen([sys.executable, "-c", BURN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "burnt\n"
        used = stats.cpu_seconds(proc.pid)
        assert 0.3 <= used + 0.02  # the kernel counts in clock ticks (10 ms)
        # waiting on stdin costs it nothing more
        assert stats.cpu_seconds(proc.pid) - used < 0.02
        assert stats.rss_kb(proc.pid) > 1000
    finally:
        proc.communicate("\n", timeout=10)


def test_summary_is_the_median_and_the_spread_of_the_runs():
    assert stats.summary([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0}
    assert stats.summary([4.0, float("nan"), 2.0]) == {"median": 3.0, "min": 2.0, "max": 4.0}
    assert stats.summary([]) == {"median": None, "min": None, "max": None}
