"""Every place we reach into daphne, Twisted, autobahn or channels-redis, and the start-up check
that they are the versions and have the attributes this code was written against.

``check()`` runs first thing in ``axisor.asgi`` (and in the tests): on another version of any of
them, or with an attribute gone, the server refuses to start and names what changed, instead of
silently losing a fast path or a fix. Upgrading one of them means re-reading this module against
the new release and updating ``VERSIONS`` (docs/dependencies.md).

Sections: the check; daphne's HTTP and WebSocket options its command line does not expose; writes
straight to the socket behind daphne's ``send``; Twisted's write buffering; autobahn's logging;
the channel layer (channels-redis's pub/sub layer, resilient to losing Redis).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import inspect
import io
import logging
import random
import sys
import threading
from collections import deque
from collections.abc import Callable
from importlib import metadata
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from channels_redis.pubsub import RedisPubSubChannelLayer, RedisSingleShardConnection
from channels_redis.utils import _consistent_hash, decode_hosts
from django.conf import settings
from redis.exceptions import ConnectionError as RedisConnectionError

from core.logfilters import redact
from core.middleware import too_large_body
from core.redis_clients import Breaker, ServerTripped, breaker_for, layer_hosts, publishing_client_for

if TYPE_CHECKING:
    from redis.asyncio.client import PubSub
    from redis.client import Pipeline

logger = logging.getLogger(__name__)

# ---- the check ------------------------------------------------------------------------------------

# The exact releases this module was written and tested against (requirements.txt pins the same).
VERSIONS = {
    "daphne": "4.2.3",
    "Twisted": "26.10.0",
    "autobahn": "26.11.1",
    "channels": "4.3.2",
    "channels-redis": "4.3.0",
}

# uvicorn runs ours only as a benchmark target (bench_fanout --targets uvicorn; requirements-dev.in):
# in a process uvicorn runs, it must be this release, with what direct_sender reads of it.
OPTIONAL_VERSIONS = {"uvicorn": "0.55.0", "websockets": "15.0.1"}
OPTIONAL_NEEDS: tuple[tuple[str, str | None, str], ...] = (
    *(
        ("uvicorn.protocols.websockets.websockets_sansio_impl", "WebSocketsSansIOProtocol", attribute)
        for attribute in (
            "send",
            "self.transport",
            "self.conn",
            "self.handshake_complete",
            "self.close_sent",
            "self.initial_response",
        )
    ),
    *(
        ("websockets.protocol", "Protocol", attribute)
        for attribute in ("self.state", "self.extensions", "send_text", "data_to_send")
    ),
    ("websockets.protocol", "State", "OPEN"),
)

# What we read, call, wrap or override: (module, class or None, attribute); ``self.x``: an
# attribute the class's __init__ sets.
NEEDS: tuple[tuple[str, str | None, str], ...] = (
    ("daphne.ws_protocol", "WebSocketProtocol", "onMessage"),
    ("daphne.ws_protocol", "WebSocketProtocol", "connectionMade"),
    ("daphne.ws_protocol", "WebSocketProtocol", "handle_reply"),
    ("daphne.ws_protocol", "WebSocketProtocol", "STATE_OPEN"),
    ("daphne.ws_protocol", "WebSocketFactory", "setProtocolOptions"),
    ("daphne.http_protocol", "HTTPFactory", "__init__"),
    ("daphne.http_protocol", "WebRequest", "process"),
    ("twisted.web.http", "Request", "gotLength"),
    ("twisted.web.http", "Request", "handleContentChunk"),
    ("twisted.web.http", "HTTPChannel", "allHeadersReceived"),  # calls gotLength, then sends 100 Continue
    ("daphne.access", "AccessLogGenerator", "write_entry"),
    ("daphne.server", "Server", "handle_reply"),
    ("twisted.internet.tcp", "Connection", "setTcpNoDelay"),
    ("twisted.internet.abstract", "FileDescriptor", "self._tempDataLen"),  # set in __init__
    ("twisted.internet.abstract", "FileDescriptor", "dataBuffer"),
    ("twisted.internet.abstract", "FileDescriptor", "offset"),
    ("twisted.internet.abstract", "FileDescriptor", "disconnecting"),
    ("twisted.internet.abstract", "FileDescriptor", "_writeDisconnecting"),
    ("twisted.internet.abstract", "FileDescriptor", "_writeDisconnected"),
    ("twisted.internet.abstract", "FileDescriptor", "connected"),
    # _light_input_queues: what daphne's create_application does, with a lighter queue
    ("daphne.server", "Server", "create_application"),
    ("daphne.server", "Server", "self.endpoints"),  # _listen_backlog: what each listener is made from
    # _admit_connects: daphne's HTTP connections, read once admitted
    ("twisted.web.http", "HTTPChannel", "connectionMade"),
    ("twisted.web.http", "HTTPChannel", "connectionLost"),
    ("twisted.internet.abstract", "FileDescriptor", "pauseProducing"),
    ("twisted.internet.abstract", "FileDescriptor", "resumeProducing"),
    ("daphne.ws_protocol", "WebSocketProtocol", "onClose"),
    ("autobahn.websocket.protocol", "WebSocketProtocol", "onPing"),  # answered while little waits unsent
    ("autobahn.websocket.protocol", "WebSocketProtocol", "sendPong"),  # the latest ping's, once it drains
    ("twisted.protocols.policies", "WrappingFactory", "self.wrappedFactory"),  # stop_listening: TLS ports
    ("twisted.internet.endpoints", None, "_parse"),  # with_backlog reads a description as Twisted does
    ("autobahn.websocket.protocol", None, "pformat"),
    # direct_sender's own frame write reads what autobahn's _connectionMade sets (send_state,
    # triggered, _perMessageCompress, the options): tests/core/test_internals.py checks its bytes
    # against autobahn's own sendMessage.
    ("daphne.ws_protocol", "WebSocketProtocol", "onOpen"),
    # _sliced_timeout_checks: daphne's pass over every connection, in slices; the pings it sends,
    # spread (the time of each socket's last ping, set in onConnect)
    ("daphne.server", "Server", "timeout_checker"),
    ("daphne.ws_protocol", "WebSocketProtocol", "check_timeouts"),
    ("daphne.ws_protocol", "WebSocketProtocol", "onConnect"),
    # _release_http_channel: the upgraded HTTP connection's channel, still the transport's producer
    ("twisted.web.http", "HTTPChannel", "self.requests"),
    ("twisted.web.http", "HTTPChannel", "self._handlingRequest"),
    ("twisted.web.http", "HTTPChannel", "_requestProducer"),
    ("twisted.internet.abstract", "FileDescriptor", "producer"),
    ("twisted.internet.abstract", "FileDescriptor", "unregisterProducer"),
    ("autobahn.websocket.protocol", "WebSocketProtocol", "SEND_STATE_GROUND"),
    ("autobahn.websocket.protocol", "WebSocketProtocol", "_connectionMade"),  # copies options a class lacks
    ("autobahn.websocket.protocol", "WebSocketServerProtocol", "CONFIG_ATTRS"),
    ("autobahn.websocket.protocol", "WebSocketServerFactory", "resetProtocolOptions"),
    ("autobahn.websocket.protocol", None, "hltype"),
    ("autobahn.websocket.protocol", None, "hlval"),
    ("autobahn.twisted.websocket", None, "hltype"),
    ("autobahn.twisted.websocket", None, "hlval"),
    ("channels_redis.pubsub", "RedisSingleShardConnection", "_do_receiving"),
    ("channels_redis.pubsub", "RedisSingleShardConnection", "_receive_message"),
    ("channels_redis.pubsub", "RedisSingleShardConnection", "self._subscribed_to"),
    ("channels_redis.pubsub", "RedisSingleShardConnection", "self._lock"),
    ("channels_redis.pubsub", "RedisSingleShardConnection", "self._pubsub"),
    ("channels_redis.pubsub", "RedisSingleShardConnection", "_ensure_redis"),
    ("channels_redis.pubsub", "RedisSingleShardConnection", "_ensure_receiver"),
    ("channels_redis.pubsub", "RedisPubSubLoopLayer", "_get_shard"),  # publish_blocking hashes as it does
    ("channels_redis.pubsub", "RedisPubSubChannelLayer", "_get_layer"),
    ("channels_redis.pubsub", "RedisPubSubLoopLayer", "self.channels"),  # received_now reads its queues
    ("channels_redis.pubsub", "RedisPubSubLoopLayer", "self.channel_layer"),
    ("channels_redis.pubsub", "RedisPubSubChannelLayer", "deserialize"),
    ("channels_redis.pubsub", "RedisPubSubChannelLayer", "serialize"),
    ("channels_redis.utils", None, "_consistent_hash"),
    ("channels_redis.utils", None, "decode_hosts"),
    ("channels_redis.utils", None, "create_pool"),  # builds a SentinelConnectionPool from our Sentinel hosts
)


class InternalsChanged(RuntimeError):
    """A framework is not the release this code patches: fix ``core/internals.py`` first."""


def check() -> None:
    """Raise InternalsChanged, naming every difference, unless each framework is the pinned
    release and has every attribute we use."""
    problems = []
    versions, needs = dict(VERSIONS), list(NEEDS)
    if "uvicorn" in sys.modules:  # uvicorn runs this process (it imports itself before the app)
        versions |= OPTIONAL_VERSIONS
        needs += OPTIONAL_NEEDS
    for dist, want in versions.items():
        try:
            have = metadata.version(dist)
        except metadata.PackageNotFoundError:
            have = "not installed"
        if have != want:
            problems.append(f"{dist} is {have}, core/internals.py was written against {want}")
    for module_name, class_name, attribute in needs:
        where = f"{module_name}.{class_name}" if class_name else module_name
        try:
            owner = importlib.import_module(module_name)
            if class_name:
                owner = getattr(owner, class_name)
        except (ImportError, AttributeError):
            problems.append(f"{where} is gone")
            continue
        if attribute.startswith("self."):
            source = inspect.getsource(owner.__init__) if isinstance(owner, type) else ""
            present = f"{attribute} = " in source or f"{attribute}: " in source  # annotated or not
        else:
            present = hasattr(owner, attribute)
        if not present:
            problems.append(f"{where}.{attribute.removeprefix('self.')} is gone")
    if problems:
        raise InternalsChanged(
            "framework internals changed; re-read core/internals.py against the new release:\n  - "
            + "\n  - ".join(problems)
        )


# ---- daphne, Twisted and autobahn ---------------------------------------------------------------


def tune_daphne() -> None:
    try:
        from daphne.access import AccessLogGenerator
        from daphne.http_protocol import HTTPFactory, WebRequest
        from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol
    except ImportError:
        return
    if getattr(WebSocketFactory, "_axisor_tuned", False):
        return
    set_options = WebSocketFactory.setProtocolOptions
    reset_options = WebSocketFactory.resetProtocolOptions
    http_init = HTTPFactory.__init__

    def setProtocolOptions(self, *args, **kwargs):
        # daphne leaves autobahn's failByDrop on, so a message over the 1 MiB limit or a text frame
        # that is not UTF-8 just cuts the connection: the client sees 1006, like a network fault.
        # Off, the client gets a close frame with 1009 / 1007 (RFC 6455) and knows what it did.
        kwargs.setdefault("failByDrop", False)
        try:
            set_options(self, *args, **kwargs)
        finally:  # what autobahn applied before a bad option raised, as its copy would give
            _options_on_protocol_class(self)

    def resetProtocolOptions(self):
        reset_options(self)
        if vars(self.protocol).get("_axisor_options"):  # daphne's own class again: autobahn copies
            self.protocol = self.protocol.__bases__[0]

    def __init__(self, *args, **kwargs):
        http_init(self, *args, **kwargs)
        # Twisted's idle timeout for a connection that has not sent a whole request: a socket that
        # connects and never finishes its HTTP/WebSocket handshake holds a descriptor until then.
        self.timeOut = settings.HTTP_IDLE_TIMEOUT_SECONDS

    def write_entry(self, host, date, request, *args, **kwargs):
        # daphne's access log writes the whole request URI, query string and all, past Python's
        # logging (and so past our redaction filter): a credential in a query string would land
        # in the log file. Mask it the same way. A line without "=" holds no query parameter to
        # mask (a WebSocket's lines hold its path alone): the two patterns are not run on it.
        return write_access(self, host, date, redact(request) if "=" in request else request, *args, **kwargs)

    def onMessage(self, payload, isBinary):
        on_message(self, payload, isBinary)
        queue = getattr(self, "application_queue", None)
        if queue is not None and not self._axisor_paused and queue.qsize() >= settings.WS_INBOUND_QUEUE_HIGH:
            # daphne queues every inbound message for the application without bound and keeps
            # reading, so a client flooding faster than its consumer runs grows server memory and
            # starves every other socket's consumer of the event loop. Stop reading this socket
            # until its consumer catches up: the flood backs up in the client's own TCP buffers,
            # and the consumer's rate limiter gets to refuse it and close it (4008).
            self._axisor_paused = True
            self.transport.pauseProducing()
            _resume_when_drained(self)

    def connectionMade(self):
        connection_made(self)
        eager_writes(self.transport)

    def onPing(self, payload):
        # autobahn answers every ping at once, into Twisted's write buffer, whether or not the
        # client reads: a client that sent pings and never read grew the server's memory without
        # bound (an outside test: 400,000 pings, +60 MiB, all of it pongs waiting). While more than
        # PONG_BACKLOG_BYTES wait unsent, only the latest ping is kept, and answered once the
        # client has read enough or PONG_WAIT_SECONDS passed (RFC 6455 5.5.3 lets an endpoint
        # answer only the latest ping; a keepalive that waits for its pong still gets one, the ping
        # it sent being the latest, even while a busy feed keeps the buffer full).
        transport = self.transport
        if transport is not None and _unsent(transport) > PONG_BACKLOG_BYTES:
            owed = self._axisor_pong_owed is not None
            self._axisor_pong_owed = payload
            if not owed:
                _pong_when_drained(self)
            return
        on_ping(self, payload)

    def onOpen(self):
        on_open(self)
        # autobahn keeps the opening handshake's request, headers and response for its test suite's
        # reports; on a server nothing reads them once the socket is open (daphne built the scope
        # from them in onConnect). ~2 KB of every idle socket. The headers dict is emptied, not
        # replaced: the ConnectionRequest daphne keeps (for its path) holds the same dict.
        self.http_request_data = self.http_response_data = None
        if isinstance(getattr(self, "http_headers", None), dict):
            self.http_headers.clear()
        _release_http_channel(self.transport)
        if not self.send_queue:  # what autobahn queued during the handshake, if anything, stays
            self.send_queue = LazyDeque()
        # daphne pings a socket once its last ping (or message) is a ping interval old. Sockets
        # opened in one storm would all be pinged in the same pass, and all their pongs read
        # together, every interval (5,000 sockets: ~0.15 s of the event loop at once, every event
        # meanwhile waiting): each socket's first ping comes at a random point of its first
        # interval instead, and the pings stay spread from then on.
        interval = getattr(getattr(self, "server", None), "ping_interval", None)
        if isinstance(interval, (int, float)) and interval > 0 and hasattr(self, "last_ping"):
            self.last_ping -= random.random() * interval

    on_message = WebSocketProtocol.onMessage
    connection_made = WebSocketProtocol.connectionMade
    on_ping = WebSocketProtocol.onPing
    WebSocketProtocol.onPing = onPing
    WebSocketProtocol._axisor_pong_owed = None
    WebSocketProtocol.connectionMade = connectionMade
    on_open = WebSocketProtocol.onOpen
    WebSocketProtocol.onOpen = onOpen
    WebSocketProtocol._axisor_paused = False
    WebSocketProtocol.onMessage = onMessage
    write_access = AccessLogGenerator.write_entry
    AccessLogGenerator.write_entry = write_entry
    WebSocketFactory.setProtocolOptions = setProtocolOptions
    WebSocketFactory.resetProtocolOptions = resetProtocolOptions
    HTTPFactory.__init__ = __init__
    WebSocketFactory._axisor_tuned = True
    _lazy_autobahn_config_log()
    _limit_request_bodies(WebRequest)
    _light_input_queues()
    _listen_backlog()
    _sliced_timeout_checks()
    admission.limit = settings.CONNECTS_IN_PROGRESS
    _admit_connects()
    _head_deadline()


class LazyDeque:
    """What a socket's queues use of a ``deque`` (``append``, ``popleft``, ``len``), holding none
    while empty: an empty ``deque`` is ~760 B, its first block allocated up front. autobahn's
    per-socket send queue is one (only chopped or "sync" writes go through it, and daphne asks for
    neither; a plain write goes straight to the transport while it is empty), and daphne's input
    queue is built on one (``InputQueue``)."""

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: deque | None = None

    def append(self, item) -> None:
        if self._items is None:
            self._items = deque()
        self._items.append(item)

    def popleft(self):
        if not self._items:
            raise IndexError("pop from an empty deque")
        item = self._items.popleft()
        if not self._items:
            self._items = None
        return item

    def __len__(self) -> int:
        return len(self._items) if self._items else 0


class InputQueue(LazyDeque):
    """What daphne hands a connection's application as ``receive``: its messages in arrival order.
    daphne makes an ``asyncio.Queue`` per connection, which holds three deques and an ``Event``
    with a fourth (~3.3 KB, a tenth of an idle socket). This keeps what daphne and the
    consumers use (``put_nowait``, ``get``, ``qsize``, ``empty``), without bound as daphne's is (its
    WebSocket reads pause past ``WS_INBOUND_QUEUE_HIGH``), and holds no deque while empty."""

    __slots__ = ("_getters",)

    def __init__(self) -> None:
        super().__init__()
        self._getters: list[asyncio.Future] | None = None

    def put_nowait(self, item) -> None:
        if self._items and isinstance(item, dict) and item.get("type") == "websocket.disconnect":
            # The client is gone: what it sent that the application has not read yet would only be
            # answered into a closed socket, and reading it first held the disconnect back (past
            # daphne's close timeout, which kills the application: the disconnect, and the release
            # of what the socket holds, never ran). The disconnect is next.
            kept = [m for m in self._items if not (isinstance(m, dict) and m.get("type") == "websocket.receive")]
            self._items.clear()
            self._items.extend(kept)
        self.append(item)
        if self._getters:
            for getter in self._getters:  # each checks again: one takes it, the rest wait on
                if not getter.done():
                    getter.set_result(None)

    async def get(self):
        while not self._items:
            getter = asyncio.get_running_loop().create_future()
            if self._getters is None:
                self._getters = []
            self._getters.append(getter)
            try:
                await getter
            finally:
                self._getters.remove(getter)
                if not self._getters:
                    self._getters = None
        return self.popleft()  # not empty: the loop above ends only then

    def qsize(self) -> int:
        return len(self)

    def __bool__(self) -> bool:
        # True even when empty, as an asyncio.Queue is: daphne's HTTP protocol sends the
        # application http.disconnect only ``if self.application_queue``.
        return True

    def empty(self) -> bool:
        return not self._items


def _options_on_protocol_class(factory) -> None:
    """autobahn copies each of its factory's options (``CONFIG_ATTRS``, 29 on a server) into every
    protocol it builds, unless the protocol's class already has it: so an open daphne socket's
    attribute dict held ~99 entries, past the 85 a 128-slot dict holds, in 256 slots (3.3 KB). The
    factory's protocol is made a subclass of daphne's that carries the options (again at every
    ``setProtocolOptions``, so each socket gets the options in force when it connects, as autobahn's
    copy gives it; an option assigned on the factory directly, as autobahn's copy would see it, waits
    for the next); its sockets hold ~70 entries in 128 slots (~1.6 KB). ``tcpNoDelay`` stays out:
    autobahn reads it before its copy, and daphne's sockets never had it then (``eager_writes``
    turns Nagle off on plain TCP; autobahn's own attempt would also reach TLS and Unix sockets)."""
    current = factory.protocol
    base = current.__bases__[0] if vars(current).get("_axisor_options") else current
    options = {name: getattr(factory, name) for name in base.CONFIG_ATTRS if name != "tcpNoDelay"}
    # a function option (perMessageCompressionAccept) read through an instance must not bind to it
    options = {name: staticmethod(value) if callable(value) else value for name, value in options.items()}
    factory.protocol = type(base.__name__, (base,), {**options, "__module__": base.__module__, "_axisor_options": True})


