"""The broadcast write path: an event goes to the socket synchronously while nothing waits before
it, Twisted's transport sends at once instead of on the reactor's next turn (keeping order and
back-pressure when the kernel takes only part), leases are renewed in bounded pipelines, and
autobahn's debug arguments cost nothing unless written."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from broadcast import presence
from core import internals
from gateway import hub as hubmod
from gateway.hub import Outbox

# ---- the outbox's synchronous path ---------------------------------------------------------------


async def test_outbox_writes_at_once_and_queues_behind_anything_waiting(monkeypatch):
    direct: list[str] = []
    queued: list[str] = []
    backlog = {"bytes": 0}
    monkeypatch.setattr(hubmod, "direct_sender", lambda base_send: direct.append)
    monkeypatch.setattr(hubmod, "transport_backlog", lambda send: backlog["bytes"])
    drained = asyncio.Event()

    async def send_text(text: str) -> None:
        queued.append(text)
        if text == "after 2":
            drained.set()

    box = Outbox(send_text, object(), lambda: None)
    box.put("first", None)
    assert direct == ["first"] and box.task is None  # written in the caller's pass: no task, no wait

    backlog["bytes"] = 10 * hubmod.SLOW_BYTES  # the reader falls behind: events wait their turn
    box.put("held 1", None)
    backlog["bytes"] = 0
    box.put("after 1", None)  # the socket keeps up again, but "held 1" is still waiting: no overtaking
    box.put("after 2", None)
    assert direct == ["first"] and box.task is not None
    await asyncio.wait_for(drained.wait(), 5)
    assert queued == ["held 1", "after 1", "after 2"]
    await asyncio.sleep(0)  # the writer task ends once nothing waits
    assert box.task is None
    box.put("later", None)
    assert direct == ["first", "later"]


def test_direct_sender_only_for_daphne_and_never_raises_on_a_closing_socket():
    assert hubmod.direct_sender(None) is None
    assert hubmod.direct_sender(lambda message: None) is None

    class Protocol:
        STATE_OPEN, STATE_CLOSING = 1, 2

        def __init__(self) -> None:
            self.state = self.STATE_OPEN
            self.replies: list[dict] = []

        def handle_reply(self, message: dict) -> None:
            if self.state != self.STATE_OPEN:
                raise AssertionError("autobahn raises Disconnected here")
            self.replies.append(message)

    class Server:
        def __init__(self) -> None:
            self.connections: dict = {}

        async def handle_reply(self, protocol, message) -> None: ...

    import functools

    server, protocol = Server(), Protocol()
    server.connections[protocol] = {}
    send = hubmod.direct_sender(functools.partial(server.handle_reply, protocol))
    send("a")
    assert protocol.replies == [{"type": "websocket.send", "text": "a"}]
    protocol.state = Protocol.STATE_CLOSING
    send("b")  # dropped, not raised into the hub's pass over the room
    server.connections[protocol]["disconnected"] = True
    protocol.state = Protocol.STATE_OPEN
    send("c")
    del server.connections[protocol]
    send("d")
    assert [r["text"] for r in protocol.replies] == ["a"]


# ---- Twisted transports send at once ------------------------------------------------------------


class FakeReactor:
    """Records what a transport registers; the test plays the reactor's write readiness itself."""

    def __init__(self) -> None:
        self.writers: list = []

    def addWriter(self, fd) -> None:
        if fd not in self.writers:
            self.writers.append(fd)

    def removeWriter(self, fd) -> None:
        if fd in self.writers:
            self.writers.remove(fd)

    def addReader(self, fd) -> None: ...

    def removeReader(self, fd) -> None: ...


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    client.setblocking(False)
    return server, client


def read_all(sock: socket.socket) -> bytes:
    got = bytearray()
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            return bytes(got)
        if not chunk:
            return bytes(got)
        got += chunk


