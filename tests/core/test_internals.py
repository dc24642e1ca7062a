"""core.internals: the start-up check refuses releases or attributes our patches were not written
for and names what changed; the direct socket writes behind daphne's send (and uvicorn's, a
benchmark target); Twisted transports
that send at once (keeping order and back-pressure when the kernel takes only part); autobahn's
debug arguments cost nothing unless written."""

import socket
import time

import pytest
from daphne.ws_protocol import WebSocketProtocol

from core import internals


def test_the_installed_frameworks_pass_the_check():
    internals.check()


def test_a_missing_attribute_fails_loudly_and_names_it(monkeypatch):
    monkeypatch.delattr(WebSocketProtocol, "handle_reply")
    with pytest.raises(internals.InternalsChanged) as raised:
        internals.check()
    assert "daphne.ws_protocol.WebSocketProtocol.handle_reply is gone" in str(raised.value)


def test_where_uvicorn_runs_what_direct_sender_reads_of_it_is_checked_too(monkeypatch):
    import uvicorn  # noqa: F401 - in sys.modules, as in a process uvicorn runs
    from websockets.protocol import Protocol

    monkeypatch.delattr(Protocol, "send_text")
    with pytest.raises(internals.InternalsChanged, match=r"websockets.protocol.Protocol.send_text is gone"):
        internals.check()
    monkeypatch.undo()
    monkeypatch.setitem(internals.OPTIONAL_VERSIONS, "uvicorn", "0.0.1")
    with pytest.raises(internals.InternalsChanged, match=r"uvicorn is 0.55.0, core/internals.py was written against"):
        internals.check()


def test_a_daphne_process_is_not_held_to_uvicorns_release(monkeypatch):
    """uvicorn installed beside daphne (the development lock) but not running this process: its
    release is not the server's business."""
    import sys

    monkeypatch.delitem(sys.modules, "uvicorn", raising=False)
    monkeypatch.setitem(internals.OPTIONAL_VERSIONS, "uvicorn", "0.0.1")
    internals.check()


def test_a_missing_module_fails_loudly(monkeypatch):
    monkeypatch.setattr(internals, "NEEDS", (*internals.NEEDS, ("daphne.no_such_module", None, "x")))
    with pytest.raises(internals.InternalsChanged, match=r"daphne.no_such_module is gone"):
        internals.check()


def test_another_release_fails_loudly(monkeypatch):
    monkeypatch.setitem(internals.VERSIONS, "daphne", "0.0.1")
    with pytest.raises(internals.InternalsChanged) as raised:
        internals.check()
    assert "daphne is 4.2.3, core/internals.py was written against 0.0.1" in str(raised.value)


