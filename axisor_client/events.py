"""``AxisorClient``: the ``/ws`` events protocol (seed 000) with reconnect, resubscribe, resume and dedupe."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from websockets.asyncio.client import ClientConnection

from .base import AxisorError, ReconnectingClient, Source, logger, resolve, with_query

# Not rooms: filters on the caller's own personal stream, all on by default (docs/reference/ws.md, "Rooms").
CATEGORIES = ("notifications", "positions", "margin_guard", "alerts", "orders")
# Refusals of a room that will not change by asking again.
ROOM_REFUSALS = ("INVALID_ROOM", "FORBIDDEN")


class AxisorClient(ReconnectingClient):
    """Events client for ``/ws``.

    ``url``: the server (``http://host:8000``, ``ws://host:8000`` or ``ws://host:8000/ws``), a list of
    them to rotate through, or a callable returning one. ``token``: a JWT, or a callable (sync or
    async) returning a fresh one for every (re)connect and before the current one expires.
    ``last_seq``: resume after this seq (None: live from the first connection on). ``resume``:
    ``"auth"`` asks for the missed events in the handshake (``?since=N`` with the bearer header, or
    ``"since"`` in the auth message), so they come before any live event; ``"command"`` sends
    ``{"type":"resume"}`` after ``connection`` (for servers without the former; live events that
    overtake the replay are held back and put in order).

    Callbacks get the event as received (``{"type","channel","data","seq"?}``); personal events
    (those with ``seq``) reach them exactly once, in seq order, across reconnects.
    """

    path = "/ws"
    heartbeat_text = '{"type":"ping"}'

    def __init__(
        self,
        url: str | Sequence[str] | Callable[[], Any],
        token: Source,
        *,
        subscriptions: Sequence[str] = (),
        auth: str = "header",
        resume: str = "auth",
        heartbeat_interval: float | None = 10.0,
        **kwargs: Any,
    ) -> None:
        # The server never speaks first on /ws, so we ping often enough that its pongs keep the
        # seed's 30 s read timeout from firing on a quiet but healthy connection.
        super().__init__(url, heartbeat_interval=heartbeat_interval, **kwargs)
        if auth not in ("header", "message"):
            raise ValueError("auth is 'header' (Authorization: Bearer) or 'message' (first message)")
        if resume not in ("auth", "command"):
            raise ValueError("resume is 'auth' (since in the handshake) or 'command' (a resume message)")
        self.auth = auth
        self.resume = resume
        self._since_sent: int | None = None  # the since of this socket's handshake
        self._token_source = token
        self._token: str | None = None
        self._rooms: list[str] = []  # rooms to (re)join, in the order asked
        self._muted: set[str] = set()  # categories unsubscribed
        for channel in subscriptions:
            self._want(channel, True)
        self._pending: dict[tuple[str, str], list[asyncio.Future]] = {}
        self._authenticated = False
        self._resuming = False
        self._buffer: dict[int, dict] = {}
        self._baseline: int | None = None
        self.user_id: str | None = None
        self.session_id: str | None = None
        self.token_expires_at: str | None = None

    # ---- callbacks --------------------------------------------------------------------------

    def on_event(self, event_type: str, callback: Callable[[dict], Any]) -> Callable:
        """``callback(event)`` for events of one ``type`` (``"in_app_notification"``...), or ``"*"``
        for every event."""
        return self._add("type", event_type, callback)

    def on_channel(self, channel: str, callback: Callable[[dict], Any]) -> Callable:
        """``callback(event)`` for events of one ``channel`` (``"notifications"``, ``"market_data"``...)."""
        return self._add("channel", channel, callback)

    def on_order_update(self, order_id: str, callback: Callable[[dict], Any]) -> Callable:
        """``callback(event)`` for the ``order_update`` events of one order (``"*"``: every order)."""
        return self._add("order", str(order_id), callback)

    def on_all_orders(self, callback: Callable[[dict], Any]) -> Callable:
        return self.on_order_update("*", callback)

    # ---- rooms ------------------------------------------------------------------------------

    @property
    def subscriptions(self) -> list[str]:
        """Rooms joined on every (re)connect, then the categories still on."""
        return [*self._rooms, *(c for c in CATEGORIES if c not in self._muted)]

    def _want(self, channel: str, on: bool) -> None:
        if channel in CATEGORIES:
            (self._muted.discard if on else self._muted.add)(channel)
        elif on and channel not in self._rooms:
            self._rooms.append(channel)
        elif not on and channel in self._rooms:
            self._rooms.remove(channel)

    async def subscribe(self, channel: str, *, timeout: float = 10.0) -> dict | None:
        """Join a room (``market:BTC_USD``) or turn a category back on, now and after every reconnect.
        Connected: returns the server's ``room_subscription`` answer (raises AxisorError on
        INVALID_ROOM / FORBIDDEN). Not connected: returns None; it is sent on connect."""
        self._want(channel, True)
        return await self._room_request("subscribe", channel, timeout)

    async def unsubscribe(self, channel: str, *, timeout: float = 10.0) -> dict | None:
        """Leave a room or turn a category (``notifications``...) off, now and after every reconnect."""
        self._want(channel, False)
        return await self._room_request("unsubscribe", channel, timeout)

    async def _room_request(self, command: str, channel: str, timeout: float) -> dict | None:
        if not self._authenticated:
            return None
        future = self._expect("room", channel)
        await self.send_json({"type": command, "channel": channel})
        return await asyncio.wait_for(future, timeout)

    async def list_rooms(self, *, timeout: float = 10.0) -> list[str]:
        """The server's view: ``subscribedRooms`` of a ``room_list`` answer."""
        future = self._expect("room_list", "")
        await self.send_json({"type": "list_rooms"})
        return (await asyncio.wait_for(future, timeout))["subscribedRooms"]

    async def ping(self, *, timeout: float = 10.0) -> dict:
        future = self._expect("pong", "")
        await self.send_json({"type": "ping"})
        return await asyncio.wait_for(future, timeout)

    def _expect(self, kind: str, key: str) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self._pending.setdefault((kind, key), []).append(future)
        return future

    def _settle(self, kind: str, key: str, result: Any = None, error: BaseException | None = None) -> None:
        for future in self._pending.pop((kind, key), []):
            if not future.done():
                (future.set_exception(error) if error is not None else future.set_result(result))

    # ---- connection -------------------------------------------------------------------------

    def _credentials_source(self) -> Source:
        return self._token_source

    async def _prepare(self, url: str) -> tuple[str, dict | None]:
        self._token = await resolve(self._token_source)
        if not isinstance(self._token, str) or not self._token:
            raise RuntimeError("the token provider returned no token")
        self._since_sent = self.last_seq if self.resume == "auth" else None
        if self.auth == "message":
            return url, None
        return with_query(url, {"since": self._since_sent}), {"Authorization": f"Bearer {self._token}"}

    async def _on_open(self, ws: ClientConnection) -> None:
        self._authenticated = self._resuming = False
        self._buffer.clear()
        if self.auth == "message":
            auth: dict[str, Any] = {"type": "auth", "token": self._token}
            if self._since_sent is not None:
                auth["since"] = self._since_sent
            await self.send_json(auth)

    async def _on_close(self) -> None:
        self._authenticated = False
        pending, self._pending = self._pending, {}
        for futures in pending.values():
            for future in futures:
                if not future.done():
                    future.set_exception(ConnectionError("connection closed"))

    async def _handle(self, message: dict) -> None:
        kind = message.get("type")
        if kind == "connection":
            await self._on_connection(message)
        elif kind == "auth_expiring":
            await self._reauthenticate()
        elif kind == "room_subscription":
            self._settle("room", str(message.get("channel")), message)
        elif kind == "room_list":
            self._settle("room_list", "", message)
        elif kind == "pong":
            self._settle("pong", "", message)
        elif kind == "resumed":
            await self._on_resumed(message)
        elif kind == "resume_failed":
            await self._on_resume_failed(message)
        elif kind == "error":
            await self._on_error(message)
        elif isinstance(message.get("seq"), int) and not isinstance(message["seq"], bool):
            await self._personal(message)
        else:
            await self._dispatch(message)

    async def _on_connection(self, message: dict) -> None:
        self.token_expires_at = message.get("tokenExpiresAt")
        if self._authenticated:
            return  # the answer to a fresh `auth` on this socket: same session, nothing to redo
        self._authenticated = True
        self.user_id, self.session_id = message.get("userId"), message.get("sessionId")
        baseline = message.get("lastSeq")
        self._baseline = baseline if isinstance(baseline, int) else None
        # Rooms and filters first: a resume command below is then filtered like the live stream. (A
        # replay asked for in the handshake is already under way; we drop its muted events ourselves.)
        for room in self._rooms:
            await self.send_json({"type": "subscribe", "channel": room})
        for category in sorted(self._muted):
            await self.send_json({"type": "unsubscribe", "channel": category})
        if self._since_sent is not None:
            # The server replays what we missed right after `connection`, then says `resumed`.
            self._resuming = True
        elif self.last_seq is None:
            # Live from now on; remember where "now" is, so that a reconnect resumes from it.
            await self._set_last_seq(self._baseline)
        elif self.last_seq != self._baseline:
            # Live events after the baseline are already on their way and the replay will send some
            # of them again; until `resumed`, deliver only the next seq and hold the rest.
            self._resuming = True
            await self.send_json({"type": "resume", "since": self.last_seq})
        await self._announce()

    async def _reauthenticate(self) -> None:
        if not callable(self._token_source):
            return  # a fixed token: the server will close with 4002 at expiry, and we give up then
        try:
            self._token = await resolve(self._token_source)
            await self.send_json({"type": "auth", "token": self._token})
        except Exception as exc:  # noqa: BLE001 - no fresh token now: the 4002 close will reconnect us
            logger.warning("axisor_client: refreshing the token failed: %r", exc)

    async def _on_error(self, message: dict) -> None:
        channel = message.get("channel")
        if isinstance(channel, str):
            if message.get("code") in ROOM_REFUSALS and channel in self._rooms:
                self._rooms.remove(channel)  # refused: asking again after a reconnect will not help
            error = AxisorError(str(message.get("code")), str(message.get("message")), message)
            self._settle("room", channel, error=error)
        await self._fire("error", "*", message)

    # ---- personal events: in order, once ----------------------------------------------------

    async def _personal(self, event: dict) -> None:
        seq = event["seq"]
        if self.last_seq is not None and seq <= self.last_seq:
            self.duplicates += 1
            return
        if self._resuming and self.last_seq is not None and seq != self.last_seq + 1:
            if seq in self._buffer:
                self.duplicates += 1
            else:
                self._buffer[seq] = event
            return
        await self._deliver(event)
        if self._resuming:
            await self._drain(everything=False)

    async def _deliver(self, event: dict) -> None:
        if event.get("channel") not in self._muted:  # one that crossed our unsubscribe in flight
            await self._dispatch(event)
        await self._set_last_seq(event["seq"])

    async def _drain(self, *, everything: bool) -> None:
        """Deliver held events: the contiguous ones, or (the replay is over) all of them in order."""
        while self._buffer:
            seq = min(self._buffer)
            if self.last_seq is not None and seq <= self.last_seq:
                del self._buffer[seq]
                self.duplicates += 1
                continue
            if not everything and self.last_seq is not None and seq != self.last_seq + 1:
                return
            await self._deliver(self._buffer.pop(seq))

    async def _on_resumed(self, message: dict) -> None:
        self._resuming = False
        await self._drain(everything=True)
        last = message.get("lastSeq")
        if isinstance(last, int) and (self.last_seq is None or last > self.last_seq):
            # Everything up to lastSeq has been sent (what we did not get was filtered out).
            await self._set_last_seq(last)
        await self._fire("resumed", "*", message)

    async def _on_resume_failed(self, message: dict) -> None:
        self._resuming = False
        await self._fire("resume_failed", "*", message)
        # This socket carries every event after its baseline: continue from there.
        await self._set_last_seq(self._baseline)
        await self._drain(everything=True)

    async def _dispatch(self, event: dict) -> None:
        kind = event.get("type")
        await self._fire("type", str(kind), event)
        await self._fire("channel", str(event.get("channel")), event)
        data = event.get("data")
        if kind == "order_update" and isinstance(data, dict) and data.get("orderId") is not None:
            await self._fire("order", str(data["orderId"]), event)
            await self._fire("order", "*", event)
        await self._fire("type", "*", event)