def test_eager_writes_send_at_once_and_fall_back_to_twisteds_buffer_in_order():
    from twisted.internet import protocol as twisted_protocol
    from twisted.internet import tcp

    server_sock, peer = tcp_pair()
    reactor = FakeReactor()
    transport = tcp.Connection(server_sock, twisted_protocol.Protocol(), reactor)
    transport.connected = 1
    assert internals.eager_writes(transport) is True
    assert internals.eager_writes(transport) is False  # once per transport
    assert server_sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)

    transport.write(b"frame-1")
    deadline = time.monotonic() + 5
    got = b""
    while got != b"frame-1" and time.monotonic() < deadline:
        got += read_all(peer)
    assert got == b"frame-1"  # on the wire without a reactor turn
    assert reactor.writers == []  # and without registering for write readiness

    # A reader that does not read: the kernel takes part of a big write, Twisted buffers the rest,
    # and a later small write queues behind it instead of overtaking.
    big = bytes(range(256)) * (64 * 1024)  # 16 MiB: more than loopback's socket buffers
    transport.write(big)
    assert transport._tempDataLen > 0 and reactor.writers == [transport]
    buffered = transport._tempDataLen
    transport.write(b"tail")
    assert transport._tempDataLen == buffered + len(b"tail")
    received = bytearray()
    deadline = time.monotonic() + 30
    while reactor.writers and time.monotonic() < deadline:
        received += read_all(peer)
        transport.doWrite()  # the reactor would call this when the socket is writable
    received += read_all(peer)
    while len(received) < len(big) + 4 and time.monotonic() < deadline:
        received += read_all(peer)
    assert bytes(received) == big + b"tail"
    transport.write(b"again")  # buffer empty again: straight to the socket
    assert reactor.writers == []
    server_sock.close()
    peer.close()


def test_eager_writes_only_on_plain_tcp():
    class Other:
        def write(self, data: bytes) -> None: ...

    assert internals.eager_writes(Other()) is False


def test_autobahn_debug_arguments_are_lazy():
    from autobahn import util
    from autobahn.websocket import protocol

    internals.tune_daphne()
    lazy = protocol.hltype(util.hltype)
    assert isinstance(lazy, internals._Lazy)
    assert str(lazy) == util.hltype(util.hltype)  # the same text when a debug line is written
    assert f"{protocol.hlval(42)}" == util.hlval(42)


# ---- lease renewal in bounded pipelines -----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_leases_are_written_in_chunks_one_command_per_user(monkeypatch):
    from django.conf import settings

    assert settings.REDIS_URL, "the tests run against the real Redis"
    monkeypatch.setattr(presence, "LEASE_CHUNK", 2)
    pipelines: list[int] = []
    real_pipeline = presence.redis_client().pipeline

    def counting_pipeline(*args, **kwargs):
        pipe = real_pipeline(*args, **kwargs)
        real_execute = pipe.execute

        async def execute(*a, **k):
            pipelines.append(len(pipe.command_stack))
            return await real_execute(*a, **k)

        pipe.execute = execute
        return pipe

    monkeypatch.setattr(presence.redis_client(), "pipeline", counting_pipeline)
    users = [910_001, 910_002, 910_003, 910_004, 910_005]
    conns = [(uid, f"/ws|test-proc|c{uid}-{i}") for uid in users for i in range(3)]
    conns.append((users[0], "/ws/orders|test-proc|o1"))
    try:
        await presence._write_leases(conns, time.time() + 30, process=("test-proc:1", {"process": "test-proc:1"}))
        await check_leases(users, pipelines)
    finally:  # no made-up process or user lingers for the rest of the run
        async with presence.redis_client().pipeline(transaction=False) as pipe:
            pipe.zrem(presence._procs_key(), "test-proc:1")
            pipe.delete(presence._proc_key("test-proc:1"), *(presence._user_key(uid) for uid in users))
            pipe.zrem(presence._online_key(), *(str(uid) for uid in users))
            await pipe.execute()