def test_every_patched_framework_is_pinned_to_the_checked_release():
    """requirements.txt (the hash-locked set) pins exactly the releases the check expects; the
    development lock, those of the benchmark's uvicorn target."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for lock_file, versions in (
        ("requirements.txt", internals.VERSIONS),
        ("requirements-dev.txt", internals.OPTIONAL_VERSIONS),
    ):
        lock = root.joinpath(lock_file).read_text().lower()
        for dist, version in versions.items():
            names = {dist.lower(), dist.lower().replace("-", "_")}
            assert any(f"{name}=={version}" in lock for name in names), f"{dist}=={version} is not in {lock_file}"


def test_an_attribute_init_no_longer_sets_fails_loudly(monkeypatch):
    from twisted.internet.abstract import FileDescriptor

    def __init__(self, reactor=None):  # a release whose FileDescriptor keeps no _tempDataLen
        self.reactor = reactor

    monkeypatch.setattr(FileDescriptor, "__init__", __init__)
    with pytest.raises(internals.InternalsChanged, match=r"FileDescriptor._tempDataLen is gone"):
        internals.check()


def test_direct_sender_only_for_daphne_and_never_raises_on_a_closing_socket():
    assert internals.direct_sender(None) is None
    assert internals.direct_sender(lambda message: None) is None

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
    send = internals.direct_sender(functools.partial(server.handle_reply, protocol))
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


def test_corked_writes_go_out_as_one_send_per_socket_in_order():
    """While the hub handles a batch, each socket's frames wait and leave in one send() at its end,
    in the order they were written; a socket Twisted holds bytes for keeps them behind those."""
    from twisted.internet import protocol as twisted_protocol
    from twisted.internet import tcp

    class Counting:
        def __init__(self, sock: socket.socket) -> None:
            self.sock, self.sends = sock, 0

        def send(self, data) -> int:
            self.sends += 1
            return self.sock.send(data)

        def __getattr__(self, name):
            return getattr(self.sock, name)

    pairs = []
    for _ in range(2):
        server_sock, peer = tcp_pair()
        transport = tcp.Connection(server_sock, twisted_protocol.Protocol(), FakeReactor())
        transport.connected = 1
        transport.socket = counting = Counting(server_sock)
        assert internals.eager_writes(transport)
        pairs.append((transport, counting, peer, server_sock))
    (a, a_sends, a_peer, _), (b, b_sends, b_peer, _) = pairs
    with internals.corked():
        for i in range(5):
            a.write(f"a{i};".encode())
            b.write(f"b{i};".encode())
        with internals.corked():  # nested: one batch
            a.write(b"a5;")
        assert (a_sends.sends, b_sends.sends) == (0, 0)
        assert read_all(a_peer) == b""  # nothing on the wire before the batch ends
    assert (a_sends.sends, b_sends.sends) == (1, 1)
    deadline = time.monotonic() + 5
    got_a, got_b = b"", b""
    while (len(got_a), len(got_b)) != (18, 15) and time.monotonic() < deadline:
        got_a += read_all(a_peer)
        got_b += read_all(b_peer)
    assert got_a == b"a0;a1;a2;a3;a4;a5;" and got_b == b"b0;b1;b2;b3;b4;"
    a.write(b"after")  # no batch: straight out
    assert a_sends.sends == 2
    for _, _, peer, sock in pairs:
        peer.close()
        sock.close()


def test_what_a_batch_holds_is_bounded_per_socket_and_in_all(monkeypatch):
    """A socket's held bytes go out, in order, once they would pass HOLD_SOCKET_BYTES (so the
    slow-reader check, which reads the transport's buffer, misses at most that much), and
    everything held goes out once the batch holds HOLD_TOTAL_BYTES; the batch goes on holding."""
    monkeypatch.setattr(internals, "HOLD_SOCKET_BYTES", 10)
    monkeypatch.setattr(internals, "HOLD_TOTAL_BYTES", 16)
    written: dict[str, list[bytes]] = {"a": [], "b": []}

    class Transport:
        def __init__(self, name: str) -> None:
            self.name = name

        def write(self, data: bytes) -> None:  # what eager_writes' write does with a batch
            if internals._corked is not None:
                now = internals._hold(self, self.write, data)
                if now is None:
                    return
                data = now
            written[self.name].append(data)

    a, b = Transport("a"), Transport("b")
    with internals.corked():
        a.write(b"a1-")
        a.write(b"a2-")
        a.write(b"a3-")  # 9 bytes held: under 10
        assert written["a"] == []
        a.write(b"a4-")  # would be 12: out now, with what it held, in order
        assert written["a"] == [b"a1-a2-a3-a4-"]
        b.write(b"b1-")
        a.write(b"a5-")
        b.write(b"b2-")
        a.write(b"a6-")  # 12 held in all: under 16
        assert written["b"] == []
        b.write(b"b3-")
        b.write(b"b4-")  # 15 held: under 16, but b's own would be 12: out now
        assert written["b"] == [b"b1-b2-b3-b4-"]
        b.write(b"b5-")
        a.write(b"a7-")  # a holds 9, b 3: 12
        a.write(b"")
        b.write(b"b6-b7")  # 17 in all: everything goes out
        assert written == {"a": [b"a1-a2-a3-a4-", b"a5-a6-a7-"], "b": [b"b1-b2-b3-b4-", b"b5-b6-b7"]}
        a.write(b"a8")  # still a batch: held again
        assert written["a"][-1] == b"a5-a6-a7-"
    assert written["a"][-1] == b"a8" and internals._corked is None


def test_eager_writes_only_on_plain_tcp():
    class Other:
        def write(self, data: bytes) -> None: ...

    assert internals.eager_writes(Other()) is False


@pytest.mark.parametrize("module", ["autobahn.websocket.protocol", "autobahn.twisted.websocket"])
def test_autobahn_debug_arguments_are_lazy(module):
    import importlib

    from autobahn import util

    internals.tune_daphne()
    where = importlib.import_module(module)
    lazy = where.hltype(util.hltype)
    assert isinstance(lazy, internals._Lazy)
    assert str(lazy) == util.hltype(util.hltype)  # the same text when a debug line is written
    assert f"{where.hlval(42)}" == util.hlval(42)


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


def _open_daphne_protocol() -> WebSocketProtocol:
    """daphne's WebSocket protocol, connected and open, writing into Twisted's in-memory transport."""
    from autobahn.twisted.websocket import WebSocketServerFactory
    from twisted.internet.testing import StringTransport

    protocol = WebSocketProtocol()
    protocol.factory = WebSocketServerFactory()
    protocol.factory.setProtocolOptions(maxMessagePayloadSize=1_048_576)  # as daphne's server sets it
    protocol.makeConnection(StringTransport())
    protocol.client_addr = ["127.0.0.1", 50000]  # daphne sets it in onConnect, from the handshake
    protocol.state = protocol.STATE_OPEN
    return protocol


def test_direct_sender_writes_the_bytes_autobahn_would():
    import functools

    class Server:
        def __init__(self) -> None:
            self.connections: dict = {}

        async def handle_reply(self, protocol, message) -> None: ...

    server = Server()
    ours, second, theirs = _open_daphne_protocol(), _open_daphne_protocol(), _open_daphne_protocol()
    server.connections[ours] = server.connections[second] = {}
    send = internals.direct_sender(functools.partial(server.handle_reply, ours))
    send_second = internals.direct_sender(functools.partial(server.handle_reply, second))
    # every length encoding (7-bit, 16-bit, 64-bit), UTF-8, an empty text (daphne sends nothing)
    texts = ["a", "é€😀" * 7, "x" * 125, "x" * 126, "y" * 65535, "z" * 65536, "", "a"]
    for text in texts:
        send(text)
        send_second(text)  # the same str object to a second socket: the frame built once, reused
        theirs.handle_reply({"type": "websocket.send", "text": text})
    wire = theirs.transport.value()
    assert wire.startswith(b"\x81\x01a") and ours.transport.value() == wire and second.transport.value() == wire
    # autobahn's traffic statistics (read by nothing in daphne or here) do not count the direct frames
    assert theirs.trafficStats.outgoingWebSocketMessages == len(texts) - 1
    assert ours.trafficStats.outgoingWebSocketMessages == second.trafficStats.outgoingWebSocketMessages == 0
    fast = "built once " * 3
    send(fast)
    theirs.handle_reply({"type": "websocket.send", "text": fast})
    assert internals._last_frame[0] is fast  # the frame came from text_frame, not autobahn's sendFrame

    # What the direct frame does not cover goes through autobahn itself, in order: here, frame logging.
    ours.logFrames = theirs.logFrames = True
    send("logged")
    theirs.handle_reply({"type": "websocket.send", "text": "logged"})
    assert ours.transport.value() == theirs.transport.value()
    assert ours.trafficStats.outgoingWebSocketMessages == 1  # this one went through autobahn, which counts it

    # A write autobahn holds in its send queue (a "sync" write, let out a reactor turn at a time)
    # stays first: while autobahn is letting its queue out, ours goes through autobahn, behind it.
    ours.logFrames = False
    ours.send_queue.append((b"queued", True))
    ours.triggered = True  # as autobahn's _trigger leaves it until its queue is empty
    sent = ours.transport.value()
    send("after")
    assert ours.transport.value() == sent and len(ours.send_queue) == 2  # queued behind, not written


def test_direct_sender_on_an_eager_socket_sends_itself_and_queues_behind_twisteds_buffer():
    """On a plain TCP transport with eager writes, the direct frame goes to the socket from the
    sender itself (no reactor turn); while Twisted holds bytes, it queues behind them, in order."""
    import functools

    from twisted.internet import tcp

    class Server:
        def __init__(self) -> None:
            self.connections: dict = {}

        async def handle_reply(self, protocol, message) -> None: ...

    server_sock, peer = tcp_pair()
    reactor = FakeReactor()
    protocol = _open_daphne_protocol()
    transport = tcp.Connection(server_sock, protocol, reactor)
    transport.connected = 1
    protocol.transport = transport
    assert internals.eager_writes(transport) is True
    server = Server()
    server.connections[protocol] = {}
    send = internals.direct_sender(functools.partial(server.handle_reply, protocol), 64 * 1024)
    assert send("one") is True
    got, deadline = b"", time.monotonic() + 5
    while got != b"\x81\x03one" and time.monotonic() < deadline:
        got += read_all(peer)
    assert got == b"\x81\x03one" and reactor.writers == []  # on the wire, no reactor turn

    transport.dataBuffer, transport.offset = b"earlier", 0  # bytes the kernel did not take yet
    assert send("two") is True  # behind them, not around them: into Twisted's buffer
    assert read_all(peer) == b"" and transport._tempDataLen == len(b"\x81\x03two")
    assert reactor.writers == [transport]
    server.connections[protocol]["disconnected"] = True  # daphne marks it before dropping it
    assert send("three") is True and transport._tempDataLen == len(b"\x81\x03two")  # dropped
    server_sock.close()
    peer.close()


def test_direct_sender_with_a_limit_leaves_a_socket_that_is_behind_to_the_caller():
    """The hub's fast path: the backlog check and the write are one call, the transport found once."""
    import functools

    class Server:
        def __init__(self) -> None:
            self.connections: dict = {}

        async def handle_reply(self, protocol, message) -> None: ...

    server, protocol = Server(), _open_daphne_protocol()
    server.connections[protocol] = {}
    transport = protocol.transport
    # what a Twisted TCP transport holds unsent (core.internals.transport_backlog reads the same)
    transport.dataBuffer, transport.offset, transport._tempDataLen = b"", 0, 0
    send = internals.direct_sender(functools.partial(server.handle_reply, protocol), 100)
    assert send("a") is True and transport.value() == b"\x81\x01a"
    transport._tempDataLen = 101  # more than the limit waits in Twisted's buffer
    assert send("b") is False and transport.value() == b"\x81\x01a"  # nothing written: the caller keeps it
    transport.dataBuffer, transport.offset, transport._tempDataLen = b"x" * 150, 60, 0  # 90 unsent
    assert send("c") is True and transport.value().endswith(b"\x81\x01c")
    protocol.state = protocol.STATE_CLOSING
    assert send("d") is True  # a closing socket: dropped, not handed back to be queued
    # a transport that is not a Twisted file descriptor has no buffer to read: never "behind"
    other = _open_daphne_protocol()
    server.connections[other] = {}
    assert internals.direct_sender(functools.partial(server.handle_reply, other), 0)("e") is True