def _light_input_queues() -> None:
    """daphne's ``Server.create_application`` with an ``InputQueue`` in place of its
    ``asyncio.Queue``: the same application instance, scope and send, run as daphne runs it."""
    from daphne.server import Server

    def create_application(self, protocol, scope):
        assert "application_instance" not in self.connections[protocol]
        queue = InputQueue()
        scope.setdefault("asgi", {"version": "3.0"})
        admission.request(protocol, websocket=scope.get("type") == "websocket")
        instance = self.application(scope=scope, receive=queue.get, send=functools.partial(self.handle_reply, protocol))
        if protocol not in self.connections:  # gone while the application was made
            admission.leave(protocol)
            return None
        self.connections[protocol]["application_instance"] = asyncio.ensure_future(
            instance, loop=asyncio.get_event_loop()
        )
        return queue

    Server.create_application = create_application


def _release_http_channel(transport) -> None:
    """Let go of the HTTP connection a WebSocket was upgraded from. Twisted's ``HTTPChannel``
    registered itself as its transport's producer, and daphne hands the transport to the WebSocket
    protocol without unregistering it, so every open socket kept the channel, its request (headers,
    body buffer, response headers) and its line buffer: ~3.8 KB of Python heap an idle socket
    (tracemalloc). Nothing uses them: the channel is still "handling" the upgrade request, which
    never finishes, so the transport's pause and resume calls on it do nothing, and it has no
    request producer to stop. Its presence did change one thing: Twisted does not finish a
    ``loseConnection`` while a registered producer is paused by a full buffer (autobahn unregisters
    before it closes, so nothing reached that). Unregistered, and its request list emptied, the
    channel and the request are freed at once, without the cyclic collector.

    Under TLS (``-e ssl:``) the transport's ``producer`` is TLS's own wrapper of the channel, not
    the channel, and this leaves it be: production terminates TLS in nginx."""
    from twisted.web.http import HTTPChannel

    channel = getattr(transport, "producer", None)
    if not isinstance(channel, HTTPChannel) or not channel._handlingRequest or channel._requestProducer is not None:
        return  # not daphne's plain upgrade (TLS wraps the transport; a request producer has work)
    transport.unregisterProducer()
    channel.requests.clear()


