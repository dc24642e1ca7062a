"""A client that stops reading, on a real daphne: once events that may not be dropped back up in its
socket, the server closes it (4009) instead of buffering without bound. The close frame itself
waits behind the unread data, so a reader that slow may see the connection end without it."""

from __future__ import annotations

import asyncio
import json

import websockets
from channels.db import database_sync_to_async

from broadcast.messages import layer_event
from broadcast.outbox import group_send_many
from tests.conftest import jwt_for


async def test_reader_that_stops_reading_is_closed_4009(daphne, make_user, instruments):
    server = await asyncio.to_thread(daphne, WS_SLOW_BYTES="65536", WS_SLOW_SECONDS="1")
    user = await database_sync_to_async(make_user)("sloth")
    headers = {"Authorization": f"Bearer {jwt_for(user)}"}
    # max_queue=1: the client library stops reading the socket once one frame waits unread
    async with websockets.connect(f"{server.ws}/ws", additional_headers=headers, max_queue=1, max_size=None) as sock:
        assert json.loads(await sock.recv())["type"] == "connection"
        big = "x" * 200_000
        sends = [
            ("system", layer_event(channel="system", seq=None, text=json.dumps({"n": i, "pad": big})))
            for i in range(60)
        ]
        await asyncio.to_thread(group_send_many, sends)
        await asyncio.sleep(3)  # the behaviour under test: a client that does not read (> WS_SLOW_SECONDS)
        received = 0
        try:
            while True:  # now read what the server managed to send before it gave up on us
                await asyncio.wait_for(sock.recv(), 30)
                received += 1
        except websockets.exceptions.ConnectionClosed as closed:
            assert closed.rcvd is None or closed.rcvd.code == 4009
        assert received < len(sends)  # the server stopped writing to a reader this slow
