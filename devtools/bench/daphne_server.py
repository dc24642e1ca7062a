"""A reference for bench_fanout: daphne as ours runs it, with nothing of ours behind it.

daphne -e ENDPOINT devtools.bench.daphne_server:application

The same daphne, Twisted and autobahn, tuned the same way (``core.internals.tune_daphne``: its
protocol options, input queues, connects admitted ``CONNECTS_IN_PROGRESS`` at a time;
``core.collector.tune_gc``), serving a bare ASGI application: it accepts every socket and, on a
connection to /publish?count=M&rate=R, broadcasts M messages (R per second, 0 = as fast as it can)
in process with daphne's own ``websocket.send``, one per socket, then answers "done". No
authentication, rooms, Redis, database or hub. Beside ours in the same run, it splits what a
connect costs between the socket server and our application. Its deliveries go the stock ASGI
way (a coroutine and autobahn's frame build per socket); ours write each event's frame, built
once, straight to every socket (``core.internals.direct_sender``), so what a delivery costs it is
daphne's stock send, not the part of ours that is daphne's.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from urllib.parse import parse_qs

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "axisor.settings")

from core import collector, internals

internals.tune_daphne()

sends: set = set()


async def publish(scope, send) -> None:
    query = parse_qs(scope.get("query_string", b"").decode("latin1"))
    count, rate = int(query["count"][0]), float(query.get("rate", ["0"])[0])
    for i in range(count):
        text = json.dumps(
            {"type": "bench", "channel": "system", "data": {"i": i, "t": time.time(), "pad": "x" * 40}},
            separators=(",", ":"),  # the same frame size as ours and the other references
        )
        for each in list(sends):
            await each({"type": "websocket.send", "text": text})
        if rate:
            await asyncio.sleep(1 / rate)
        elif i % 50 == 49:
            await asyncio.sleep(0)
    await send({"type": "websocket.send", "text": "done"})


async def application(scope, receive, send) -> None:
    if scope["type"] == "http":
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    internals.admission.settled(send)  # its connect is done: the next waiting one is read (as ours does)
    if scope["path"] == "/publish":
        await publish(scope, send)
    else:
        sends.add(send)
    try:
        while (await receive())["type"] != "websocket.disconnect":
            pass
    finally:
        sends.discard(send)


collector.tune_gc()  # last, as axisor/asgi.py: what start-up built is frozen out of every collection
