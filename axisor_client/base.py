"""The reconnecting WebSocket loop both clients share: URL rotation, backoff, heartbeat, read timeout,
connection-status callbacks and the ``last_seq`` position that resume and dedupe are built on."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from .backoff import Backoff

logger = logging.getLogger("axisor_client")

CONNECTED = "connected"
RECONNECTING = "reconnecting"
DISCONNECTED = "disconnected"
NORECONNECT = "noreconnect"
STATUSES = (CONNECTED, RECONNECTING, DISCONNECTED, NORECONNECT)

# Close codes (docs/reference/close-codes.md).
AUTH_FAILED, TOKEN_EXPIRED, ACCESS_REVOKED, RATE_LIMITED = 4001, 4002, 4003, 4008
TOO_MANY_CONNECTIONS, TOO_MANY_ATTEMPTS, IDLE_TIMEOUT = 4029, 4030, 4040
# /ws/orders accepts, then refuses over its tier limits: such a connection never "worked".
REFUSED = {TOO_MANY_CONNECTIONS, TOO_MANY_ATTEMPTS}
# "Too many": wait the longest delay before trying again.
SLOW_DOWN = {RATE_LIMITED, TOO_MANY_CONNECTIONS, TOO_MANY_ATTEMPTS}
# The close code an error message announces. The server sends the error, then closes; when the
# close code does not arrive (daphne turns an IntEnum close code into 1011), the error tells us.
ERROR_CLOSES = {"AUTHENTICATION_FAILED": AUTH_FAILED, "TOKEN_EXPIRED": TOKEN_EXPIRED, "ACCESS_REVOKED": ACCESS_REVOKED}

Source = Any  # a value, or a callable (sync or async) returning the value on every (re)connect


class AxisorError(Exception):
    """An ``{"type":"error"}`` answer of the server to one of our requests."""

    def __init__(self, code: str, message: str, payload: dict | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.payload = payload or {}


class ConnectionStatus(str):
    """A status string (``"connected"``, ``"reconnecting"``, ``"disconnected"``, ``"noreconnect"``) that
    also carries what happened: ``url``, ``attempt`` and ``delay`` (reconnecting), ``code`` and ``reason``."""

    url: str | None
    attempt: int | None
    delay: float | None
    code: int | None
    reason: str | None

    def __new__(cls, value: str, **info: Any) -> ConnectionStatus:
        self = super().__new__(cls, value)
        for name in ("url", "attempt", "delay", "code", "reason"):
            setattr(self, name, info.get(name))
        return self

    def __repr__(self) -> str:
        details = ", ".join(
            f"{k}={getattr(self, k)!r}"
            for k in ("url", "attempt", "delay", "code", "reason")
            if getattr(self, k) is not None
        )
        return f"ConnectionStatus({str(self)!r}{', ' if details else ''}{details})"


@dataclass
class _Outcome:
    """How one connection attempt ended."""

    established: bool = False
    code: int | None = None
    reason: str = ""
    auth_failure: bool = False
    fatal: str | None = None


async def resolve(source: Source) -> Any:
    """The value of a source: plain values as they are; a callable is called (a sync one in a worker
    thread, since providers usually do blocking HTTP), and an awaitable result awaited."""
    if not callable(source):
        return source
    if inspect.iscoroutinefunction(source):
        return await source()
    value = await asyncio.to_thread(source)
    if inspect.isawaitable(value):
        value = await value
    return value


def invalidate(source: Source) -> None:
    """Tell a credentials provider its last answer was refused (``source.invalidate()``, or the
    ``invalidate()`` of the object a bound method belongs to), so it fetches fresh ones."""
    for target in (source, getattr(source, "__self__", None)):
        hook = getattr(target, "invalidate", None)
        if callable(hook):
            hook()
            return


def websocket_url(url: str, path: str) -> str:
    """``http(s)://host:port`` or ``ws(s)://host:port`` → the socket URL; a URL with a path is kept as is."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise ValueError(f"not a server URL: {url!r} (expected http://, https://, ws:// or wss://)")
    return urlunsplit((scheme, parts.netloc, parts.path if parts.path not in ("", "/") else path, parts.query, ""))


def with_query(url: str, params: dict[str, Any]) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in params]
    query += [(k, str(v)) for k, v in params.items() if v is not None]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


