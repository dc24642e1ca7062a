"""The `/ws/orders` order-updates socket (seed 004): session+token in the query string, the seed's
flat order-update objects (plus ``version`` and ``seq``), ``PONG`` heartbeats, tier limits."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import TYPE_CHECKING, cast
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from redis.exceptions import RedisError

from broadcast import presence, rooms
from broadcast.history import ResumeRefused
from core.metrics import RESUMES, open_sockets
from gateway import limits
from gateway.hub import UNAVAILABLE, HubMember, LayerUnavailable, hub
from gateway.inbound_limits import InboundLimiter, over_size
from gateway.stream import PersonalStream
from orders.selectors import open_order_snapshots, order_session_alive
from orders.services import order_session_check
from wire import Close, Code, dumps, error, now_iso, whole_number

if TYPE_CHECKING:
    from accounts.models import User


@database_sync_to_async
def _session(session_id: str, token: str):
    found = order_session_check(session_id, token)
    return None if found is None else (found.pk, found.user)


@database_sync_to_async
def _session_still_valid(session_pk: int) -> bool:
    return order_session_alive(session_pk)


@database_sync_to_async
def _open_order_snapshots(user_id: int) -> list[dict]:
    return open_order_snapshots(user_id=user_id)


def _since(params: dict) -> int | None | str:
    raw = (params.get("since") or [None])[0]
    if raw is None:
        return None
    since = whole_number(raw)
    return "invalid" if since is None else since


class OrderUpdatesConsumer(HubMember, AsyncWebsocketConsumer):
    """The user's group comes through the process hub (see hub.HubMember), like on /ws."""

    # ---- connection lifecycle -------------------------------------------------------------

    async def connect(self) -> None:
        self.user: User | None = None
        self.member = uuid.uuid4().hex
        self.holding = False
        self.closing = False
        self.task: asyncio.Task | None = None
        params = parse_qs(self.scope.get("query_string", b"").decode("latin1"))
        self.stream = None
        session_id = (params.get("session") or [""])[0]
        token = (params.get("token") or [""])[0]
        found = await _session(session_id, token) if session_id and token else None
        if found is None:
            await self.close()  # before accept: the handshake is refused (HTTP 403)
            return
        self.session_pk, self.user = found
        try:
            refusal = await limits.acquire(limits.ORDERS, self.user.pk, self.user.tier, self.member)
        except (OSError, RedisError):  # the tier limits live in Redis: cannot admit anyone now
            await self._unavailable()
            return
        if refusal is not None:
            self.closing = True
            await self.accept()  # to say why: a refused handshake carries no close code
            await self.send(
                text_data=dumps(error(Code.RATE_LIMIT_EXCEEDED, refusal.reason, closeCode=int(refusal.code)))
            )
            await self.close(code=refusal.code, reason=refusal.reason)
            return
        self.holding = True
        # Join and take the baseline before accepting: once the client sees the socket open,
        # every later update of its orders reaches it (live ones wait in the inbox until then).
        self.hub_open()
        try:
            await self.hub_join(rooms.user_room(self.user.pk).layer_group)
        except LayerUnavailable:
            await self._unavailable()
            return
        self.stream = PersonalStream(self.user.pk, self._emit, self.user.tier)
        await self.stream.baseline()
        if hub().stopping:  # told to stop while it joined: told to go elsewhere, not served then cut
            await self._unavailable()
            return
        self.presence: str | None = await presence.join(self.user.pk, "/ws/orders", self.member)
        await self.accept()
        open_sockets("/ws/orders").inc()
        self.counted = True
        self.last_heard = time.monotonic()
        self.limiter = InboundLimiter.from_settings()
        self.limiter.bind(self.user.pk, self.user.tier)
        self.task = asyncio.ensure_future(self._keepalive())
        async with self.stream_lock:
            await self._catch_up(params)
        self.inbox.start()

    async def _unavailable(self) -> None:
        await self.accept()  # to say why: a refused handshake carries no close code
        await self.fail(Code.SERVICE_UNAVAILABLE, UNAVAILABLE, Close.TRY_AGAIN_LATER)

    async def _catch_up(self, params: dict) -> None:
        """``?snapshot=1``: the open orders as they stand; ``?since=N``: every update after N."""
        assert self.stream is not None and self.user is not None  # connect sets both first
        since = _since(params)
        if isinstance(since, str):  # "invalid"
            self.write(dumps(error(Code.INVALID_MESSAGE, "since must be a whole number of at most 18 digits")))
            since = None
        refused = None
        if since is not None:
            try:
                await self.stream.resume(since)
                RESUMES.labels("/ws/orders", "ok").inc()
            except ResumeRefused as exc:
                refused = exc
                RESUMES.labels("/ws/orders", exc.reason).inc()
                self.write(dumps(exc.as_message()))
        if (params.get("snapshot") or ["0"])[0] in ("1", "true"):
            for snapshot in await _open_order_snapshots(self.user.pk):
                self.write(dumps({**snapshot, "snapshot": True, "seq": self.stream.last_seq}))
        if since is not None and refused is None:
            self.write(dumps({"type": "resumed", "since": since, "lastSeq": self.stream.last_seq}))

    async def disconnect(self, code: int) -> None:
        if getattr(self, "counted", False):
            open_sockets("/ws/orders").dec()
        if getattr(self, "presence", None):
            assert self.user is not None and self.presence is not None  # joined once the session checked out
            await presence.leave(self.user.pk, self.presence)
            self.presence = None
        self.closing = True
        if self.task is not None:
            self.task.cancel()
        self.hub_close()
        await self.hub_leave_all()
        if self.holding:
            self.holding = False
            assert self.user is not None  # it holds a slot only once the session checked out
            await limits.release(limits.ORDERS, self.user.pk, self.member)

    async def dispatch(self, message: dict) -> None:
        # No per-message aclose_old_connections(): ORM access here goes through
        # database_sync_to_async, which does its own connection cleanup.
        handler = getattr(self, message["type"].replace(".", "_"), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def _keepalive(self) -> None:
        """Heartbeat inside the seed's 30 s read timeout, idle close. (The connection's lease is
        renewed with every other lease of the process: gateway/limits.py.)"""
        assert self.user is not None  # started once the session checked out
        conf = settings.AXISOR_ORDERS  # its values mix types: mypy reads them as object
        interval = min(cast(float, conf["HEARTBEAT_SECONDS"]), cast(float, conf["LEASE_SECONDS"]) / 3)
        while not self.closing:
            await asyncio.sleep(interval)
            if time.monotonic() - self.last_heard > cast(float, conf["IDLE_TIMEOUT_SECONDS"]):
                self.closing = True
                await self.close(code=Close.IDLE_TIMEOUT, reason="nothing heard from the client")
                return
            self._heartbeat()

    # ---- client messages ------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.closing:
            return
        self.last_heard = time.monotonic()
        verdict = self.limiter.check()
        if verdict == "close":  # same inbound limits as /ws: a flood is refused, then closed (4008)
            await self.fail(Code.RATE_LIMIT_EXCEEDED, "too many messages; closing", Close.RATE_LIMITED)
            return
        if verdict != "ok":
            self.write(dumps(error(Code.RATE_LIMIT_EXCEEDED, self.limiter.refusal(verdict))))
            return
        most = over_size(text_data, bytes_data)  # as on /ws: never parsed, the socket stays open
        if most is not None:
            self.write(dumps(error(Code.MESSAGE_TOO_LARGE, f"messages are limited to {most} bytes")))
            return
        if text_data is not None and text_data.strip() == "PONG":
            return
        if text_data is not None and text_data.strip().startswith("{"):
            try:
                if json.loads(text_data).get("type") == "ping":
                    self._heartbeat()
                    return
            except (ValueError, AttributeError, RecursionError):
                pass
        self.write(dumps(error(Code.INVALID_MESSAGE, "this socket only accepts the text PONG")))

    def _heartbeat(self) -> None:
        assert self.stream is not None  # the socket is accepted once its stream exists
        self.write(dumps({"type": "heartbeat", "serverTime": now_iso(), "lastSeq": self.stream.last_seq}))

    # ---- personal events ------------------------------------------------------------------

    def wants(self, channel: str) -> bool:
        return False  # the user's room also carries values for /ws (positions); only orders here

    async def _emit(self, seq: int, channel: str, text: str, frame: str | None) -> None:
        # The frame was built once per event by the orders app (orders.events.order_socket_frame).
        if channel == "orders" and frame is not None:
            self.write(frame, channel)

    async def access_changed(self, message: dict) -> None:
        if self.closing or self.user is None:
            return
        if "/ws/orders" in message.get("disconnect", ()):
            await self.fail(Code.DISCONNECTED, "disconnected by staff", Close.DISCONNECTED)
            return
        if not await _session_still_valid(self.session_pk):
            await self.fail(Code.ACCESS_REVOKED, "session revoked or account changed", Close.ACCESS_REVOKED)
