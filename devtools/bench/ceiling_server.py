"""The ceiling for bench_fanout: a plain `websockets` server, on uvloop, that broadcasts in process.

python devtools/bench/ceiling_server.py PORT
Clients connect to / and receive; a connection to /publish?count=M&rate=R makes the server
broadcast M messages (R per second, 0 = as fast as it can) to every other client, then close.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from urllib.parse import parse_qs, urlparse

import uvloop
import websockets

BACKLOG = 1024  # the same listen backlog as our server in the benchmark

clients: set = set()


async def handler(ws) -> None:
    url = urlparse(ws.request.path)
    if url.path == "/publish":
        q = parse_qs(url.query)
        count, rate = int(q["count"][0]), float(q.get("rate", ["0"])[0])
        for i in range(count):
            message = json.dumps(
                {"type": "bench", "channel": "system", "data": {"i": i, "t": time.time(), "pad": "x" * 40}},
                separators=(",", ":"),  # compact, as ours and the node reference write it: the same frame size
            )
            websockets.broadcast(clients, message)
            if rate:
                await asyncio.sleep(1 / rate)
            elif i % 50 == 49:
                await asyncio.sleep(0)
        await ws.send("done")
        return
    clients.add(ws)
    try:
        await ws.wait_closed()
    finally:
        clients.discard(ws)


async def main(port: int) -> None:
    async with websockets.serve(handler, "127.0.0.1", port, max_queue=None, ping_interval=None, backlog=BACKLOG):
        print(f"Listening on TCP address 127.0.0.1:{port}", file=sys.stderr, flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