async def _uvicorn_socket(app):
    """A real uvicorn server (websockets sans-I/O, no compression) on a free loopback port running
    ``app``, and a raw TCP client that has completed the handshake: (server, reader, writer, task)."""
    import asyncio
    import base64
    import os

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)  # the client's connect waits in the backlog until uvicorn accepts it
    config = uvicorn.Config(  # log_config=None: pytest's logging handlers stay as they are
        app, ws="websockets-sansio", ws_per_message_deflate=False, lifespan="off", log_config=None
    )
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    reader, writer = await asyncio.open_connection(*sock.getsockname())
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    return server, reader, writer, task


async def test_direct_sender_under_uvicorn_writes_the_bytes_uvicorn_would():
    """bench_fanout's uvicorn target: the frame written straight to the transport is byte for byte
    what uvicorn's own send (websockets' framing) writes, every length encoding and UTF-8 included."""
    import asyncio

    texts = ["a", "é€😀" * 7, "x" * 125, "x" * 126, "y" * 65535, "z" * 65536]
    done = asyncio.Event()

    async def app(scope, receive, send):
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        direct = internals.direct_sender(send, 1 << 20)
        assert direct is not None and internals.transport_backlog(send) == 0
        for text in texts:
            assert direct(text) is True
            await send({"type": "websocket.send", "text": text})
        await done.wait()

    server, reader, writer, task = await _uvicorn_socket(app)
    try:
        for text in texts:
            ours = await _read_frame(reader)
            theirs = await _read_frame(reader)
            assert ours == theirs and ours[2:].endswith(text.encode())
    finally:
        done.set()
        writer.close()
        server.should_exit = True
        await task