@pytest.mark.django_db(transaction=True)
async def test_connects_and_disconnects_of_a_storm_share_pipelines(monkeypatch):
    registry = presence.Registry()
    registry.stopping.set()  # no renewal loop: only the joins and leaves write
    pipelines: list[list[str]] = []
    real_pipeline = presence.redis_client().pipeline

    def counting_pipeline(*args, **kwargs):
        pipe = real_pipeline(*args, **kwargs)
        real_execute = pipe.execute

        async def execute(*a, **k):
            pipelines.append([str(command[0][0]) for command in pipe.command_stack])
            return await real_execute(*a, **k)

        pipe.execute = execute
        return pipe

    monkeypatch.setattr(presence.redis_client(), "pipeline", counting_pipeline)
    users = [920_001, 920_002, 920_003, 920_004, 920_005, 920_006]
    try:
        members = await asyncio.gather(*(registry.join(uid, "/ws", f"c{uid}") for uid in users))
        assert await asyncio.to_thread(presence.connections_by_user, users) == {
            uid: {"/ws": 1, "/ws/orders": 0} for uid in users
        }
        assert pipelines == [["ZADD", "EXPIRE"] * 6 + ["ZADD"]]  # the six leases: one pipeline

        await asyncio.gather(*(registry.leave(uid, member) for uid, member in zip(users, members, strict=True)))
        assert pipelines[1:] == [["ZREM"] * 6]  # the six removals: one pipeline, not six round trips
        assert await asyncio.to_thread(presence.connections_by_user, users) == {
            uid: {"/ws": 0, "/ws/orders": 0} for uid in users
        }
        assert registry.conns == {}
    finally:
        async with presence.redis_client().pipeline(transaction=False) as pipe:
            pipe.delete(*(presence._user_key(uid) for uid in users))
            pipe.zrem(presence._online_key(), *(str(uid) for uid in users))
            await pipe.execute()


async def check_leases(users: list[int], pipelines: list[int]) -> None:
    # 5 users in chunks of 2: three pipelines, each ZADD+EXPIRE per user and one ZADD of the users
    # online (the first also the process lease): 7 + 5 + 3 commands, not 3 per connection.
    assert pipelines == [2 * 2 + 1 + 2, 2 * 2 + 1, 1 * 2 + 1]
    counts = await asyncio.to_thread(presence.connections_by_user, users)
    assert counts[users[0]] == {"/ws": 3, "/ws/orders": 1}
    assert all(counts[uid] == {"/ws": 3, "/ws/orders": 0} for uid in users[1:])
    assert set(users) <= await presence.online_users()
    assert any(p["process"] == "test-proc:1" for p in await asyncio.to_thread(presence.processes))


def test_rest_middleware_stack_runs_synchronously():
    """The innermost middleware is sync-only, so Django adapts the whole stack to sync once and
    runs it on the request's thread, instead of hopping to the event loop around each built-in
    middleware (settings.MIDDLEWARE)."""
    from django.conf import settings
    from django.utils.module_loading import import_string

    innermost = import_string(settings.MIDDLEWARE[-1])
    assert getattr(innermost, "sync_capable", True) and not getattr(innermost, "async_capable", False)


@pytest.mark.django_db(transaction=True)
async def test_a_transactions_events_go_to_redis_in_one_pipeline_from_its_own_thread(monkeypatch):
    from channels.layers import get_channel_layer

    from broadcast.outbox import group_send_many, layer_event
    from gateway.hub import Hub

    layer = get_channel_layer()
    pipelines: list[int] = []
    real = layer.publish_blocking

    def recorded(sends):
        pipelines.append(len(sends))
        return real(sends)

    monkeypatch.setattr(layer, "publish_blocking", recorded)
    got: list[str] = []
    both = asyncio.Event()

    class Member:
        def deliver(self, message: dict) -> None:
            got.append(message["text"])
            if len(got) == 2:
                both.set()

    h = Hub()
    await h.join("system", Member())
    sends = [("system", layer_event(channel="system", seq=None, text=f'{{"n":{i}}}')) for i in range(2)]
    assert await asyncio.to_thread(group_send_many, sends) == 2  # a thread with no event loop of its own
    await asyncio.wait_for(both.wait(), 5)
    assert got == ['{"n":0}', '{"n":1}'] and pipelines == [2]
    await h.leave("system", h.members["system"].copy().pop())
    h.task.cancel()
