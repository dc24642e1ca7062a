"""Options of daphne's HTTP and WebSocket layers that its command line does not expose.

daphne sets its factories up when its server starts, after importing the application, so the
wrappers installed here take effect; under any other ASGI server they are never used.
"""

from __future__ import annotations

from django.conf import settings

from axisor.logfilters import redact


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

    on_message = WebSocketProtocol.onMessage
    WebSocketProtocol._axisor_paused = False
    WebSocketProtocol.onMessage = onMessage
    write_access = AccessLogGenerator.write_entry
    AccessLogGenerator.write_entry = write_entry
    WebSocketFactory.setProtocolOptions = setProtocolOptions
    HTTPFactory.__init__ = __init__
    WebSocketFactory._axisor_tuned = True
    _lazy_autobahn_config_log()


class _Pretty:
    """pprint.pformat(value), computed only if the log line that holds it is written."""

    __slots__ = ("value",)

    def __init__(self, value) -> None:
        self.value = value

    def __str__(self) -> str:
        from pprint import pformat

        return pformat(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def _lazy_autobahn_config_log() -> None:
    """autobahn pretty-prints its whole option table for a debug line on every new WebSocket,
    logged or not: ~6 % of the CPU of a connect storm. Make it lazy."""
    try:
        from autobahn.websocket import protocol
    except ImportError:
        return
    if getattr(protocol, "pformat", None) is not None:
        protocol.pformat = _Pretty


def _resume_when_drained(protocol) -> None:
    from twisted.internet import reactor

    drained = protocol.application_queue.qsize() <= settings.WS_INBOUND_QUEUE_HIGH // 4
    if drained or protocol.state != protocol.STATE_OPEN or protocol.transport is None:
        protocol._axisor_paused = False
        if protocol.transport is not None:
            protocol.transport.resumeProducing()
    else:
        reactor.callLater(0.01, _resume_when_drained, protocol)