async def _read_frame(reader) -> bytes:
    head = await reader.readexactly(2)
    size = head[1] & 0x7F
    extended = b""
    if size == 126:
        extended = await reader.readexactly(2)
    elif size == 127:
        extended = await reader.readexactly(8)
    length = int.from_bytes(extended, "big") if extended else size
    return head + extended + await reader.readexactly(length)


async def test_direct_sender_under_uvicorn_leaves_a_socket_that_is_behind_to_the_caller():
    """A client that stops reading: once more than the limit waits in the transport, the write is
    refused (False) and nothing is written; a closed socket's texts are dropped (True)."""
    import asyncio

    outcome: dict = {}
    done, behind_now = asyncio.Event(), asyncio.Event()

    async def app(scope, receive, send):
        try:
            await behind(receive, send)
        finally:  # a failed assertion in the app leaves its outcome incomplete: the test fails on it
            behind_now.set()
            done.set()

    async def behind(receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        direct = internals.direct_sender(send, 100_000)
        chunk = "x" * 65536
        for writes in range(1, 5000):  # the kernel's buffers fill first, then the transport's
            if not direct(chunk):
                outcome["refused_after"] = writes
                break
        backlog = internals.transport_backlog(send)
        outcome["backlog"] = backlog
        assert direct("more") is False and internals.transport_backlog(send) == backlog  # nothing written
        behind_now.set()
        assert (await receive())["type"] == "websocket.disconnect"  # the client went away
        outcome["closing"] = direct("after close")

    server, _reader, writer, task = await _uvicorn_socket(app)
    try:
        await asyncio.wait_for(behind_now.wait(), 60)
        writer.transport.abort()
        await asyncio.wait_for(done.wait(), 60)
        assert outcome["refused_after"] > 1 and outcome["backlog"] > 100_000 and outcome["closing"] is True
    finally:
        writer.close()
        server.should_exit = True
        await task


async def test_direct_sender_under_uvicorn_writes_nothing_before_the_handshake_or_after_close():
    """Before the accept and after the server's close frame a text is dropped (True: the socket
    resumes what it missed), never written around the handshake or after the close."""
    import asyncio

    outcome: dict = {}

    async def app(scope, receive, send):
        await receive()
        direct = internals.direct_sender(send, 1 << 20)
        outcome["early"] = direct("before the accept")
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})
        outcome["late"] = direct("after the close")

    server, reader, writer, task = await _uvicorn_socket(app)
    try:
        frame = await asyncio.wait_for(_read_frame(reader), 30)
        assert frame[0] == 0x88 and frame[2:4] == (1000).to_bytes(2, "big")  # the close frame, first and only
        writer.write(b"\x88\x82abcd" + bytes(b ^ k for b, k in zip((1000).to_bytes(2, "big"), b"ab", strict=True)))
        assert await asyncio.wait_for(reader.read(), 30) == b""  # nothing after it: the server closes
        assert outcome == {"early": True, "late": True}
    finally:
        writer.close()
        server.should_exit = True
        await task


