"""Options of daphne's HTTP and WebSocket layers that its command line does not expose.

daphne sets its factories up when its server starts, after importing the application, so the
wrappers installed here take effect; under any other ASGI server they are never used.
"""

from __future__ import annotations

from django.conf import settings

from core.logfilters import redact


def tune_gc() -> None:
    """Freeze what start-up built (modules, settings, URL resolvers: never garbage) out of every
    future collection, and collect at ``settings.GC_THRESHOLDS``. Reference cycles are still
    collected, in fewer and larger passes; a socket's objects are scanned ~50× less often."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(*settings.GC_THRESHOLDS)


def tune_daphne() -> None:
    try:
        from daphne.access import AccessLogGenerator
        from daphne.http_protocol import HTTPFactory
        from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol
    except ImportError:
        return
    if getattr(WebSocketFactory, "_axisor_tuned", False):
        return
    set_options = WebSocketFactory.setProtocolOptions
    http_init = HTTPFactory.__init__

    def setProtocolOptions(self, *args, **kwargs):
        # daphne leaves autobahn's failByDrop on, so a message over the 1 MiB limit or a text frame
        # that is not UTF-8 just cuts the connection: the client sees 1006, like a network fault.
        # Off, the client gets a close frame with 1009 / 1007 (RFC 6455) and knows what it did.
        kwargs.setdefault("failByDrop", False)
        return set_options(self, *args, **kwargs)

    def __init__(self, *args, **kwargs):
        http_init(self, *args, **kwargs)
        # Twisted's idle timeout for a connection that has not sent a whole request: a socket that
        # connects and never finishes its HTTP/WebSocket handshake holds a descriptor until then.
        self.timeOut = settings.HTTP_IDLE_TIMEOUT_SECONDS

    def write_entry(self, host, date, request, *args, **kwargs):
        # daphne's access log writes the whole request URI, query string and all, past Python's
        # logging (and so past our redaction filter): a credential in a query string would land
        # in the log file. Mask it the same way.
        return write_access(self, host, date, redact(request), *args, **kwargs)

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

    on_message = WebSocketProtocol.onMessage
    connection_made = WebSocketProtocol.connectionMade
    WebSocketProtocol.connectionMade = connectionMade
    WebSocketProtocol._axisor_paused = False
    WebSocketProtocol.onMessage = onMessage
    write_access = AccessLogGenerator.write_entry
    AccessLogGenerator.write_entry = write_entry
    WebSocketFactory.setProtocolOptions = setProtocolOptions
    HTTPFactory.__init__ = __init__
    WebSocketFactory._axisor_tuned = True
    _lazy_autobahn_config_log()


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
        t = transport
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

    transport.write = write
    transport.setTcpNoDelay(True)
    return True


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

    deferred._axisor_lazy = True
    return deferred


def _lazy_autobahn_config_log() -> None:
    """autobahn builds the arguments of its debug lines whether or not they are written: it
    pretty-prints its whole option table for every new WebSocket (~6 % of a connect storm's CPU)
    and colours names and sizes with click for every frame it sends (~15 % of a broadcast's).
    Make them lazy."""
    try:
        from pprint import pformat

        from autobahn.websocket import protocol
    except ImportError:
        return
    if getattr(protocol, "pformat", None) is not None and not hasattr(protocol.pformat, "_axisor_lazy"):
        protocol.pformat = _lazily(pformat)
    for name in ("hltype", "hlval"):
        fn = getattr(protocol, name, None)
        if fn is not None and not hasattr(fn, "_axisor_lazy"):
            setattr(protocol, name, _lazily(fn))


def _resume_when_drained(protocol) -> None:
    from twisted.internet import reactor

    drained = protocol.application_queue.qsize() <= settings.WS_INBOUND_QUEUE_HIGH // 4
    if drained or protocol.state != protocol.STATE_OPEN or protocol.transport is None:
        protocol._axisor_paused = False
        if protocol.transport is not None:
            protocol.transport.resumeProducing()
    else:
        reactor.callLater(0.01, _resume_when_drained, protocol)
