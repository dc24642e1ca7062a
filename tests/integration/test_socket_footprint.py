"""What an open socket keeps in a real daphne process, counted there (tests/integration/
daphne_census.py, asked over a Unix socket): the HTTP connection it was upgraded from (Twisted's
``HTTPChannel`` and daphne's ``WebRequest``, ~3.8 KB with their buffers and headers) is freed once the
socket is open (core.internals._release_http_channel), and the sockets still receive and answer."""

from __future__ import annotations

import asyncio
import json

import websockets
from channels.db import database_sync_to_async

from broadcast.messages import layer_event
from broadcast.outbox import group_send_many
from tests.conftest import jwt_for
from tests.polling import until

SOCKETS = 20
CHANNEL, REQUEST, SOCKET = (
    "twisted.web.http:HTTPChannel",
    "daphne.http_protocol:WebRequest",
    "daphne.ws_protocol:WebSocketProtocol",
)


async def census(path) -> dict[str, int]:
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        return json.loads(await reader.read())  # to EOF: the process closes once it is written
    finally:
        writer.close()


async def test_an_open_socket_keeps_nothing_of_the_http_connection_it_came_from(daphne, make_user, tmp_path):
    where = tmp_path / "census"
    server = await asyncio.to_thread(
        daphne,
        module="tests.integration.daphne_census",
        CENSUS_SOCKET=str(where),
        CENSUS_TYPES=",".join((CHANNEL, REQUEST, SOCKET)),
    )
    users = [await database_sync_to_async(make_user)(f"footprint{i}") for i in range(SOCKETS)]
    sockets = []
    async with asyncio.timeout(60):
        try:
            for user in users:
                headers = {"Authorization": f"Bearer {jwt_for(user)}"}
                sock = await websockets.connect(f"{server.ws}/ws", additional_headers=headers)
                assert json.loads(await sock.recv())["type"] == "connection"
                sockets.append(sock)

            last: dict[str, int] = {}

            async def requests_forgotten() -> dict[str, int] | None:
                last.update(await census(where))
                return dict(last) if last[REQUEST] == 0 else None

            # daphne drops an upgraded request from its own table once a second (its application
            # checker); after that, nothing may hold it. Without the release, the transport held the
            # channel and the channel its request, for as long as the socket stayed open.
            try:
                counts = await until(requests_forgotten, what="no upgraded request left", timeout=10, interval=0.2)
            except AssertionError as failed:
                raise AssertionError(f"{failed}; the last census: {last}") from None
            assert counts == {CHANNEL: 0, REQUEST: 0, SOCKET: SOCKETS}, counts
            # Still open both ways: a broadcast reaches each, and each is answered.
            text = json.dumps({"type": "footprint"})
            await asyncio.to_thread(group_send_many, [("system", layer_event(channel="system", seq=None, text=text))])
            for sock in sockets:
                while json.loads(await sock.recv()).get("type") != "footprint":
                    pass
                await sock.send(json.dumps({"type": "ping"}))
                while json.loads(await sock.recv())["type"] != "pong":
                    pass
        finally:
            for sock in sockets:
                await sock.close()
