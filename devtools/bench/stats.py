"""What bench_fanout reads from /proc and how it summarises runs: pure helpers, tested on their own."""

from __future__ import annotations

import os
import statistics
from pathlib import Path

# A load client that used more than this share of one core while it was measured may itself have
# been the limit: its run is marked client-bound.
CLIENT_BOUND = 0.7
# Clients and server together busier than this share of the machine's cores: what the clients
# took, the server could not have had, so a rate measured then is the machine's, not the server's.
MACHINE_BOUND = 0.9

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used so far (/proc/PID/stat, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def children(pid: int) -> list[int]:
    """The process's children (gunicorn's workers under its master), from /proc/PID/task/*/children."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def named(comm: str) -> list[int]:
    """The pids of processes called ``comm`` (/proc/PID/comm: e.g. ``postgres``, every backend)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == comm:
                found.append(int(entry.name))
        except OSError:  # gone meanwhile
            continue
    return found


def cpu_of(pids: list[int]) -> dict[int, float]:
    """CPU seconds so far per pid, leaving out any that has exited."""
    used = {}
    for pid in pids:
        try:
            used[pid] = cpu_seconds(pid)
        except OSError:
            continue
    return used


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cores(cpu: float, wall: float) -> float:
    """Cores used on average over a window: CPU seconds over wall seconds."""
    return cpu / wall if wall > 0 else 0.0


def client_bound(cpu: float, wall: float, threshold: float = CLIENT_BOUND) -> bool:
    """Whether a client that used `cpu` seconds over `wall` seconds may have been the bottleneck."""
    return cores(cpu, wall) > threshold


def summary(values: list[float]) -> dict:
    """Median of the runs and their spread (lowest, highest); NaNs (a figure a run lacked) are left out."""
    values = [v for v in values if v == v]
    if not values:
        return {"median": None, "min": None, "max": None}
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2), "max": round(max(values), 2)}