async def test_input_queue_puts_a_disconnect_before_what_the_gone_client_sent():
    """Outside probe (twelfth session): a client that flooded within its rate and left had its
    disconnect queued behind seconds of its own messages; daphne's close timeout then killed the
    application before it got there. What it sent and was not read is dropped: the disconnect is
    next (anything else queued, such as the connect, keeps its place)."""
    queue = internals.InputQueue()
    queue.put_nowait({"type": "websocket.connect"})
    for n in range(100):
        queue.put_nowait({"type": "websocket.receive", "text": str(n)})
    queue.put_nowait({"type": "websocket.disconnect", "code": 1001})
    assert [(await queue.get())["type"] for _ in range(queue.qsize())] == ["websocket.connect", "websocket.disconnect"]
    queue.put_nowait({"type": "websocket.receive", "text": "read in time"})
    assert (await queue.get())["text"] == "read in time"


async def test_input_queue_hands_messages_over_in_order_to_whoever_waits():
    """daphne's per-connection queue, lighter: order kept, a getter waits for the next message,
    several getters (an HTTP request's body reader and its disconnect listener) each get one, a
    cancelled getter leaves nothing behind, and an empty queue holds no deque."""
    import asyncio

    queue = internals.InputQueue()
    assert queue.empty() and queue.qsize() == 0 and queue._items is None
    for n in range(3):
        queue.put_nowait(n)
    assert queue.qsize() == 3 and [await queue.get() for _ in range(3)] == [0, 1, 2]
    assert queue._items is None
    first, second = asyncio.ensure_future(queue.get()), asyncio.ensure_future(queue.get())
    cancelled = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    assert len(queue._getters) == 3  # all three wait
    cancelled.cancel()
    await asyncio.wait([cancelled])
    queue.put_nowait("a")
    queue.put_nowait("b")
    assert sorted(await asyncio.wait_for(asyncio.gather(first, second), 5)) == ["a", "b"]
    assert queue._getters is None and queue.empty() and bool(queue)  # truthy empty: daphne asks `if queue`

    # A getter woken by a put and cancelled before it runs takes nothing: another waiting getter
    # gets the message, or, with none, the next get does.
    woken, other = asyncio.ensure_future(queue.get()), asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    assert len(queue._getters) == 2
    queue.put_nowait("x")
    woken.cancel()
    assert await asyncio.wait_for(other, 5) == "x"
    lone = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait("y")
    lone.cancel()
    await asyncio.wait([lone])
    assert lone.cancelled() and queue.qsize() == 1 and await queue.get() == "y"


