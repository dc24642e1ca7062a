"""Hardening cases 16-17 on real daphne processes: a client that stops reading while 10,000 events
are pushed is closed as a slow consumer with server memory bounded and other clients unaffected; a
peer that vanishes without a FIN is detected within the heartbeat window and its tier slot freed."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import websockets
from channels.db import database_sync_to_async

from broadcast.messages import layer_event
from broadcast.outbox import group_send_many, publish_personal_many
from tests.conftest import jwt_for
from tests.hardening.conftest import close_code, open_ws, recv_json, rest, rss_mib, server_is_clean
from wire import envelope

EVENTS = 10_000
PAD = "x" * 4096  # 10,000 events ≈ 40 MiB: buffered without bound, it would show in RSS


def push_personal(user_id: int, n: int) -> None:
    for start in range(0, n, 1000):
        publish_personal_many(
            [
                (user_id, envelope("in_app_notification", "notifications", {"n": i, "pad": PAD}))
                for i in range(start, start + 1000)
            ]
        )


def push_system(n: int) -> None:
    text = json.dumps({"type": "service_status_update", "channel": "system", "data": {"pad": PAD}})
    for start in range(0, n, 1000):
        group_send_many([("system", layer_event(channel="system", seq=None, text=text))] * min(1000, n - start))


async def drain_until_closed(sock, timeout: float = 60) -> tuple[int, int | None]:
    received = 0
    try:
        async with asyncio.timeout(timeout):
            while True:
                await sock.recv()
                received += 1
    except websockets.ConnectionClosed:
        pass
    return received, sock.close_code


@pytest.mark.slow
@pytest.mark.parametrize("path", ["personal", "system"])
async def test_reader_that_stops_during_ten_thousand_events_is_closed_memory_bounded(
    daphne, make_user, instruments, path
):
    server = await asyncio.to_thread(daphne, WS_SLOW_SECONDS="2", AXISOR_SIMULATE="")
    sloth = await database_sync_to_async(make_user)(f"sloth-{path}")
    reader = await database_sync_to_async(make_user)(f"reader-{path}")
    # max_queue=1: the client library stops reading the socket once one frame waits unread
    slow = await websockets.connect(
        f"{server.ws}/ws",
        additional_headers={"Authorization": f"Bearer {jwt_for(sloth)}"},
        max_queue=1,
        max_size=None,
        ping_interval=None,
    )
    assert json.loads(await slow.recv())["type"] == "connection"
    fine, _ = await open_ws(server, jwt_for(reader), max_size=None)
    before = rss_mib(server.proc.pid)

    got = 0
    progress = asyncio.Condition()

    async def read_fine():
        nonlocal got
        while got < EVENTS:
            msg = await recv_json(fine, 30)
            if msg.get("channel") in ("notifications", "system"):
                got += 1
                async with progress:
                    progress.notify_all()

    async def until_read(count: int) -> None:
        async with progress:
            await asyncio.wait_for(progress.wait_for(lambda: got >= count), 60)

    if path == "personal":
        # the sloth's events, and as many for the reader, published together
        reading = asyncio.ensure_future(read_fine())
        await asyncio.gather(
            asyncio.to_thread(push_personal, sloth.pk, EVENTS), asyncio.to_thread(push_personal, reader.pk, EVENTS)
        )
    else:
        reading = asyncio.ensure_future(read_fine())
        # 4 MiB at a time, each once the reader has the one before. All 40 MiB at once is more
        # than Redis holds for one pub/sub subscriber that reads slower than it is written to
        # (client-output-buffer-limit pubsub, 32 MiB by default): Redis then cuts the process's
        # subscription, and room events, unlike personal ones, are not caught up
        # (docs/topics/events-and-resume.md).
        for start in range(0, EVENTS, 1000):
            await asyncio.to_thread(push_system, 1000)
            await until_read(start + 1000)
    await asyncio.wait_for(reading, 120)  # the reading client got every one of its events
    peak = rss_mib(server.proc.pid)
    received, code = await drain_until_closed(slow)
    after = rss_mib(server.proc.pid)
    print(
        f"\ncase 16 ({path}): the stalled reader got {received} of {EVENTS} before the server closed it "
        f"({code}); the other reader got all {got}; RSS {before:.0f} → {peak:.0f} → {after:.0f} MiB"
    )
    assert received < EVENTS
    assert code in (4009, None, 1006)  # 4009 sent; the frame itself may be lost behind unread data
    assert peak - before < 150, f"RSS grew {peak - before:.0f} MiB for one stalled reader"
    # ... and the sloth can come back and resume where it was.
    if path == "personal":
        back, hello = await open_ws(server, jwt_for(sloth))
        assert hello["lastSeq"] == EVENTS
        await back.close()
    await fine.close()
    server_is_clean(server)


# ---- case 17: a peer that vanishes without FIN ---------------------------------------------------


async def refused_at_once(sock) -> bool:
    """A refused /ws/orders socket gets its error at once; a held one says nothing until asked."""
    try:
        msg = await recv_json(sock, 2)
    except TimeoutError:
        await sock.send(json.dumps({"type": "ping"}))
        assert (await recv_json(sock))["type"] == "heartbeat"
        return False
    sock.refusal = msg
    return True


async def test_half_open_connections_are_detected_and_their_slot_freed(daphne, make_user, tcp_proxy):
    ping_interval, ping_timeout = 1, 2
    server = await asyncio.to_thread(
        daphne,
        "--ping-interval",
        str(ping_interval),
        "--ping-timeout",
        str(ping_timeout),
        ORDERS_LEASE_SECONDS="30",  # the slot must come back through the close, not the lease
        METRICS_TOKEN="m" * 20,
        AXISOR_SIMULATE="",
    )
    user = await database_sync_to_async(make_user)("ghost")  # basic: one order connection
    token = jwt_for(user)
    _, creds = await rest("POST", f"{server.http}/api/auth/sessions", token=token)
    proxy = tcp_proxy(server.port)
    via = f"ws://127.0.0.1:{proxy.port}"
    orders = await websockets.connect(
        f"{via}/ws/orders?session={creds['session']}&token={creds['token']}", ping_interval=None
    )
    await orders.send(json.dumps({"type": "ping"}))
    assert (await recv_json(orders))["type"] == "heartbeat"
    events = await websockets.connect(
        f"{via}/ws", additional_headers={"Authorization": f"Bearer {token}"}, ping_interval=None
    )
    assert (await recv_json(events))["type"] == "connection"

    def open_connections() -> dict[str, float]:
        import urllib.request

        req = urllib.request.Request(f"{server.http}/metrics", headers={"Authorization": "Bearer " + "m" * 20})
        text = urllib.request.urlopen(req, timeout=10).read().decode()
        out = {}
        for line in text.splitlines():
            if line.startswith("axisor_connections{"):
                out[line.split('endpoint="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
        return out

    assert await asyncio.to_thread(open_connections) == {"/ws": 1.0, "/ws/orders": 1.0}
    proxy.blackhole()  # the peer is gone: no FIN, no RST, nothing ever answers again
    vanished = time.monotonic()
    url = f"{server.ws}/ws/orders?session={creds['session']}&token={creds['token']}"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ping_interval + ping_timeout + 15
    while True:
        sock = await websockets.connect(url)
        first = sock.refusal if await refused_at_once(sock) else None
        if first is None:
            break
        assert first["closeCode"] == 4029, first  # still held by the ghost
        await close_code(sock)
        assert loop.time() < deadline, "the half-open connection still holds the slot"
        await asyncio.sleep(0.5)  # waiting on the server's ping timeout: nothing to await
    took = time.monotonic() - vanished
    assert await asyncio.to_thread(open_connections) == {"/ws": 0.0, "/ws/orders": 1.0}  # the new one
    print(
        f"\ncase 17: half-open sockets dropped and the tier slot freed {took:.1f} s after the peer vanished "
        f"(--ping-interval {ping_interval} --ping-timeout {ping_timeout})"
    )
    await sock.close()
    server_is_clean(server)
