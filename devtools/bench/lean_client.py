"""The load client of bench_fanout: N WebSocket sockets in one process, on picows (Cython frame
parser) and uvloop, so that a received frame costs the client a few µs and the server, not the
client, is what is measured. The command reads this process's CPU from /proc to check that.

python devtools/bench/lean_client.py URL TOKENS_FILE|- N FIRST_MESSAGE(0|1) [SOURCE_ADDRESS]

TOKENS_FILE holds one JWT a line; socket i sends token i (a different user per socket). With
FIRST_MESSAGE=1 a socket counts as connected when its first message (our `connection`) arrives,
otherwise when the handshake completes. SOURCE_ADDRESS (e.g. 127.0.0.3) is the local address the
sockets connect from: each source address has its own ~28,000 ephemeral ports toward the server.

stdout: {"ready": true, "connectPerSecond", "connectSeconds", "connectCpuSeconds", "failed", "error"}
        once every socket is up or failed (the storm's wall time and this process's CPU over it).
stdin:  {"cmd": "expect", "count": M, "timeout": S} → waits until each socket got M more `bench`
        messages (or S seconds), answers {"received", "expected", "first", "last", "firstSent",
        "quantiles"} (publish→receipt latency quantiles in ms, 0 … 100 %, 201 points)
        {"cmd": "quit"}
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

IN_FLIGHT = 500  # handshakes in flight at once: a real fleet spreads out, and so do we
MARK = b'"t":'


class Counter:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.received = 0
        self.sent: list[float] = []  # publish time of each `bench` frame
        self.arrived: list[float] = []  # its receipt time


class Listener(WSListener):
    __slots__ = ("counter", "first")

    def __init__(self, counter: Counter, first: asyncio.Future | None) -> None:
        self.counter = counter
        self.first = first

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is not WSMsgType.TEXT:
            return
        payload = frame.get_payload_as_bytes()
        if self.first is not None:
            if not self.first.done():
                self.first.set_result(None)
            self.first = None
            return
        at = payload.find(MARK)
        if at < 0 or b'"bench"' not in payload:
            return
        end = at + 4
        while payload[end] not in b",}":
            end += 1
        c = self.counter
        c.received += 1
        c.sent.append(float(payload[at + 4 : end]))
        c.arrived.append(time.time())


async def open_one(url, token, counter, first_message, gate, status, source) -> WSTransport | None:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    loop = asyncio.get_running_loop()
    where = {"local_addr": (source, 0)} if source else {}
    async with gate:
        try:
            first = loop.create_future() if first_message else None
            transport, _ = await ws_connect(
                lambda: Listener(counter, first), url, extra_headers=headers, websocket_handshake_timeout=60, **where
            )
            if first is not None:
                await asyncio.wait_for(first, 60)
            status[0] += 1
            return transport
        except Exception as exc:  # noqa: BLE001 - counted and reported, not raised
            status[1] += 1
            status[2] = status[2] or f"{type(exc).__name__}: {exc}"[:200]
            return None


def quantiles(values: list[float], points: int = 201) -> list[float]:
    if not values:
        return []
    values = sorted(values)
    return [round(values[min(len(values) - 1, int(i / (points - 1) * len(values)))] * 1000, 2) for i in range(points)]


async def main(url: str, tokens: list[str | None], n: int, first_message: bool, source: str | None) -> None:
    counter, status, gate = Counter(), [0, 0, ""], asyncio.Semaphore(IN_FLIGHT)
    start, cpu = time.time(), time.process_time()
    opened = await asyncio.gather(
        *(open_one(url, tokens[i % len(tokens)], counter, first_message, gate, status, source) for i in range(n))
    )
    connected, seconds = status[0], time.time() - start
    print(json.dumps({"ready": True, "connectPerSecond": round(connected / seconds, 1),
                      "connectSeconds": round(seconds, 3), "connectCpuSeconds": round(time.process_time() - cpu, 3),
                      "failed": status[1], "error": status[2]}), flush=True)  # fmt: skip
    counter.reset()  # anything sent before the first measurement (none expected) is not counted
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        cmd = json.loads(line) if line.strip() else {"cmd": "quit"}
        if cmd["cmd"] == "quit":
            break
        want = cmd["count"] * connected
        deadline = time.time() + cmd.get("timeout", 60)
        while counter.received < want and time.time() < deadline:  # noqa: ASYNC110 - a counter the frames bump
            await asyncio.sleep(0.01)
        c = counter
        lat = [a - s for a, s in zip(c.arrived, c.sent, strict=True)]
        print(json.dumps({
            "received": c.received, "expected": want,
            "first": min(c.arrived, default=0.0), "last": max(c.arrived, default=0.0),
            "firstSent": min(c.sent, default=0.0), "quantiles": quantiles(lat),
        }), flush=True)  # fmt: skip
        counter.reset()
    for transport in opened:
        if transport is not None:
            transport.disconnect()


if __name__ == "__main__":
    path = sys.argv[2]
    toks: list[str | None] = [None] if path == "-" else Path(path).read_text().split()
    uvloop.run(
        main(sys.argv[1], toks, int(sys.argv[3]), sys.argv[4] == "1", sys.argv[5] if len(sys.argv) > 5 else None)
    )
