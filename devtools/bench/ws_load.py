"""A lean load client for the benchmarks: N /ws connections in one process, each subscribed to one
market room (round-robin over the symbols). Prints one JSON summary line at the end.

python devtools/bench/ws_load.py URL TOKEN N SYMBOLS_CSV SECONDS
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import datetime

import websockets


async def client(url: str, token: str, symbol: str, ready: asyncio.Event, stop: asyncio.Event, stats: dict, n: int):
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {token}"}, max_queue=None) as sock:
        await sock.recv()  # connection
        await sock.send(json.dumps({"type": "subscribe", "channel": f"market:{symbol}"}))
        stats["connected"] += 1
        if stats["connected"] == n:
            ready.set()
        while not stop.is_set():
            try:
                raw = await asyncio.wait_for(sock.recv(), 0.5)
            except TimeoutError:
                continue
            if '"market_data_update"' not in raw:
                continue
            msg = json.loads(raw)
            sent = datetime.fromisoformat(msg["data"]["timestamp"].replace("Z", "+00:00")).timestamp()
            if stats["measuring"]:
                stats["received"] += 1
                stats["latencies"].append(time.time() - sent)


async def main(url: str, token: str, n: int, symbols: list[str], seconds: float) -> None:
    ready, stop = asyncio.Event(), asyncio.Event()
    stats = {"connected": 0, "received": 0, "latencies": [], "measuring": False}
    started = time.time()
    tasks = []
    for i in range(n):
        tasks.append(asyncio.create_task(client(url, token, symbols[i % len(symbols)], ready, stop, stats, n)))
        if i % 100 == 99:
            await asyncio.sleep(0)  # let handshakes progress
    await asyncio.wait_for(ready.wait(), 120)
    connect_time = time.time() - started
    print(json.dumps({"ready": True, "connectSeconds": round(connect_time, 2)}), flush=True)
    await asyncio.sleep(1)  # subscriptions settle, snapshots drain
    stats["measuring"] = True
    t0 = time.time()
    await asyncio.sleep(seconds)
    stats["measuring"] = False
    elapsed = time.time() - t0
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    lat = sorted(stats["latencies"])

    def pct(p: float) -> float:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 1) if lat else float("nan")

    print(json.dumps({
        "connections": n, "received": stats["received"], "seconds": round(elapsed, 2),
        "perSecond": round(stats["received"] / elapsed, 1), "p50ms": pct(0.50), "p99ms": pct(0.99),
        "connectPerSecond": round(n / connect_time, 1),
    }), flush=True)  # fmt: skip


if __name__ == "__main__":
    url, token, n, symbols, seconds = (
        sys.argv[1],
        sys.argv[2],
        int(sys.argv[3]),
        sys.argv[4].split(","),
        float(sys.argv[5]),
    )
    asyncio.run(main(url, token, n, symbols, seconds))