# The endpoint kinds that listen themselves, and where each kind's parser in Twisted takes the backlog
# among its positional arguments (``tcp:8000:127.0.0.1:64``): ``systemd:`` and ``fd:`` are handed a
# socket already listening, with the backlog its maker chose.
_BACKLOG_POSITION = {"tcp": 2, "unix": 2, "ssl": 5, "tcp6": 1, "tls": 2}


SWEEP_STEP_SECONDS = 0.1  # daphne's timeout pass over every connection runs in slices this far apart


def _sliced_timeout_checks() -> None:
    """daphne checks every connection's timeouts and pings every 2 s in one pass (at 19,000
    sockets ~30 ms of the event loop without a ping, and each ping sent in the pass on top):
    the same checks, in rounds of 2 s, a twentieth every 0.1 s, so a room event waits for a
    slice at most, not for the whole pass. Each round takes the connections in the order they
    came: one is checked once a round, 2 s after its last check (up to 4 s when most of those
    after it closed meanwhile and moved it later in the next round). One gone since its round
    began is skipped; one connected since joins the next round."""
    from daphne.server import Server

    every = 2.0  # daphne's period (Server.timeout_checker reschedules itself 2 s on)
    steps = round(every / SWEEP_STEP_SECONDS)

    def timeout_checker(self) -> None:
        from twisted.internet import reactor

        round_, step = vars(self).get("_axisor_sweep") or [], vars(self).get("_axisor_sweep_step", steps)
        if step >= steps:  # a new round, in the order the connections came (daphne's dict)
            round_, step = list(self.connections), 0
            self._axisor_sweep = round_
        size = len(round_)
        batch = round_[step * size // steps : (step + 1) * size // steps]
        self._axisor_sweep_step = step + 1
        connections = self.connections
        for protocol in batch:
            if protocol in connections:
                protocol.check_timeouts()
        reactor.callLater(SWEEP_STEP_SECONDS, self.timeout_checker)  # type: ignore[arg-type]  # zope interfaces, as below

    Server.timeout_checker = timeout_checker


def with_backlog(description: str) -> str:
    """A daphne endpoint description (Twisted's ``serverFromString`` syntax) that listens with
    ``LISTEN_BACKLOG`` unless it names its own backlog, by keyword or by position. Read with
    Twisted's own tokenizer, so escaped colons and backslashes are what Twisted takes them for."""
    from twisted.internet.endpoints import _parse

    args, kwargs = _parse(description)
    at = _BACKLOG_POSITION.get(str(args[0]).lower()) if args else None
    if at is None or "backlog" in kwargs or len(args) - 1 > at:
        return description
    return f"{description}:backlog={settings.LISTEN_BACKLOG}"


def _listen_backlog() -> None:
    """Twisted listens with a backlog of 50, and daphne's ``-b``/``-p`` give no way to change it. A
    reconnect storm (a deploy, a network blip: every client at once) outruns 50 as soon as the event
    loop is busy for a moment with the connects it already has; the kernel then drops SYNs and
    handshakes' last ACKs, and those clients wait out retransmits of 1 s, 3 s, 7 s … (a handshake
    lost six times is a minute). Every endpoint daphne is given listens with ``LISTEN_BACKLOG``
    instead (the kernel caps it at net.core.somaxconn)."""
    from daphne.server import Server

    server_init = Server.__init__

    @functools.wraps(server_init)  # check() reads daphne's own __init__ through it
    def __init__(self, *args, **kwargs):
        server_init(self, *args, **kwargs)
        self.endpoints = [with_backlog(str(description)) for description in self.endpoints]

    Server.__init__ = __init__


def stop_listening(reactor) -> int:
    """Close every port daphne listens on, now: for a process told to stop (SIGTERM). Twisted closes
    them only once its "before shutdown" steps are done (daphne's cancelling of its applications,
    the drain of requests in flight, the give-back of leases), and until then it accepts sockets
    that take leases nothing gives back and that it cuts a moment later. Closed, a connect is
    refused at once: nginx takes the handshake or request to the next process (proxy_next_upstream
    error), a client without it reconnects. Connections already accepted go on (nginx's kept-alive
    ones too). Returns how many ports were closed."""
    from daphne.http_protocol import HTTPFactory
    from twisted.internet.interfaces import IListeningPort

    def daphnes(factory) -> bool:  # a TLS port's factory wraps daphne's (listenSSL)
        return isinstance(getattr(factory, "wrappedFactory", factory), HTTPFactory)

    ports = [r for r in reactor.getReaders() if IListeningPort.providedBy(r) and daphnes(getattr(r, "factory", None))]
    for port in ports:
        port.stopListening()
    return len(ports)


class Admission:
    """At most ``CONNECTS_IN_PROGRESS`` connections in progress at once. A connection daphne
    accepts beyond them is not read yet: it waits, its request in the kernel's socket buffer, and
    is read as a place frees, in the order they came. A storm of thousands of connects at once
    otherwise has every one of them in progress together: what each holds while connecting (its
    handshake's scope, token, coroutines, batched requests) is allocated all at once, and the free
    space that leaves in the allocator's arenas stays with the process (N = 1,000 at once: ~8 KB
    a socket, for good). Connections are still accepted at once, so the listen queue does not
    overflow into SYN retransmits.

    A place is held by a connection from its admission until: its first request is plain HTTP
    (handed to the application: served as before), or its WebSocket consumer's ``connect`` has
    returned (``settled``: authenticated, the connect read, leases, rooms), or it closes, or it
    has sent no request within ``SILENT_SECONDS`` (a client that connects and stays silent does
    not keep its place). Should no place free for ``MAX_PAUSE`` seconds while connections wait
    (a database that hangs every connect read), ``VALVE`` more are read anyway, so a health check
    still gets through."""

    SILENT_SECONDS = 1.0
    MAX_PAUSE = 1.0
    VALVE = 10
    TICK = 0.25

    def __init__(self) -> None:
        self.limit = 0  # 0: no limit (set by tune_daphne from CONNECTS_IN_PROGRESS)
        # transport → when it loses its place if still silent (None: its WebSocket connect runs)
        self.held: dict[Any, float | None] = {}
        self.waiting: deque = deque()  # accepted connections not read yet, oldest first
        self.freed_at = 0.0  # when a place last came free: the valve opens when it has not
        self.ticking = False

    def arrived(self, transport, reactor) -> None:
        """A connection daphne accepted: read now, or wait for a place."""
        if not self.limit:
            return
        if self.waiting or len(self.held) >= self.limit:
            transport.pauseProducing()
            if not self.waiting:  # the valve's second starts now, not at a free long ago
                self.freed_at = max(self.freed_at, reactor.seconds())
            self.waiting.append(transport)
        else:
            self.held[transport] = reactor.seconds() + self.SILENT_SECONDS
        self._tick_soon(reactor)

    def request(self, protocol, *, websocket: bool) -> None:
        """The connection's request reached the application: a WebSocket connect keeps its place
        until it settles, an HTTP request gives it back."""
        transport = getattr(protocol, "transport", None)
        if websocket and self.limit and transport is not None:
            self.held[transport] = None  # a place even if its connection had none (kept alive after HTTP)
        else:
            self.free(transport)

    def leave(self, protocol) -> None:
        """The socket closed, or its connect returned."""
        self.free(getattr(protocol, "transport", None))

    def settled(self, send) -> None:
        """The connect of the socket behind daphne's ``send`` is done (a no-op under any other server)."""
        if self.held:
            self.leave(getattr(send, "args", (None,))[0])

    def free(self, transport) -> None:
        """The connection's place comes free (it closed, or its request went on), if it held one."""
        if transport not in self.held:
            return
        del self.held[transport]
        self.freed_at = transport.reactor.seconds()
        self._fill(self.limit - len(self.held), transport.reactor)

    def _fill(self, places: int, reactor) -> None:
        now = reactor.seconds()
        while places > 0 and self.waiting:
            transport = self.waiting.popleft()
            if transport.connected and not transport.disconnecting:
                transport.resumeProducing()
                self.held[transport] = now + self.SILENT_SECONDS
                places -= 1

    def _tick_soon(self, reactor) -> None:
        if not self.ticking:
            self.ticking = True
            reactor.callLater(self.TICK, self._tick, reactor)

    def _tick(self, reactor) -> None:
        """Places of connections silent too long come free; the valve opens if none did for
        MAX_PAUSE while connections wait."""
        self.ticking = False
        now = reactor.seconds()
        for transport in [t for t, until in self.held.items() if until is not None and until <= now]:
            self.free(transport)
        if self.waiting and now - self.freed_at >= self.MAX_PAUSE:
            logger.warning(
                "%d connections in progress and none finished in %.0f s: reading %d waiting",
                len(self.held), self.MAX_PAUSE, min(self.VALVE, len(self.waiting)),
            )  # fmt: skip
            self.freed_at = now
            self._fill(self.VALVE, reactor)
        if self.waiting or any(until is not None for until in self.held.values()):
            self._tick_soon(reactor)


admission = Admission()


def _admit_connects() -> None:
    """daphne's HTTP connections are read as ``admission`` has room; a socket's place comes free
    when its connection closes, if its connect has not returned."""
    from daphne.http_protocol import HTTPFactory
    from daphne.ws_protocol import WebSocketProtocol
    from twisted.web.http import HTTPChannel

    made = HTTPChannel.connectionMade
    lost = HTTPChannel.connectionLost

    def connectionMade(self):
        made(self)
        if isinstance(getattr(self, "factory", None), HTTPFactory):  # daphne's, not another server's
            admission.arrived(self.transport, self.transport.reactor)

    def connectionLost(self, reason):
        admission.free(self.transport)
        return lost(self, reason)

    on_close = WebSocketProtocol.onClose

    def onClose(self, *args, **kwargs):
        admission.leave(self)
        return on_close(self, *args, **kwargs)

    HTTPChannel.connectionMade = connectionMade  # type: ignore[method-assign]  # daphne's connections, admitted
    HTTPChannel.connectionLost = connectionLost  # type: ignore[method-assign]
    WebSocketProtocol.onClose = onClose


def _head_deadline() -> None:
    """A request head (the request line and headers, a WebSocket handshake's included) is whole
    within ``HTTP_HEADER_TIMEOUT_SECONDS`` of its first byte, or the connection is dropped.
    Twisted's idle timeout (``HTTP_IDLE_TIMEOUT_SECONDS``) starts again with every byte: a client
    sending one byte a second held its connection, a descriptor and a place among the connects in
    progress, for as long as it liked, and enough of them exhaust the process's open files. nginx
    bounds the same with ``client_header_timeout``; the embedded server has no nginx. Each head of
    a kept-alive connection has its own deadline, from its first byte; a silent connection is the
    idle timeout's, a body is not timed here. One timer per head, cancelled as the head completes.

    ``_axisor_head``: None before a head's first byte, its timer while it comes, False from its
    end until its request is done."""
    from daphne.http_protocol import HTTPFactory
    from twisted.web.http import HTTPChannel

    data_received, all_headers = HTTPChannel.dataReceived, HTTPChannel.allHeadersReceived
    request_done, lost = HTTPChannel.requestDone, HTTPChannel.connectionLost

    def dataReceived(self, data):
        if self._axisor_head is None and isinstance(getattr(self, "factory", None), HTTPFactory):
            self._axisor_head = self.callLater(settings.HTTP_HEADER_TIMEOUT_SECONDS, self._axisor_head_late)
        return data_received(self, data)

    def allHeadersReceived(self):
        _cancel_head_timer(self, then=False)
        return all_headers(self)

    def requestDone(self, request):
        _cancel_head_timer(self, then=None)  # the next head's first byte starts its own deadline
        return request_done(self, request)

    def connectionLost(self, reason):
        _cancel_head_timer(self, then=False)
        return lost(self, reason)

    def head_late(self):
        self._axisor_head = False
        logger.info("dropped %s: its request head was not whole within %g s", self.transport.getPeer(),
                    settings.HTTP_HEADER_TIMEOUT_SECONDS)  # fmt: skip
        self.timeoutConnection()  # Twisted's own: lose the connection, abort it if that hangs

    HTTPChannel._axisor_head = None  # type: ignore[attr-defined]  # ours, on the class
    HTTPChannel._axisor_head_late = head_late  # type: ignore[attr-defined]
    HTTPChannel.dataReceived = dataReceived  # type: ignore[method-assign]  # daphne's connections
    HTTPChannel.allHeadersReceived = allHeadersReceived  # type: ignore[method-assign]
    HTTPChannel.requestDone = requestDone  # type: ignore[method-assign]
    HTTPChannel.connectionLost = connectionLost  # type: ignore[method-assign]


def _cancel_head_timer(channel, *, then: None | bool) -> None:
    timer, channel._axisor_head = channel._axisor_head, then
    if timer and timer.active():
        timer.cancel()


def _limit_request_bodies(request_class) -> None:
    """Twisted reads a request's whole body (into a temporary file past 100 KB) before daphne hands
    it to the application, so the ASGI-level limit (core.middleware.AsgiBodyLimit) would come after
    the reading. Refuse here instead, with the same 413: a declared Content-Length over
    DATA_UPLOAD_MAX_MEMORY_SIZE as soon as the headers are in (no "100 Continue" is sent, not a byte
    of the body is stored), a chunked body as soon as it passes the limit."""
    got_length, content_chunk, process = (
        request_class.gotLength,
        request_class.handleContentChunk,
        request_class.process,
    )

    def gotLength(self, length):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        self._axisor_body_left = limit
        if limit is not None and length is not None and length > limit:
            got_length(self, 0)  # an empty in-memory file, never written to
            _refuse_body(self, limit)
        else:
            got_length(self, length)

    def handleContentChunk(self, data):
        if self._axisor_refused:
            return
        if self._axisor_body_left is not None:
            self._axisor_body_left -= len(data)
            if self._axisor_body_left < 0:
                self.content.close()
                self.content = io.BytesIO()
                _refuse_body(self, settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
                return
        content_chunk(self, data)

    def process_unless_refused(self):
        if not self._axisor_refused:
            return process(self)
        return None

    request_class._axisor_refused = False
    request_class._axisor_body_left = None
    request_class.gotLength = gotLength
    request_class.handleContentChunk = handleContentChunk
    request_class.process = process_unless_refused


def _refuse_body(request, limit: int) -> None:
    """Answer 413 on the raw connection, then close it the way nginx does (lingering close): stop
    writing, throw away whatever the client still sends for up to HTTP_LINGER_SECONDS, then close.
    Closing at once, with the client's bytes unread in our receive buffer, makes the kernel answer
    with a reset, and a client that sends its whole body before reading would see "connection
    reset" instead of the 413."""
    from twisted.internet import reactor

    request._axisor_refused = True
    request.requestHeaders.removeHeader(b"Expect")  # no "100 Continue" after the 413
    channel, transport = request.channel, request.channel.transport
    body = too_large_body(limit)
    head = b"HTTP/1.1 413 Content Too Large\r\nContent-Type: application/json\r\nConnection: close\r\n"
    transport.write(head + b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    logger.info("refused a request body over %d bytes from %s", limit, transport.getPeer())
    channel.dataReceived = lambda data: None  # discarded: nothing of it is kept
    channel.setTimeout(None)
    getattr(transport, "loseWriteConnection", transport.loseConnection)()
    transport.resumeProducing()  # Twisted may have paused reading while the body arrived
    # Twisted types the reactor through zope interfaces (methods without self): mypy misreads them.
    reactor.callLater(settings.HTTP_LINGER_SECONDS, transport.loseConnection)  # type: ignore[arg-type]


def eager_writes(transport) -> bool:
    """Send each write to a plain TCP transport at once when nothing waits in its buffer.

    Twisted buffers every write and sends it on the next turn of the reactor (twisted#5303). A
    broadcast to 5,000 sockets then sends nothing until all 5,000 frames are queued, and pays an
    epoll registration and a callback per socket on top. Here a write goes straight to the
    socket, as asyncio's transports do; what the kernel does not take (a slow reader), and every
    write while anything is buffered, takes Twisted's path, so order and back-pressure hold.
    Nagle is off, as asyncio has it, or a second small frame waits for the first one's ACK.
    Returns whether it was installed (not on TLS or any other kind of transport)."""
    from twisted.internet import tcp

    if not isinstance(transport, tcp.Connection) or getattr(transport, "TLS", False) or "write" in vars(transport):
        return False
    buffered = transport.write
    sock = transport.socket

    def write(data: bytes) -> None:
        if _corked is not None:  # the hub is handling a batch
            now = _hold(transport, write, data)
            if now is None:
                return
            data = now
        _write_through(transport, sock, buffered, data)

    write._axisor_eager = (sock, buffered)  # type: ignore[attr-defined]  # for direct_sender's write
    transport.write = write  # type: ignore[method-assign]  # this connection's own write, on purpose
    transport.setTcpNoDelay(True)
    return True


def _write_through(t, sock, buffered: Callable[[bytes], None], data: bytes) -> None:
    """``data`` to the socket at once when nothing waits in Twisted's buffer and the connection is
    not closing; else, and whatever the kernel does not take, through Twisted's own ``write``."""
    if (
        t._tempDataLen
        or len(t.dataBuffer) > t.offset
        or t.disconnecting
        or t._writeDisconnecting
        or t._writeDisconnected
        or not t.connected
    ):
        buffered(data)
        return
    try:
        sent = sock.send(data)
    except (BlockingIOError, InterruptedError):
        sent = 0
    except OSError:
        buffered(data)  # Twisted's own write meets the error and closes the connection its way
        return
    if sent < len(data):
        buffered(data[sent:])


# While the hub handles a batch: transport → [its write, the bytes held for it, their size]; else None
_corked: dict[Any, list] | None = None
_held_total = 0  # bytes held over every transport
# A socket's held bytes go out once they would pass this: what the slow-reader check (SLOW_BYTES,
# which reads the transport's buffer) cannot see stays under it.
HOLD_SOCKET_BYTES = 64 * 1024
# Everything held goes out once the batch holds this much: five frames of ~230 bytes to each of
# 19,000 sockets (a batch's messages at least, gateway.hub.BATCH_MESSAGES) are ~22 MB.
HOLD_TOTAL_BYTES = 32 * 1024 * 1024


@contextlib.contextmanager
def corked():
    """Hold what eager writes would send, and send each socket's share as one write at the end.

    For a hub handling several messages in one go (a burst): one ``send()`` a socket for the
    batch, not one a frame. The syscall is most of a delivery's cost (py-spy: half of a
    broadcast's samples on the ``send()`` line). Order holds: every eager write of the socket in
    the batch joins the same list, in turn, and the list goes out whole. Nothing is delayed past
    the end of the batch, no batch waits for more to arrive, and what is held is bounded
    (HOLD_SOCKET_BYTES a socket, HOLD_TOTAL_BYTES in all). Nested uses are one batch. Writes that
    are not eager (TLS, uvicorn's own) are not held."""
    global _corked, _held_total
    if _corked is not None:
        yield
        return
    _corked, _held_total = {}, 0
    try:
        yield
    finally:
        _send_held(keep=False)


def _send_held(*, keep: bool) -> None:
    """Write out everything held; ``keep``: and go on holding (the batch is not over)."""
    global _corked, _held_total
    held, _corked, _held_total = _corked or {}, None, 0
    try:
        for write, chunks, _ in held.values():
            try:
                write(chunks[0] if len(chunks) == 1 else b"".join(chunks))
            except Exception:  # one socket's failure is not the others'
                logger.exception("a held write failed")
    finally:
        if keep:
            _corked = {}


def _hold(transport, write: Callable[[bytes], None], data: bytes) -> bytes | None:
    """Inside ``corked()``: keep ``data`` for ``transport``, to go out through ``write`` with the
    rest of the batch's bytes for it; returns None. When the socket's share would pass
    HOLD_SOCKET_BYTES, nothing more is held for it: returns its held bytes and ``data``, to write
    now."""
    global _held_total
    held = _corked
    assert held is not None
    size = len(data)
    entry = held.get(transport)
    if entry is None:
        if size >= HOLD_SOCKET_BYTES:
            return data
        held[transport] = [write, [data], size]
    elif entry[2] + size >= HOLD_SOCKET_BYTES:
        del held[transport]
        _held_total -= entry[2]
        entry[1].append(data)
        return b"".join(entry[1])
    else:
        entry[1].append(data)
        entry[2] += size
    _held_total += size
    if _held_total >= HOLD_TOTAL_BYTES:
        _send_held(keep=True)
    return None


class _Lazy:
    """``fn(*args, **kwargs)``, computed only if the log line that holds it is written."""

    __slots__ = ("args", "fn", "kwargs")

    def __init__(self, fn, args, kwargs) -> None:
        self.fn, self.args, self.kwargs = fn, args, kwargs

    def __str__(self) -> str:
        return str(self.fn(*self.args, **self.kwargs))

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def _lazily(fn):
    def deferred(*args, **kwargs) -> _Lazy:
        return _Lazy(fn, args, kwargs)

    deferred._axisor_lazy = True  # type: ignore[attr-defined]  # a marker on the function object
    return deferred


def _lazy_autobahn_config_log() -> None:
    """autobahn builds the arguments of its debug lines whether or not they are written: it
    pretty-prints its whole option table for every new WebSocket (~6 % of a connect storm's CPU),
    colours names and sizes with click for every frame it sends (~15 % of a broadcast's), and
    again in its Twisted adapter for every connect, read and close (~2 % of a connect storm's).
    Make them lazy."""
    try:
        from pprint import pformat

        from autobahn.twisted import websocket as twisted_websocket
        from autobahn.websocket import protocol
    except ImportError:
        return
    if getattr(protocol, "pformat", None) is not None and not hasattr(protocol.pformat, "_axisor_lazy"):
        protocol.pformat = _lazily(pformat)
    for module in (protocol, twisted_websocket):
        for name in ("hltype", "hlval"):
            fn = getattr(module, name, None)
            if fn is not None and not hasattr(fn, "_axisor_lazy"):
                setattr(module, name, _lazily(fn))


# A client's ping is answered while at most this much waits unsent to its socket (onPing above),
# or once its pong has waited PONG_WAIT_SECONDS: a client reading a busy feed over a slow link has
# more than that unsent all along (the hub writes while up to WS_SLOW_BYTES wait), and its
# keepalive waits for the pong. A client that never reads gets at most one pong a second.
PONG_BACKLOG_BYTES = 64 * 1024
PONG_WAIT_SECONDS = 1.0
_PONG_POLL_SECONDS = 0.05


def _unsent(transport) -> int:
    """Bytes a Twisted transport holds that the socket has not taken yet."""
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


def _pong_when_drained(protocol, turns: int | None = None) -> None:
    """Send the pong a backlogged socket owes for its latest ping, once little waits unsent, or
    after PONG_WAIT_SECONDS (``turns`` of the poll) whatever waits."""
    from twisted.internet import reactor

    if turns is None:
        turns = round(PONG_WAIT_SECONDS / _PONG_POLL_SECONDS)
    if protocol.state != protocol.STATE_OPEN or protocol.transport is None:
        protocol._axisor_pong_owed = None
    elif turns <= 0 or _unsent(protocol.transport) <= PONG_BACKLOG_BYTES:
        payload, protocol._axisor_pong_owed = protocol._axisor_pong_owed, None
        protocol.sendPong(payload)
    else:
        reactor.callLater(_PONG_POLL_SECONDS, _pong_when_drained, protocol, turns - 1)  # type: ignore[arg-type]


def _resume_when_drained(protocol) -> None:
    from twisted.internet import reactor

    drained = protocol.application_queue.qsize() <= settings.WS_INBOUND_QUEUE_HIGH // 4
    if drained or protocol.state != protocol.STATE_OPEN or protocol.transport is None:
        protocol._axisor_paused = False
        if protocol.transport is not None:
            protocol.transport.resumeProducing()
    else:
        # Twisted types the reactor through zope interfaces (methods without self): mypy misreads them.
        reactor.callLater(0.01, _resume_when_drained, protocol)  # type: ignore[arg-type]


# ---- writes straight to the socket behind daphne's send -------------------------------------------


def _uvicorn_protocol(send) -> Any:
    """The protocol behind uvicorn's ``send`` (its websockets sans-I/O implementation), or None."""
    protocol = getattr(send, "__self__", None)
    if protocol is None or type(protocol).__name__ != "WebSocketsSansIOProtocol":
        return None
    return protocol


def transport_backlog(send) -> int | None:
    """Bytes written to the socket but not yet sent, when the server is daphne or uvicorn (None
    elsewhere)."""
    if (uvicorn := _uvicorn_protocol(send)) is not None:
        return uvicorn.transport.get_write_buffer_size()
    protocol = getattr(send, "args", (None,))[0]
    transport = getattr(protocol, "transport", None)
    if transport is None:
        return None
    buffered = len(getattr(transport, "dataBuffer", b"")) - getattr(transport, "offset", 0)
    return buffered + getattr(transport, "_tempDataLen", 0)


def direct_sender(base_send, limit: float | None = None) -> Callable[[str], bool] | None:
    """A synchronous write of one text frame to the socket behind daphne's ``send``: what
    ``await send({"type": "websocket.send", "text": ...})`` does, checks included, without a task
    per write. None under any other server. On a plain socket (no compression, nothing queued in
    autobahn, no fragmenting or frame logging) it writes the frame's bytes itself: autobahn's
    sendMessage → sendFrame → sendData, ~40 Python lines a socket, is most of a broadcast's CPU.

    With ``limit``, a socket whose transport holds more than ``limit`` bytes not yet sent gets
    nothing: the call returns False and the caller keeps the text (``transport_backlog``, read
    here from the transport found once, not through four lookups a call). Else it returns True:
    written, or dropped because the socket is closing.

    Under uvicorn (a benchmark target) the same: the frame's bytes straight to the asyncio
    transport, where uvicorn's ``send`` would have websockets build them anew for each socket."""
    if (uvicorn := _uvicorn_protocol(base_send)) is not None:
        return _uvicorn_sender(uvicorn, limit)
    protocol = getattr(base_send, "args", (None,))[0]
    connections = getattr(getattr(getattr(base_send, "func", None), "__self__", None), "connections", None)
    if protocol is None or not isinstance(connections, dict) or not hasattr(protocol, "handle_reply"):
        return None

    from autobahn.websocket.protocol import WebSocketProtocol

    details = connections.get(protocol)
    if details is None:  # not one of daphne's connections (any more): its own send decides
        return None
    autobahn = isinstance(protocol, WebSocketProtocol)
    ground = WebSocketProtocol.SEND_STATE_GROUND
    transport: Any = getattr(protocol, "transport", None)
    if not all(hasattr(transport, a) for a in ("dataBuffer", "offset", "_tempDataLen")):
        limit = None  # not a Twisted file-descriptor transport: no buffer to read (transport_backlog: 0)
    # eager_writes' socket and Twisted's own write, when this transport has them: the frame goes
    # to the socket from here, one call fewer a delivery
    sock: Any
    buffered: Any
    sock, buffered = getattr(getattr(transport, "write", None), "_axisor_eager", (None, None))

    def send(text: str) -> bool:
        # Never raises into the hub's pass over a room: a socket already closing gets nothing more
        # (what it missed of its personal stream, it resumes). daphne marks a connection
        # disconnected in this dict before it drops it from ``connections``.
        p = protocol
        if p.state != p.STATE_OPEN or details.get("disconnected"):
            return True
        t = transport
        if limit is not None and len(t.dataBuffer) - t.offset + t._tempDataLen > limit:
            return False
        if (
            autobahn
            and text
            and p._perMessageCompress is None
            and p.send_state == ground
            and not p.triggered  # autobahn has writes queued only while triggered (its _trigger, _send)
            and not (p.maskServerFrames or p.autoFragmentSize)
            and not (p.trackedTimings or p.logFrames or p.logOctets)
        ):
            # What sendMessage → sendFrame → sendData would write, with the frame's bytes built
            # once per event for the whole room (text_frame). autobahn's traffic statistics
            # (read by nothing in daphne or here) do not count these frames.
            frame, size = text_frame(text)
            if 0 < p.maxMessagePayloadSize < size:  # autobahn refuses it (daphne's default: 1 MiB)
                p.handle_reply({"type": "websocket.send", "text": text})
            elif sock is None or _corked is not None:
                t.write(frame)  # Twisted's write, or the eager one holding it for the hub's batch
            else:
                _write_through(t, sock, buffered, frame)
        else:
            p.handle_reply({"type": "websocket.send", "text": text})
        return True

    return send


def _uvicorn_sender(protocol, limit: float | None) -> Callable[[str], bool]:
    """direct_sender under uvicorn: what its ``send`` of a ``websocket.send`` does, without the
    await, with the frame built once per event."""
    from websockets.protocol import State

    conn, transport = protocol.conn, protocol.transport

    def send(text: str) -> bool:
        if (
            protocol.close_sent
            or not protocol.handshake_complete
            or protocol.initial_response is not None
            or conn.state is not State.OPEN
            or transport.is_closing()
        ):
            return True  # closing: it resumes what it missed
        if limit is not None and transport.get_write_buffer_size() > limit:
            return False
        if conn.extensions:  # permessage-deflate: websockets compresses it
            conn.send_text(text.encode())
            data = b"".join(conn.data_to_send())
        else:
            data = text_frame(text)[0]
        now = _hold(transport, transport.write, data) if _corked is not None else data
        if now is not None:
            transport.write(now)
        return True

    return send


_last_frame: tuple[str, bytes, int] = ("", b"", 0)


def text_frame(text: str) -> tuple[bytes, int]:
    """One unfragmented, unmasked text frame carrying ``text`` (a server's frame: RFC 6455 §5.2),
    and its payload size. A broadcast hands every socket of a room the same ``str`` object, so the
    last one's frame is kept: one encode and one header per event, not per socket. (The frame is
    the same bytes for every recipient; autobahn builds it anew for each.)"""
    global _last_frame
    last = _last_frame
    if text is last[0]:
        return last[1], last[2]
    payload = text.encode()
    size = len(payload)
    if size <= 125:
        header = bytes((0x81, size))
    elif size <= 0xFFFF:
        header = bytes((0x81, 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + size.to_bytes(8, "big")
    frame = header + payload
    _last_frame = (text, frame, size)
    return frame, size


# ---- the channel layer ----------------------------------------------------------------------------
# The channel layer: channels-redis's pub/sub layer, with subscriptions that survive losing Redis.
#
# channels-redis 4.3 leaves reconnecting to redis-py's PubSub, which re-subscribes only when its
# reconnect succeeds inside one retry sequence. When Redis stays away longer (a restart, a network
# cut), the reader logs an error, the reconnect later succeeds without re-subscribing, and the
# process stays deaf to every group and channel until it restarts (tests/hardening, case 13: after
# a 30 s outage no live event reached any socket for the minute the test waited). Here the reader
# notices the failure, and once Redis answers again it
# subscribes a fresh PubSub to everything this process had subscribed. Messages published while it
# was away are not replayed (pub/sub never does); personal events are recovered from the event log
# by seq: every local channel gets a ``layer.reconnected`` message and its consumer catches up.
#
# A link can also go silent without failing (a network partition: no FIN, no RST, the reader just
# hears nothing). The reader pings a link that has been quiet for LIVENESS_SECONDS and counts it
# lost when no answer comes within REDIS_SOCKET_TIMEOUT. While a server is lost, new subscriptions
# to it are refused (the socket is told to retry: 4013) and, once it has been lost for
# CHANNEL_LAYER_GRACE_SECONDS, every local channel gets a ``layer.lost`` message naming the groups
# this process held there: their sockets are told to reconnect (gateway/hub.py) and resume wherever
# the layer reaches them. With several servers (CHANNEL_LAYER_HOSTS) each is watched on its own.

RETRY_SECONDS = 0.5
LIVENESS_SECONDS = 1.0  # a link quiet this long is pinged
RECONNECTED = "layer.reconnected"  # the message type every local channel gets after a re-subscribe
LOST = "layer.lost"  # ... and after a server stayed unreachable for CHANNEL_LAYER_GRACE_SECONDS


class ResilientShardConnection(RedisSingleShardConnection):
    _pubsub: PubSub | None  # set by the base class (channels-redis is untyped)

    def __init__(self, host, channel_layer) -> None:
        super().__init__(host, channel_layer)
        self._lost = False
        self._grace: asyncio.TimerHandle | None = None  # layer.lost, unless the server is back first
        # (un)subscriptions asked for while the previous ones are under way, in the order asked
        self._changes: list[tuple[str, bool, asyncio.Future]] = []
        self._changer: asyncio.Task | None = None

    # A connect storm subscribes a user group per socket. channels-redis sends a SUBSCRIBE per
    # channel, one at a time under the shard's lock: a round of Python and a write per socket, and
    # a group asked for later (the system room's, once) waits behind every one queued before it.
    # Here whatever is asked for while a change is under way goes in the next one: one SUBSCRIBE
    # and one UNSUBSCRIBE for all of it, with the result of applying the requests in order.

    async def subscribe(self, channel) -> None:
        if self._lost and channel not in self._subscribed_to:
            # a subscription on a server we cannot hear would leave its socket deaf: refuse it
            raise RedisConnectionError(f"channel layer server {self._where()} is unreachable")
        await self._change(channel, True)

    async def unsubscribe(self, channel) -> None:
        await self._change(channel, False)

    async def _change(self, channel: str, subscribe: bool) -> None:
        done = asyncio.get_running_loop().create_future()
        self._changes.append((channel, subscribe, done))
        changer = self._changer
        if changer is None or changer.done() or changer.cancelling():
            changer = self._changer = asyncio.ensure_future(self._apply_changes())
            changer.add_done_callback(self._changer_ended)
        await done  # ours alone: a cancelled caller cancels it; the change is still applied

    async def _apply_changes(self) -> None:
        changes: list[tuple[str, bool, asyncio.Future]] = []
        try:
            while self._changes:
                async with self._lock:
                    changes, self._changes = self._changes, []
                    failed = await self._apply(changes)
                for channel, subscribe, done in changes:
                    if not done.done():
                        failure = failed.get(subscribe)
                        if failure is not None and channel in failure[1]:
                            done.set_exception(failure[0])
                        else:
                            done.set_result(None)
                changes = []
        finally:  # cancelled with its loop: what it had taken fails rather than waits forever
            _fail(changes)

    def _changer_ended(self, task: asyncio.Task) -> None:
        """A changer cancelled (with its loop) before it took what is asked for, and no changer
        after it to take it: that fails too."""
        if not task.cancelled() and task.exception() is None:
            return
        if self._changer is task:
            changes, self._changes = self._changes, []
            _fail(changes)

    async def _apply(self, changes) -> dict[bool, tuple[Exception, set[str]]]:
        """Under the lock: what ``changes`` leave each channel wanting, in two commands at most.
        Returns the failures: per direction, the error and the channels it concerns."""
        wanted: dict[str, bool] = {}
        for channel, subscribe, _ in changes:
            wanted[channel] = subscribe  # the last request for a channel is its result
        failed: dict[bool, tuple[Exception, set[str]]] = {}
        for subscribe in (False, True):
            channels = [c for c, want in wanted.items() if want is subscribe and (c in self._subscribed_to) is not want]
            if not channels:
                continue
            if self._lost and not subscribe:  # the dead PubSub is replaced when the server is back
                self._subscribed_to.difference_update(channels)
                continue
            try:
                if self._lost:
                    raise RedisConnectionError(f"channel layer server {self._where()} is unreachable")
                self._ensure_redis()
                self._ensure_receiver()
                pubsub = self._pubsub
                assert pubsub is not None  # made by _ensure_redis
                if subscribe:
                    await pubsub.subscribe(*channels)
                    self._subscribed_to.update(channels)
                else:
                    await pubsub.unsubscribe(*channels)
                    self._subscribed_to.difference_update(channels)
            except Exception as exc:  # noqa: BLE001 - the callers' to handle, as channels-redis raises it
                failed[subscribe] = (exc, set(channels))
        return failed

    async def _do_receiving(self) -> None:
        loop = asyncio.get_running_loop()
        heard, pinged = loop.time(), None
        while True:
            try:
                if self._lost:
                    await self._resubscribe()
                    heard, pinged = loop.time(), None
                if self._pubsub and self._pubsub.subscribed:
                    message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
                    if message is not None:  # a message, or the answer to our ping
                        heard, pinged = loop.time(), None
                        self._receive_message(message)
                    elif pinged is None:
                        if loop.time() - heard > LIVENESS_SECONDS:
                            pinged = loop.time()
                            await self._pubsub.ping()
                    elif loop.time() - pinged > settings.REDIS_SOCKET_TIMEOUT:
                        raise RedisConnectionError(f"no answer to a PING in {settings.REDIS_SOCKET_TIMEOUT:g} s")
                else:
                    heard = loop.time()
                    await asyncio.sleep(0.1)
            except (asyncio.CancelledError, TimeoutError, GeneratorExit):
                raise
            except Exception as exc:  # noqa: BLE001 - any failure of the link: re-subscribe
                if not self._lost:
                    logger.warning(
                        "Redis pub/sub connection to %s lost (%s); re-subscribing when it is back", self._where(), exc
                    )
                    self._lost = True
                    self._grace = loop.call_later(settings.CHANNEL_LAYER_GRACE_SECONDS, self._tell_lost)
                await asyncio.sleep(RETRY_SECONDS)

    async def _resubscribe(self) -> None:
        # Is it answering? Subscribing only writes, which through a partition would "succeed".
        await self._redis.ping()
        async with self._lock:
            old, self._pubsub = self._pubsub, self._redis.pubsub()
            if old is not None:
                with contextlib.suppress(Exception):
                    await old.aclose()
            if self._subscribed_to:
                await self._pubsub.subscribe(*self._subscribed_to)
                await self._taken()
            self._lost = False
            if self._grace is not None:
                self._grace.cancel()
        # Whatever was published while this process was deaf never comes: tell every local
        # channel, so connections catch their personal streams up from the event log.
        self._tell({"type": RECONNECTED})
        logger.warning(
            "Redis pub/sub connection to %s back: %d channel(s) re-subscribed", self._where(), len(self._subscribed_to)
        )

    async def _taken(self) -> None:
        """Wait until Redis has taken the SUBSCRIBE just written (``subscribe`` only writes it): it
        answers a connection's commands in order, so when the PING sent after it is answered, what
        is published from then on reaches this process. Told ``reconnected`` any sooner, a
        connection would catch up from the event log while an event published meanwhile was still
        not coming. Messages that arrive first go on as usual. Each reply (a confirmation per
        channel, thousands after a long outage) has REDIS_SOCKET_TIMEOUT to come: a link that
        answers, however many channels it holds, is not taken for lost."""
        assert self._pubsub is not None
        await self._pubsub.ping()
        while True:
            message = await self._pubsub.get_message(timeout=settings.REDIS_SOCKET_TIMEOUT)
            if message is None:
                raise RedisConnectionError(f"no answer to a PING in {settings.REDIS_SOCKET_TIMEOUT:g} s")
            if message["type"] == "pong":
                return
            if message["type"] in ("message", "pmessage"):
                self._receive_message(message)

    def _tell_lost(self) -> None:
        if not self._lost:
            return
        marker = f"{self.channel_layer.prefix}__group__"
        groups = sorted(name.removeprefix(marker) for name in self._subscribed_to if name.startswith(marker))
        self._tell({"type": LOST, "groups": groups})
        logger.warning(
            "Redis pub/sub connection to %s lost for %g s: %d group(s) told to reconnect",
            self._where(),
            settings.CHANNEL_LAYER_GRACE_SECONDS,
            len(groups),
        )

    def _tell(self, message: dict) -> None:
        layer = self.channel_layer
        notice = layer.channel_layer.serialize(message)
        for queue in list(layer.channels.values()):
            queue.put_nowait(notice)

    def _where(self) -> str:
        if "address" not in self.host:
            return f"Sentinel master {self.host.get('master_name')}"
        url = urlsplit(self.host["address"])  # host and port only: never a password in the log
        return f"{url.hostname}:{url.port}"


def _fail(changes: list[tuple[str, bool, asyncio.Future]]) -> None:
    closed = RedisConnectionError("the channel layer is closing")
    for _, _, done in changes:
        if not done.done():
            done.set_exception(closed)


class ShardTripped(ServerTripped):
    """A publish not tried: its channel-layer server timed out on an earlier call (a publish, or
    the cache's on the same Redis) and has not answered a PING since
    (``ResilientPubSubChannelLayer.publish_blocking``)."""


def received_now(layer, channel: str) -> dict | None:
    """The next message the pub/sub layer has already read for ``channel`` in this event loop, or
    None, without waiting (``receive`` without the await: the hub drains a burst in one go).
    None under any other layer."""
    if not isinstance(layer, RedisPubSubChannelLayer):
        return None
    inner = layer._get_layer()
    queue = inner.channels.get(channel)
    if queue is None or queue.empty():
        return None
    return inner.channel_layer.deserialize(queue.get_nowait())


class ResilientPubSubChannelLayer(RedisPubSubChannelLayer):
    """``RedisPubSubChannelLayer`` whose per-loop layers use ``ResilientShardConnection``, and
    which synchronous code can publish to without an event loop (``publish_blocking``)."""

    _blocking_lock = threading.Lock()
    # Class defaults, set per instance: the base class's __getattr__ needs a loop.
    _sync_clients: list | None = None
    _breakers: list[Breaker] = []

    def __init__(self, hosts=None, **kwargs) -> None:
        # No hosts in CHANNEL_LAYERS: the configured Redis (one server or Sentinel), or the
        # CHANNEL_LAYER_HOSTS shards (core/redis_clients.py).
        super().__init__(hosts=hosts or layer_hosts(), **kwargs)
        # One per server and process, shared with every other guarded client of that server (the
        # cache's, when the layer is on the configured Redis): a timeout of either trips both.
        self._breakers = [breaker_for(host) for host in decode_hosts(self._kwargs.get("hosts"))]

    def publish_blocking(self, sends: list[tuple[str, dict]]) -> dict[int, Exception]:
        """``group_send`` of each ``(group, message)``, in order, from a thread with no event loop:
        the same channel names, shards (channels-redis's own hash) and serialisation as
        ``group_send``, one pipeline per shard (one round trip for a transaction's events).
        ``async_to_sync(group_send)`` instead waits for a turn of the server's event loop, busy
        with every socket, twice per call: ~30 ms per order placement at 100 orders/s. Returns
        the sends that failed (their index → redis-py's error): a shard that cannot be reached
        fails only the messages for its rooms.

        A shard that stops answering (a hung or partitioned Redis: the connection stays open and
        nothing comes back; with Sentinel, no sentinel answering for its master) costs the
        callers in flight one socket timeout, not redis-py's retries (a publish that timed out
        may have landed; sending it again only duplicates it). The shard's ``Breaker`` is then
        tripped in this process (core/redis_clients.py): its sends fail at once, without a round
        trip, its idle connections are closed, and a watcher thread pings it (on a new connection
        each time: with Sentinel, to the master it names now) until it answers. The breaker is
        the server's, not the layer's: when the cache's throttle counter already timed out on the
        same Redis, the request's publish is not even tried. Every caller of this method leaves
        what failed to a successor (the outbox's relay, the next update of a conflated key), so
        nobody else waits behind that shard: a REST request's commit, the conflater's thread,
        and the other shards' rooms go on."""
        clients = self._blocking_clients()
        prefix = self._kwargs.get("prefix", "asgi")
        pipes: dict[int, tuple[Pipeline, list[int]]] = {}
        for i, (group, message) in enumerate(sends):
            name = f"{prefix}__group__{group}"
            shard = _consistent_hash(name, len(clients))  # what RedisPubSubLoopLayer._get_shard picks
            if shard not in pipes:
                pipes[shard] = (clients[shard].pipeline(transaction=False), [])
            pipe, indexes = pipes[shard]
            pipe.publish(name, self.serialize(message))
            indexes.append(i)
        failed: dict[int, Exception] = {}
        for shard, (pipe, indexes) in pipes.items():
            breaker = self._breakers[shard]
            if breaker.tripped:
                failed.update(dict.fromkeys(indexes, ShardTripped(f"channel-layer server {shard} is not answering")))
                continue
            try:
                with breaker.guard():  # a timeout trips it
                    pipe.execute()
            except Exception as exc:  # noqa: BLE001 - the caller decides; the other shards still get theirs
                failed.update(dict.fromkeys(indexes, exc))
        return failed

    def shard_answering(self, shard: int) -> threading.Event:
        """Set while this process sends to ``shard``; cleared while it is tripped (the tests wait on it)."""
        return self._breakers[shard].answering

    def _blocking_clients(self) -> list:
        clients = self._sync_clients
        if clients is None:
            with self._blocking_lock:
                clients = self._sync_clients
                if clients is None:
                    hosts = decode_hosts(self._kwargs.get("hosts"))
                    clients = [publishing_client_for(host) for host in hosts]
                    for breaker, client in zip(self._breakers, clients, strict=True):
                        breaker.attach(client)
                    self._sync_clients = clients
        return clients

    def _get_layer(self):
        loop = asyncio.get_running_loop()
        if loop not in self._layers:
            # The base class builds its loop layer and registers loop-close cleanup; build it,
            # then swap the shard connections before anything subscribed through them.
            layer = super()._get_layer()
            layer._shards = [ResilientShardConnection(shard.host, layer) for shard in layer._shards]
        return self._layers[loop]
