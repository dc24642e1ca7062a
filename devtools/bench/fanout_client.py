"""Load client for bench_fanout: N sockets in one process; counts `bench` messages and their
publish→receipt latency. Reads commands on stdin (one JSON per line) and answers on stdout.

python devtools/bench/fanout_client.py URL TOKEN|- N
stdin:  {"cmd": "expect", "count": M}   → waits until each socket got M more (or 60 s), prints stats
        {"cmd": "quit"}
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import websockets


class Stats:
    def __init__(self) -> None:
        self.received = 0
        self.latencies: list[float] = []
        self.first = self.last = 0.0


# Handshakes in flight at once. A fleet of 10,000 clients opening in the same instant makes a server
# (any server) answer none of them within its handshake timeout; real fleets spread out, and so do we.
IN_FLIGHT = 500


async def client(url: str, token: str | None, stats: Stats, connected: list, n: int, ready: asyncio.Event, gate):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with gate:
            ws = await websockets.connect(
                url, additional_headers=headers, max_queue=None, ping_interval=None, open_timeout=60
            )
            if token:
                await asyncio.wait_for(ws.recv(), 60)  # connection
    except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:  # counted, not waited for
        connected[1] += 1
        connected[2] = connected[2] or f"{type(exc).__name__}: {exc}"[:200]
        if connected[0] + connected[1] == n:
            ready.set()
        return
    connected[0] += 1
    if connected[0] + connected[1] == n:
        ready.set()
    async with ws:
        async for raw in ws:
            if '"bench"' not in raw:
                continue
            now = time.time()
            stats.latencies.append(now - json.loads(raw)["data"]["t"])
            stats.received += 1
            stats.first = stats.first or now
            stats.last = now


async def main(url: str, token: str | None, n: int) -> None:
    stats, connected, ready = Stats(), [0, 0, ""], asyncio.Event()
    start = time.time()
    gate = asyncio.Semaphore(IN_FLIGHT)
    tasks = [asyncio.create_task(client(url, token, stats, connected, n, ready, gate)) for _ in range(n)]
    await asyncio.wait_for(ready.wait(), 300)
    n = connected[0]  # deliveries are expected on the sockets that did connect
    print(
        json.dumps(
            {
                "ready": True,
                "connectPerSecond": round(n / (time.time() - start), 1),
                "failed": connected[1],
                "error": connected[2],
            }
        ),
        flush=True,
    )
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        cmd = json.loads(line) if line.strip() else {"cmd": "quit"}
        if cmd["cmd"] == "quit":
            break
        stats.received, stats.latencies, stats.first, stats.last = 0, [], 0.0, 0.0
        want = cmd["count"] * n
        deadline = time.time() + 60
        while stats.received < want and time.time() < deadline:  # noqa: ASYNC110 - polling a counter the sockets bump
            await asyncio.sleep(0.05)
        lat = sorted(stats.latencies)
        span = max(stats.last - stats.first, 1e-6)

        def pct(p: float, lat: list[float] = lat) -> float:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 1) if lat else float("nan")

        print(json.dumps({"received": stats.received, "expected": want, "perSecond": round(stats.received / span),
                          "p50ms": pct(0.5), "p99ms": pct(0.99)}), flush=True)  # fmt: skip
    for t in tasks:
        t.cancel()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], None if sys.argv[2] == "-" else sys.argv[2], int(sys.argv[3])))