def test_daphnes_access_log_masks_a_query_strings_credentials_and_leaves_a_plain_line_alone():
    """daphne writes its access log itself, past logging's filters: a credential in a request's
    query string is masked there too; a line with no query parameter (a WebSocket's path) is written
    as it came."""
    import datetime
    import io

    from daphne.access import AccessLogGenerator

    internals.tune_daphne()
    out = io.StringIO()
    log = AccessLogGenerator(out)
    when = datetime.datetime(2026, 12, 7, 3, 0, 0)
    log.write_entry(host="127.0.0.1", date=when, request="GET /ws/orders?session=s1&token=t0ps3cret&x=1")
    log.write_entry(host="127.0.0.1", date=when, request="WSCONNECT /ws")
    log("websocket", "connected", {"path": "/ws", "client": "127.0.0.1:5000"})
    lines = out.getvalue().splitlines()
    assert lines[0].endswith('"GET /ws/orders?session=[redacted]&token=[redacted]&x=1" - -'), lines
    assert "t0ps3cret" not in out.getvalue() and "s1" not in lines[0]
    assert lines[1] == '127.0.0.1 - - [07/Dec/2026:03:00:00] "WSCONNECT /ws" - -'
    assert lines[2].startswith("127.0.0.1:5000 - - [") and lines[2].endswith('] "WSCONNECT /ws" - -'), lines


def test_daphne_makes_each_application_with_an_input_queue():
    import asyncio

    from daphne.server import Server

    internals.tune_daphne()
    made = {}

    async def application(scope, receive, send):
        made["receive"], made["scope"] = receive, scope

    async def run():
        server = Server.__new__(Server)  # only what create_application reads
        server.application, server.connections = application, {}
        protocol = object()
        server.connections[protocol] = {}
        queue = server.create_application(protocol, {"type": "websocket"})
        await server.connections[protocol]["application_instance"]
        return queue

    queue = asyncio.run(run())
    assert isinstance(queue, internals.InputQueue)
    assert made["receive"] == queue.get and made["scope"]["asgi"] == {"version": "3.0"}


@pytest.mark.parametrize(
    ("given", "listens"),
    [
        ("tcp:port=0:interface=127.0.0.1", "tcp:port=0:interface=127.0.0.1:backlog=1024"),
        (r"tcp6:port=8000:interface=\:\:1", r"tcp6:port=8000:interface=\:\:1:backlog=1024"),
        ("TCP6:port=8000", "TCP6:port=8000:backlog=1024"),  # Twisted takes a plugin's prefix in any case
        ("unix:/run/axisor.sock:mode=660", "unix:/run/axisor.sock:mode=660:backlog=1024"),
        ("ssl:443:privateKey=k.pem", "ssl:443:privateKey=k.pem:backlog=1024"),
        ("tls:/certs:port=8443", "tls:/certs:port=8443:backlog=1024"),
        # named, by keyword or by position: left as given (a second one would not parse)
        ("tcp:port=8001:interface=127.0.0.1:backlog=64", "tcp:port=8001:interface=127.0.0.1:backlog=64"),
        ("tcp:8000:127.0.0.1:64", "tcp:8000:127.0.0.1:64"),
        ("tcp6:8000:64", "tcp6:8000:64"),
        ("unix:/run/a.sock:660:64", "unix:/run/a.sock:660:64"),
        # an escaped backslash before a real separator: the backlog is named
        ("unix:/tmp/a\\\\:backlog=5", "unix:/tmp/a\\\\:backlog=5"),
        # "backlog=" inside a value names nothing
        (r"ssl:443:privateKey=/k\:backlog=1.pem", r"ssl:443:privateKey=/k\:backlog=1.pem:backlog=1024"),
        ("fd:fileno=3", "fd:fileno=3"),  # handed a socket that already listens
        ("systemd:domain=INET:index=0", "systemd:domain=INET:index=0"),
    ],
)
def test_daphne_listens_with_our_backlog_unless_the_endpoint_names_one(settings, given, listens):
    from daphne.server import Server

    settings.LISTEN_BACKLOG = 1024
    internals.tune_daphne()
    server = Server(application=None, endpoints=[given])
    assert server.endpoints == [listens]
    if not given.startswith(("fd:", "systemd:", "tls:", "ssl:")):  # those need a socket or certificates
        from twisted.internet import reactor
        from twisted.internet.endpoints import serverFromString

        serverFromString(reactor, listens)  # Twisted reads it: one backlog, not two


