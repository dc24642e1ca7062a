"""A faster Python ceiling for bench_fanout: a picows server on uvloop that broadcasts in process
(one `send` per socket, so each socket's frame is still built separately).

python devtools/bench/picows_server.py PORT
Clients connect to / and receive; a connection to /publish?count=M&rate=R makes the server
broadcast M messages (R per second, 0 = as fast as it can) to every other client, then answer
"done".
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from urllib.parse import parse_qs, urlparse

import uvloop
from picows import WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

BACKLOG = 1024  # the same listen backlog as the other servers in the benchmark

clients: set[WSTransport] = set()


class Receiver(WSListener):
    def on_ws_connected(self, transport: WSTransport) -> None:
        clients.add(transport)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        clients.discard(transport)


class Publisher(WSListener):
    def __init__(self, count: int, rate: float) -> None:
        self.count, self.rate = count, rate

    def on_ws_connected(self, transport: WSTransport) -> None:
        asyncio.get_running_loop().create_task(self.run(transport))

    async def run(self, transport: WSTransport) -> None:
        for i in range(self.count):
            message = json.dumps(
                {"type": "bench", "channel": "system", "data": {"i": i, "t": time.time(), "pad": "x" * 40}},
                separators=(",", ":"),  # compact, as ours and the node reference write it: the same frame size
            ).encode()
            for client in clients:
                client.send(WSMsgType.TEXT, message)
            if self.rate:
                await asyncio.sleep(1 / self.rate)
            elif i % 50 == 49:
                await asyncio.sleep(0)
        transport.send(WSMsgType.TEXT, b"done")


def route(request: WSUpgradeRequest) -> WSListener:
    url = urlparse(request.path.decode())
    if url.path == "/publish":
        q = parse_qs(url.query)
        return Publisher(int(q["count"][0]), float(q.get("rate", ["0"])[0]))
    return Receiver()


async def main(port: int) -> None:
    server = await ws_create_server(route, "127.0.0.1", port, backlog=BACKLOG, websocket_handshake_timeout=60)
    print(f"Listening on TCP address 127.0.0.1:{port}", file=sys.stderr, flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
