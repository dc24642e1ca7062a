"""A burst through a real daphne: the hub drains what Redis has already delivered and each socket's
frames of a batch leave together (core.internals.corked). Every socket gets every message, once,
in publish order, and a quiet message after the burst still arrives on its own."""

from __future__ import annotations

import asyncio
import json

import websockets
from channels.db import database_sync_to_async

from broadcast.messages import layer_event
from broadcast.outbox import group_send_many
from tests.conftest import jwt_for


async def test_a_burst_reaches_every_socket_whole_and_in_order(daphne, make_user, instruments):
    server = await asyncio.to_thread(daphne)
    users = [await database_sync_to_async(make_user)(f"burst{i}") for i in range(3)]
    sockets = []
    async with asyncio.timeout(60):
        for user in users:
            headers = {"Authorization": f"Bearer {jwt_for(user)}"}
            sock = await websockets.connect(f"{server.ws}/ws", additional_headers=headers, max_queue=None)
            assert json.loads(await sock.recv())["type"] == "connection"
            sockets.append(sock)
        sends = [
            ("system", layer_event(channel="system", seq=None, text=json.dumps({"type": "burst", "n": i})))
            for i in range(300)
        ]
        await asyncio.to_thread(group_send_many, sends)  # one pipeline: the process reads them in a few reads
        await asyncio.to_thread(
            group_send_many,
            [("system", layer_event(channel="system", seq=None, text=json.dumps({"type": "burst", "n": 300})))],
        )

        async def read(sock) -> list[int]:
            got: list[int] = []
            while len(got) < 301:
                message = json.loads(await sock.recv())
                if message.get("type") == "burst":
                    got.append(message["n"])
            return got

        for got in await asyncio.gather(*(read(sock) for sock in sockets)):
            assert got == list(range(301))
        for sock in sockets:
            await sock.close()