def test_an_open_socket_keeps_none_of_its_opening_handshakes_text():
    """autobahn's record of the opening handshake (request bytes, headers, response) is dropped
    once daphne has the socket open; what daphne reads later (the request's path) stays, and the
    socket still sends."""
    from autobahn.websocket.types import ConnectionRequest

    internals.tune_daphne()
    logged = []

    class Server:
        def log_action(self, protocol, action, details) -> None:
            logged.append((protocol, action, details))

    protocol = _open_daphne_protocol()
    protocol.server = Server()
    protocol.http_request_data = b"GET /ws HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer secret\r\n\r\n"
    protocol.http_headers = {"host": "h", "authorization": "Bearer secret"}
    protocol.request = ConnectionRequest("tcp4:127.0.0.1:1", protocol.http_headers, "h", "/ws", {}, 13, "", [], [])
    protocol.http_response_data = "HTTP/1.1 101 Switching Protocols\r\n\r\n"
    protocol.onOpen()
    assert logged == [("websocket", "connected", {"path": "/ws", "client": "127.0.0.1:50000"})]
    assert protocol.http_request_data is None and protocol.http_response_data is None
    assert protocol.http_headers == {} and protocol.request.headers == {} and protocol.request.path == "/ws"
    protocol.sendMessage(b"still open")
    assert protocol.transport.value().endswith(b"still open")
    # autobahn's send queue holds nothing until a write is queued, then queues and sends in order
    assert isinstance(protocol.send_queue, internals.LazyDeque) and not protocol.send_queue
    protocol.sendData(b"first", sync=True)  # queued: written now, the rest after a reactor turn
    protocol.send_queue.append((b"second", True))
    assert len(protocol.send_queue) == 1 and protocol.transport.value().endswith(b"first")
    assert protocol.send_queue.popleft() == (b"second", True) and not protocol.send_queue
    with pytest.raises(IndexError):
        protocol.send_queue.popleft()


def test_daphnes_sockets_read_their_factorys_options_from_its_protocol_class():
    """autobahn copies each factory option into every protocol whose class lacks it (~29 entries of
    an open socket's attribute dict); daphne's factory's protocol class carries them instead, as
    they are when a socket connects, and a reset goes back to autobahn's copies."""
    from daphne.ws_protocol import WebSocketFactory
    from twisted.internet.testing import StringTransport

    internals.tune_daphne()
    factory = WebSocketFactory(None)
    factory.setProtocolOptions(maxMessagePayloadSize=4096, allowNullOrigin=True)

    def connected():
        protocol = factory.buildProtocol(("127.0.0.1", 50000))
        protocol.makeConnection(StringTransport())
        return protocol

    first = connected()
    copies = set(first.CONFIG_ATTRS) & set(vars(first))
    assert isinstance(first, WebSocketProtocol) and copies == {"tcpNoDelay"}  # read before the copy: autobahn's
    assert (first.maxMessagePayloadSize, first.allowNullOrigin, first.failByDrop) == (4096, True, False)
    # a function option is the function, not a method of the socket (autobahn calls it with offers)
    assert first.perMessageCompressionAccept is factory.perMessageCompressionAccept
    factory.setProtocolOptions(maxMessagePayloadSize=8192)  # what a socket connecting later gets
    second = connected()
    assert (second.maxMessagePayloadSize, first.maxMessagePayloadSize) == (8192, 4096)
    factory.resetProtocolOptions()
    third = connected()
    assert type(third) is WebSocketProtocol and "maxMessagePayloadSize" in vars(third)  # autobahn's copy


