"""Presence across real daphne processes: every process's connections are counted, "disconnect"
reaches sockets on any process, and a killed process's connections vanish within the lease."""

from __future__ import annotations

import asyncio
import json
import time

import websockets
from channels.db import database_sync_to_async

from accounts.services import account_disconnect
from broadcast import presence
from tests.conftest import jwt_for
from tests.panel.grants import feed_reader
from tests.polling import until

LEASE = 3.0


async def recv_json(sock, timeout: float = 10) -> dict:
    return json.loads(await asyncio.wait_for(sock.recv(), timeout))


def by_pid(servers) -> dict:
    pids = {str(s.proc.pid): s for s in servers}
    return {p["process"]: p for p in presence.processes() if p["process"].rsplit(":", 1)[1] in pids}


async def connect(server, user) -> websockets.ClientConnection:
    sock = await websockets.connect(f"{server.ws}/ws", additional_headers={"Authorization": f"Bearer {jwt_for(user)}"})
    assert (await recv_json(sock))["type"] == "connection"
    return sock


async def test_counts_span_processes_and_a_dead_process_drops_out_within_the_lease(daphne, make_user, instruments):
    env = {"PRESENCE_LEASE_SECONDS": str(LEASE), "PRESENCE_STATS_SECONDS": "0.5"}
    a, b = await asyncio.to_thread(daphne, **env), await asyncio.to_thread(daphne, **env)
    staff = await database_sync_to_async(feed_reader)(make_user, "ops")
    user = await database_sync_to_async(make_user)("trader", tier="premium")

    watcher = await connect(a, staff)
    on_a, on_b = await connect(a, user), await connect(b, user)
    counts = await asyncio.to_thread(presence.connections_by_user, [user.pk])
    assert counts[user.pk] == {"/ws": 2, "/ws/orders": 0}

    def both_reporting():  # each process's record catches up with its sockets on its next tick
        procs = by_pid([a, b])
        return procs if sorted(p["connections"]["/ws"] for p in procs.values()) == [1, 2] else None

    procs = await until(
        both_reporting,
        timeout=10,
        what="both processes in the presence registry with their sockets",
        in_thread=True,
        interval=0.2,
    )

    # the staff socket on A hears B's stats (with B's socket) through the channel layer
    b_id = next(pid for pid in procs if pid.endswith(f":{b.proc.pid}"))
    async with asyncio.timeout(10):
        while True:
            msg = await recv_json(watcher)
            if msg["type"] == "admin_stats" and msg["data"]["process"] == b_id and msg["data"]["connections"]["/ws"]:
                break
    assert msg["data"]["connections"] == {"/ws": 1, "/ws/orders": 0}
    assert msg["data"]["rooms"] == {"user": 1, "system": 1, "admin": 0, "market": 0}

    # "disconnect" from this (third) process closes the user's sockets on both servers
    await database_sync_to_async(account_disconnect)(user=user, endpoints=["/ws"])
    for sock in (on_a, on_b):
        error = await recv_json(sock)
        assert error["code"] == "DISCONNECTED"
        await asyncio.wait_for(sock.wait_closed(), 10)
        assert sock.close_code == 4004

    # a connection on B, then B dies without a word: its connection and its entry vanish
    on_b = await connect(b, user)
    await until(
        lambda: presence.connections_by_user([user.pk])[user.pk]["/ws"] == 1,
        timeout=5,
        what="the new socket",
        in_thread=True,
        interval=0.2,
    )
    killed = time.monotonic()
    await asyncio.to_thread(b.stop, True)
    await until(
        lambda: presence.connections_by_user([user.pk])[user.pk]["/ws"] == 0,
        timeout=2 * LEASE + 2,
        what="lease expiry",
        in_thread=True,
        interval=0.2,
    )
    await until(
        lambda: list(by_pid([a, b])) == [next(iter(by_pid([a])))],
        timeout=2 * LEASE + 2,
        what="B off the registry",
        in_thread=True,
        interval=0.2,
    )
    print(f"dead process's connection gone {time.monotonic() - killed:.1f} s after SIGKILL (lease {LEASE:.0f} s)")
    await watcher.close()
    await on_b.close()

    # a clean stop (SIGTERM) takes the process and its connections off at once, not at lease expiry
    on_a = await connect(a, user)
    await until(lambda: by_pid([a]), timeout=5, what="A in the registry", in_thread=True, interval=0.2)
    await asyncio.to_thread(a.stop)
    assert not by_pid([a])
    assert presence.connections_by_user([user.pk])[user.pk]["/ws"] == 0
    await on_a.close()