class ReconnectingClient:
    """Connect, read, and on any loss reconnect with backoff, until ``stop()`` or the tries run out.

    ``url``: one URL, a list to rotate through (each reconnect moves to the next one), or a callable
    (sync or async) returning the URL to use for each attempt.
    """

    path = "/ws"
    heartbeat_text = "PONG"

    def __init__(
        self,
        url: str | Sequence[str] | Callable[[], Any],
        *,
        last_seq: int | None = None,
        read_timeout: float | None = 30.0,
        heartbeat_interval: float | None = 30.0,
        auto_reconnect: bool = True,
        max_tries: int | None = 300,
        initial_delay: float = 1.0,
        max_delay: float = 10.0,
        jitter: float = 0.25,
        max_auth_failures: int = 3,
        open_timeout: float = 10.0,
        close_timeout: float = 2.0,
        max_size: int | None = 2**22,
        connect_kwargs: dict | None = None,
    ) -> None:
        if isinstance(url, str):
            self._urls: list[str] | None = [url]
            self._url_source = None
        elif callable(url):
            self._urls, self._url_source = None, url
        else:
            self._urls, self._url_source = list(url), None
            if not self._urls:
                raise ValueError("give at least one URL")
        self._url_index = 0
        self.last_seq = last_seq
        self.read_timeout = read_timeout
        self.heartbeat_interval = heartbeat_interval
        self.auto_reconnect = auto_reconnect
        self.backoff = Backoff(initial_delay, max_delay, max_tries, jitter)
        self.max_auth_failures = max_auth_failures
        self.open_timeout = open_timeout
        self.close_timeout = close_timeout
        self.max_size = max_size
        self.connect_kwargs = connect_kwargs or {}
        self.url: str | None = None  # the URL of the current (or last) connection
        self.duplicates = 0  # events dropped because their seq was already seen
        self.callback_errors = 0
        self._handlers: dict[tuple[str, str], list[Callable]] = defaultdict(list)
        self._ws: ClientConnection | None = None
        self._last_error: dict | None = None  # the last message, when it was an error
        self._connected = asyncio.Event()
        self._announced = False  # "connected" was reported for the current socket
        self._ready = False  # the current socket got far enough to count as working
        self._stopping = False
        self._stop_event: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._running = False

    # ---- callbacks --------------------------------------------------------------------------

    def _add(self, kind: str, key: str, callback: Callable) -> Callable:
        self._handlers[(kind, key)].append(callback)
        return callback

    def on_connection_status(self, callback: Callable[[ConnectionStatus], Any]) -> Callable:
        """``callback(status)`` for every status change; ``status`` is a ConnectionStatus (a str)."""
        return self._add("status", "*", callback)

    def on_status(self, status: str, callback: Callable[[ConnectionStatus], Any]) -> Callable:
        """``callback(status)`` for one of connected, reconnecting, disconnected, noreconnect."""
        if status not in (*STATUSES, "*"):
            raise ValueError(f"unknown status {status!r}; one of {', '.join(STATUSES)}")
        return self._add("status", status, callback)

    def on_message(self, callback: Callable[[dict], Any]) -> Callable:
        """``callback(message)`` for every JSON message as received, control messages and duplicates
        included, before any other callback."""
        return self._add("message", "*", callback)

    def on_error(self, callback: Callable[[dict], Any]) -> Callable:
        """``callback(message)`` for every ``{"type":"error"}`` message of the server."""
        return self._add("error", "*", callback)

    def on_resumed(self, callback: Callable[[dict], Any]) -> Callable:
        """``callback(message)`` once the server has replayed what we missed (``{"type":"resumed"}``)."""
        return self._add("resumed", "*", callback)

    def on_resume_failed(self, callback: Callable[[dict], Any]) -> Callable:
        """``callback(message)`` when the server could not replay what we missed: ``reason`` is
        ``too_old`` (the log no longer holds it: events were lost, re-fetch your state over REST) or
        ``ahead``. The stream continues live after it."""
        return self._add("resume_failed", "*", callback)

    def on_last_seq(self, callback: Callable[[int | None], Any]) -> Callable:
        """``callback(resume_from)`` whenever the position changes: after each event's callbacks, and
        when a connection or resume moves it. Persist it to resume across restarts."""
        return self._add("last_seq", "*", callback)

    async def _fire(self, kind: str, key: str, *args: Any) -> None:
        for callback in list(self._handlers.get((kind, key), ())):
            try:
                result = callback(*args)
                if inspect.isawaitable(result):
                    await result
            except Exception:  # a failing callback must not break the stream or lose its position
                self.callback_errors += 1
                logger.exception("axisor_client: %s callback %r failed", kind, callback)

    async def _status(self, status: str, **info: Any) -> None:
        value = ConnectionStatus(status, **info)
        logger.info("axisor_client: %r", value)
        await self._fire("status", status, value)
        await self._fire("status", "*", value)

    # ---- position ---------------------------------------------------------------------------

    @property
    def resume_from(self) -> int | None:
        """The seq the next connection resumes after (None: live from the connection on)."""
        return self.last_seq

    async def _set_last_seq(self, seq: int | None) -> None:
        before = self.resume_from
        self.last_seq = seq
        await self._moved(before)

    async def _moved(self, before: int | None) -> None:
        if self.resume_from != before:
            await self._fire("last_seq", "*", self.resume_from)

    # ---- life cycle -------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float | None = None) -> bool:
        """Wait until the client is connected; False after ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def start(self) -> asyncio.Task:
        """Run in a background task (see ``run``); ``stop()`` ends it."""
        if self._task is None or self._task.done():
            self._stopping = False
            self._task = asyncio.ensure_future(self.run())
        return self._task

    async def __aenter__(self) -> ReconnectingClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Close the connection and stop reconnecting; waits for ``run()`` to return (unless called
        from one of this client's own callbacks)."""
        self._stopping = True
        if self._stop_event is not None:
            self._stop_event.set()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):  # already closing or gone: nothing to do
                await ws.close(1000, "client stopped")
        task = self._task
        if task is not None and task is not asyncio.current_task() and not task.done():
            await asyncio.wait({task}, timeout=self.close_timeout + 5)

    async def run(self) -> str:
        """Connect and keep the connection, reconnecting on any loss, until ``stop()``; returns
        ``"disconnected"`` after stop() (or a loss with auto_reconnect off), ``"noreconnect"`` when it
        gave up: retries exhausted, or the server refused us for good (bad credentials, 4003)."""
        if self._running:
            raise RuntimeError("this client is already running")
        self._running = True
        self._stop_event = asyncio.Event()
        self._connected.clear()
        self.backoff.reset()
        auth_failures = 0
        try:
            while not self._stopping:
                outcome = await self._attempt()
                if self._stopping:
                    break
                if outcome.established:
                    self.backoff.reset()
                    auth_failures = 0
                fatal = outcome.fatal
                if outcome.code == ACCESS_REVOKED:
                    fatal = outcome.reason or "access revoked"
                elif outcome.auth_failure:
                    auth_failures += 1
                    invalidate(self._credentials_source())
                    if not callable(self._credentials_source()) or auth_failures >= self.max_auth_failures:
                        fatal = outcome.reason or "authentication failed"
                if fatal is not None:
                    await self._status(NORECONNECT, url=self.url, code=outcome.code, reason=fatal)
                    return NORECONNECT
                if not self.auto_reconnect:
                    return DISCONNECTED
                delay = self.backoff.next(slow=outcome.code in SLOW_DOWN)
                if delay is None:
                    reason = f"gave up after {self.backoff.max_tries} attempts ({outcome.reason})"
                    await self._status(NORECONNECT, url=self.url, code=outcome.code, reason=reason)
                    return NORECONNECT
                self._url_index += 1
                await self._status(
                    RECONNECTING,
                    url=self.url,
                    attempt=self.backoff.attempt,
                    delay=round(delay, 3),
                    code=outcome.code,
                    reason=outcome.reason,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop_event.wait(), delay)
            return DISCONNECTED
        finally:
            self._running = False
            self._stopping = False  # a stop() that came before run() started still ended this run
            self._connected.clear()

    async def _next_url(self) -> str:
        if self._url_source is not None:
            url = await resolve(self._url_source)
        else:
            assert self._urls is not None  # set when no url source is
            url = self._urls[self._url_index % len(self._urls)]
        return websocket_url(url, self.path)

    async def _attempt(self) -> _Outcome:
        try:
            self.url = await self._next_url()
        except ValueError as exc:  # not a server URL: trying again will not help
            return _Outcome(fatal=str(exc))
        except Exception as exc:  # noqa: BLE001 - a URL provider that fails is one failed attempt
            logger.warning("axisor_client: the URL provider failed: %r", exc)
            return _Outcome(reason=f"the URL provider failed: {exc!r}")
        try:
            target, headers = await self._prepare(self.url)
        except Exception as exc:  # noqa: BLE001 - a provider that fails (auth server down...) is one failed attempt
            logger.warning("axisor_client: preparing the connection failed: %r", exc)
            return _Outcome(reason=f"preparing the connection failed: {exc!r}")
        try:
            ws = await connect(
                target,
                additional_headers=headers,
                open_timeout=self.open_timeout,
                close_timeout=self.close_timeout,
                ping_interval=None,  # our own heartbeat and read timeout, as the seed describes
                max_size=self.max_size,
                **self.connect_kwargs,
            )
        except InvalidURI as exc:
            return _Outcome(fatal=str(exc))
        except InvalidStatus as exc:
            status = exc.response.status_code
            return _Outcome(code=status, reason=f"handshake refused: HTTP {status}", auth_failure=status in (401, 403))
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            return _Outcome(reason=f"connect failed: {exc!r}")
        if self._stopping:
            await ws.close(1000, "client stopped")
            return _Outcome()
        return await self._serve(ws)

    async def _serve(self, ws: ClientConnection) -> _Outcome:
        self._ws = ws
        self._announced = self._ready = False
        self._last_error = None
        code, reason = None, ""
        heartbeat = asyncio.ensure_future(self._heartbeat(ws)) if self.heartbeat_interval else None
        try:
            await self._on_open(ws)
            while True:
                try:
                    async with asyncio.timeout(self.read_timeout):
                        raw = await ws.recv()
                except TimeoutError:
                    reason = f"read timeout: nothing received for {self.read_timeout:g} s"
                    break
                await self._on_raw(raw)
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else 1006
            reason = exc.rcvd.reason if exc.rcvd is not None else "connection lost"
        except ConnectionError:
            pass  # a send of ours found the socket closed (send_json): its close code is read below
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
            self._ws = None
            self._connected.clear()
            with contextlib.suppress(Exception):  # closing a dead socket may fail in any way; it is gone
                await ws.close(1000, "reconnecting")
            await self._on_close()
        if code is None and ws.close_code is not None and not reason:
            code, reason = ws.close_code, ws.close_reason or ""
        if code is not None and not 4000 <= code < 5000 and self._last_error is not None:
            error = self._last_error
            announced = error.get("closeCode") or ERROR_CLOSES.get(error.get("code"))
            if isinstance(announced, int):
                code, reason = announced, f"{error.get('code')}: {error.get('message')} (closed with {code})"
        # A session that got going counts as working however it ended (a token expiring after 15
        # minutes included): the backoff and the count of authentication failures start again.
        established = self._ready and code not in REFUSED
        if self._announced:
            await self._status(DISCONNECTED, url=self.url, code=code, reason=reason)
        return _Outcome(
            established=established,
            code=code,
            reason=reason or (f"closed with {code}" if code else "closed"),
            auth_failure=code in (AUTH_FAILED, TOKEN_EXPIRED),
        )

    async def _heartbeat(self, ws: ClientConnection) -> None:
        interval = self.heartbeat_interval
        assert interval is not None  # started only with an interval
        while True:
            await asyncio.sleep(interval)
            try:
                await ws.send(self.heartbeat_text)
            except ConnectionClosed:
                return

    async def _announce(self) -> None:
        """The socket is usable: report "connected"."""
        self._ready = self._announced = True
        self._connected.set()
        await self._status(CONNECTED, url=self.url)

    async def _on_raw(self, raw: str | bytes) -> None:
        if isinstance(raw, bytes):
            return
        try:
            message = json.loads(raw)
        except ValueError:
            logger.warning("axisor_client: ignoring a message that is not JSON: %.200r", raw)
            return
        if not isinstance(message, dict):
            return
        self._last_error = message if message.get("type") == "error" else None
        await self._fire("message", "*", message)
        await self._handle(message)

    async def send_json(self, message: dict) -> None:
        """Send a message now; raises ConnectionError when not connected."""
        ws = self._ws
        if ws is None:
            raise ConnectionError("not connected")
        try:
            await ws.send(json.dumps(message, separators=(",", ":")))
        except ConnectionClosed as exc:
            raise ConnectionError("connection closed") from exc

    # ---- for subclasses ---------------------------------------------------------------------

    def _credentials_source(self) -> Source:
        """What ``_prepare`` authenticates with (a callable one is asked again on reconnect)."""
        return None

    async def _prepare(self, url: str) -> tuple[str, dict | None]:
        """The URL to connect to and the handshake headers."""
        return url, None

    async def _on_open(self, ws: ClientConnection) -> None:
        await self._announce()

    async def _on_close(self) -> None:
        return None

    async def _handle(self, message: dict) -> None:
        raise NotImplementedError