def test_daphnes_timeout_pass_runs_in_slices_each_connection_once_a_round(monkeypatch):
    """daphne's check of every connection's timeouts and pings every 2 s runs in twentieths every
    0.1 s: each connection checked once a round, in the order they came, a slice at a time; one
    gone meanwhile is skipped; one connected meanwhile joins the next round."""
    from daphne.server import Server
    from twisted.internet import reactor

    internals.tune_daphne()
    scheduled = []
    monkeypatch.setattr(reactor, "callLater", lambda delay, fn, *a: scheduled.append(delay))
    checked: list[int] = []

    class Protocol:
        def __init__(self, n: int) -> None:
            self.n = n

        def check_timeouts(self) -> None:
            checked.append(self.n)

    class FakeServer:
        timeout_checker = Server.timeout_checker  # daphne's, as tune_daphne left it

        def __init__(self) -> None:
            self.connections = {Protocol(n): {} for n in range(45)}

    server = FakeServer()
    gone = next(p for p in server.connections if p.n == 40)
    per_step = []
    for step in range(20):  # a round: 2 s, 45 connections over twenty steps
        before = len(checked)
        if step == 5:
            del server.connections[gone]  # closed mid-round, before its slice
            server.connections[Protocol(99)] = {}  # connected mid-round
        server.timeout_checker()
        per_step.append(len(checked) - before)
    assert scheduled == [internals.SWEEP_STEP_SECONDS] * 20
    assert checked == [n for n in range(45) if n != 40]  # each once, in order; the closed one skipped
    assert max(per_step) == 3 and min(per_step) >= 1  # never the whole pass at once: a twentieth of it
    checked.clear()
    for _ in range(20):
        server.timeout_checker()
    assert checked == [n for n in range(45) if n != 40] + [99]  # the next round has the new one, last


def test_an_open_sockets_first_ping_comes_at_a_random_point_of_its_first_interval():
    """Sockets opened together are not pinged together: daphne pings once the last ping is a ping
    interval old, and each socket's first one is moved to a random point of the interval."""
    import time

    internals.tune_daphne()

    class Server:
        ping_interval = 10

        def log_action(self, protocol, action, details) -> None: ...

    now = time.time()
    lasts = []
    for _ in range(40):
        protocol = _open_daphne_protocol()
        protocol.server = Server()
        protocol.request = type("Request", (), {"path": "/ws"})()
        protocol.last_ping = now  # what daphne's onConnect set
        protocol.onOpen()
        lasts.append(protocol.last_ping)
    assert all(now - 10 <= last <= now for last in lasts)
    assert max(lasts) - min(lasts) > 5  # spread over the interval, not one instant


def test_a_ping_from_a_client_that_reads_is_answered_while_the_server_keeps_its_buffer_full(monkeypatch):
    """A client on a slow link reading a busy feed: the hub writes while at most WS_SLOW_BYTES (1 MiB)
    waits unsent, so more than PONG_BACKLOG_BYTES (64 KiB) stays buffered the whole time while the
    client keeps reading. The pong its keepalive waits for must still come (before the pong backlog
    cap it went out behind what was buffered at the ping); it never came."""
    from daphne.ws_protocol import WebSocketProtocol
    from twisted.internet import reactor

    internals.tune_daphne()
    timers: list = []
    monkeypatch.setattr(reactor, "callLater", lambda delay, fn, *args: timers.append((fn, args)))

    class Transport:
        dataBuffer, offset, _tempDataLen = b"", 0, 0

    class Peer:
        STATE_OPEN = 3
        state = 3
        _axisor_pong_owed = None
        transport = Transport()
        pongs: list = []

        def sendPong(self, payload=None):
            self.pongs.append(payload)

    peer = Peer()
    slow_bytes = 1 << 20
    peer.transport.dataBuffer = bytes(900 * 1024)  # what waits when the client's keepalive pings
    WebSocketProtocol.onPing(peer, b"keepalive")
    ahead, drained = 900 * 1024, 0
    for _ in range(400):  # 20 s of 50 ms timer turns, the client reading 400 KB/s all along
        unsent = len(peer.transport.dataBuffer) - 20 * 1024
        drained += 20 * 1024
        if unsent <= slow_bytes:  # the hub writes again (gateway/hub.py: SLOW_BYTES)
            unsent = slow_bytes - 1024
        peer.transport.dataBuffer = bytes(unsent)
        if not timers:
            break
        fn, args = timers.pop(0)
        fn(*args)
        if peer.pongs:
            break
    assert peer.pongs == [b"keepalive"], f"the keepalive's pong never went out ({drained} bytes read meanwhile)"
    assert drained <= ahead, drained  # no later than behind what waited at the ping, as before the cap
