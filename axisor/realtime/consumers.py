"""The `/ws` events gateway (seed 000): authenticate, manage rooms, forward events.

Thin by design: no business logic, no ORM writes. Events arrive pre-serialised from the outbox
(axisor.realtime.publish) and are forwarded as text.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from datetime import UTC, datetime
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from axisor.metrics import CONNECTIONS, DELIVERED, RESUMES, SLOW_CLOSES
from market.selectors import instrument_symbols_async, snapshot_text_async
from system.selectors import connection_start

from . import presence, rooms
from .auth import AuthError, bearer_token, check_jwt, user_still_allowed
from .eventlog import ResumeRefused
from .hub import Outbox, hub
from .protocol import Close, Code, connection, error
from .publish import iso, now_iso
from .ratelimit import TokenBucket
from .stream import PersonalStream

logger = logging.getLogger(__name__)


class EventsConsumer(AsyncJsonWebsocketConsumer):
    # ---- connection lifecycle -------------------------------------------------------------

    async def connect(self) -> None:
        conf = settings.AXISOR_WS
        self.user = None
        self.session_id = f"session_{uuid.uuid4().hex[:16]}"
        self.joined: dict[str, rooms.Room] = {}
        self.filters: set[str] = set(rooms.CATEGORIES)
        self.bucket = TokenBucket(conf["RATE_PER_SECOND"], conf["RATE_BURST"])
        self.refused_in_row = 0
        self.closing = False
        self.expires_at: datetime | None = None
        self.timer: asyncio.Task | None = None
        self.presence_task: asyncio.Task | None = None
        self.outbox: Outbox | None = None
        await self.accept()
        CONNECTIONS.labels("/ws").inc()
        token = bearer_token(self.scope)
        if token is not None:
            since = parse_qs(self.scope.get("query_string", b"").decode("latin1")).get("since", [None])[0]
            await self.authenticate(token, since=int(since) if since and since.isdigit() and len(since) < 19 else since)
        else:
            self.timer = asyncio.ensure_future(self._auth_deadline(conf["AUTH_TIMEOUT_SECONDS"]))

    async def disconnect(self, code: int) -> None:
        CONNECTIONS.labels("/ws").dec()
        self.closing = True
        for task in (self.timer, self.presence_task):
            if task is not None:
                task.cancel()
        if self.outbox is not None:
            self.outbox.close()
        if self.user is not None:
            await presence.leave(self.user.pk, self.channel_name)
        for room in list(self.joined.values()):
            await self._leave(room)
        self.joined.clear()

    async def dispatch(self, message: dict) -> None:
        # Channels awaits aclose_old_connections() (a thread hop) before every handler. Nothing
        # here touches the ORM outside database_sync_to_async, which cleans up by itself.
        handler = getattr(self, message["type"].replace(".", "_"), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def fail(self, code: str, message: str, close: int) -> None:
        if self.closing:
            return
        self.closing = True
        await self.send_json(error(code, message))
        await self.close(close)

    async def _auth_deadline(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if self.user is None:
            await self.fail(
                Code.AUTHENTICATION_FAILED, "no authentication within the time limit", Close.AUTHENTICATION_FAILED
            )

    async def _expiry_watch(self) -> None:
        """Warn before the token expires; close if no fresh `auth` arrived by then."""
        while not self.closing and self.expires_at is not None:
            left = (self.expires_at - datetime.now(UTC)).total_seconds()
            if left <= 0:
                await self.fail(
                    Code.TOKEN_EXPIRED,
                    "token expired; send a fresh auth message to stay connected",
                    Close.TOKEN_EXPIRED,
                )
                return
            warn_at = min(60.0, left / 4)
            if left > warn_at + 0.5:
                await asyncio.sleep(left - warn_at)
                await self.send_json({"type": "auth_expiring", "expiresAt": iso(self.expires_at)})
            else:
                await asyncio.sleep(left)

    async def _presence(self) -> None:
        """Hold this connection's presence lease while it is open."""
        while not self.closing:
            await asyncio.sleep(presence.LEASE_SECONDS / 3)
            await presence.join(self.user.pk, self.channel_name)

    async def authenticate(self, token: object, since: object = None) -> None:
        """Check the token; on the first success join the auto rooms and answer ``connection``.
        With ``since`` (first auth only) the missed events follow at once, before any live one."""
        try:
            identity = await check_jwt(token)
        except AuthError as exc:
            await self.fail(Code.AUTHENTICATION_FAILED, str(exc), Close.AUTHENTICATION_FAILED)
            return
        first = self.user is None
        if not first and identity.user.pk != self.user.pk:
            await self.fail(Code.AUTHENTICATION_FAILED, "token belongs to another user", Close.AUTHENTICATION_FAILED)
            return
        self.user = identity.user
        self.expires_at = identity.expires_at
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.ensure_future(self._expiry_watch())
        if first:
            self.outbox = Outbox(self._send_text, self.base_send, self._too_slow)
            for room in rooms.auto_rooms(self.user):
                await self._join(room)
            await presence.join(self.user.pk, self.channel_name)
            self.presence_task = asyncio.ensure_future(self._presence())
            self.stream = PersonalStream(self.user.pk, self._emit_personal)
            last_seq, notices = await connection_start(self.user.pk)
            self.stream.start_at(last_seq)
        reply = connection(user_id=self.user.pk, session_id=self.session_id)
        reply["tokenExpiresAt"] = iso(self.expires_at)
        reply["lastSeq"] = self.stream.last_seq
        await self.send_json(reply)
        if first:
            for notice in notices:
                await self.send(text_data=notice)
            if since is not None:
                await self._resume(since)

    # ---- client commands ------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.closing:
            return
        conf = settings.AXISOR_WS
        if not self.bucket.take():
            self.refused_in_row += 1
            if self.refused_in_row >= conf["RATE_ABUSE_CLOSE_AFTER"]:
                await self.fail(Code.RATE_LIMIT_EXCEEDED, "too many messages; closing", Close.RATE_LIMITED)
            else:
                await self.send_json(
                    error(Code.RATE_LIMIT_EXCEEDED, f"at most {conf['RATE_PER_SECOND']:g} messages per second")
                )
            return
        self.refused_in_row = 0
        size = len(text_data.encode()) if text_data is not None else len(bytes_data or b"")
        if size > conf["MAX_MESSAGE_BYTES"]:
            if self.user is None:
                await self.fail(Code.AUTHENTICATION_FAILED, "authenticate first", Close.AUTHENTICATION_FAILED)
            else:
                await self.send_json(
                    error(Code.MESSAGE_TOO_LARGE, f"messages are limited to {conf['MAX_MESSAGE_BYTES']} bytes")
                )
            return
        content = self._decode(text_data)
        if self.user is None:
            if isinstance(content, dict) and content.get("type") == "auth":
                await self.authenticate(content.get("token"), since=content.get("since"))
            else:
                await self.fail(
                    Code.AUTHENTICATION_FAILED,
                    'the first message must be {"type":"auth","token":...}',
                    Close.AUTHENTICATION_FAILED,
                )
            return
        if content is None:
            await self.send_json(error(Code.INVALID_MESSAGE, "messages are JSON text objects with a string 'type'"))
            return
        command = content["type"]
        handler = self.COMMANDS.get(command)
        if handler is None:
            await self.send_json(error(Code.INVALID_MESSAGE, f"unknown message type {command[:64]!r}"))
            return
        await handler(self, content)

    @staticmethod
    def _decode(text_data: str | None) -> dict | None:
        if text_data is None:
            return None
        try:
            content = json.loads(text_data)
        except (ValueError, RecursionError):
            return None
        if not isinstance(content, dict) or not isinstance(content.get("type"), str):
            return None
        return content

    async def cmd_auth(self, content: dict) -> None:
        await self.authenticate(content.get("token"))

    async def cmd_subscribe(self, content: dict) -> None:
        name = content.get("channel")
        try:
            room = rooms.parse(name)
            rooms.check_join(self.user, room, known_symbols=await instrument_symbols_async())
        except rooms.InvalidRoom as exc:
            await self.send_json(error(Code.INVALID_ROOM, str(exc), channel=name if isinstance(name, str) else None))
            return
        except rooms.Forbidden as exc:
            await self.send_json(error(Code.FORBIDDEN, str(exc), channel=name))
            return
        if room.is_personal_filter:
            self.filters.add(room.key)
        else:
            await self._join(room)
        await self.send_json(self._room_reply(room, "subscribed"))
        if room.kind is rooms.RoomKind.MARKET:
            snapshot = await snapshot_text_async(room.key)
            if snapshot is not None:
                await self.send(text_data=snapshot)

    async def cmd_unsubscribe(self, content: dict) -> None:
        name = content.get("channel")
        try:
            room = rooms.parse(name)
        except rooms.InvalidRoom as exc:
            await self.send_json(error(Code.INVALID_ROOM, str(exc), channel=name if isinstance(name, str) else None))
            return
        if room.is_personal_filter:
            self.filters.discard(room.key)
        elif room.name in self.joined:
            del self.joined[room.name]
            await self._leave(room)
        await self.send_json(self._room_reply(room, "unsubscribed"))

    async def cmd_list_rooms(self, content: dict) -> None:
        await self.send_json({"type": "room_list", "subscribedRooms": self._subscribed()})

    async def cmd_resume(self, content: dict) -> None:
        await self._resume(content.get("since"))

    async def _resume(self, since: object) -> None:
        if not isinstance(since, int) or isinstance(since, bool) or since < 0:
            await self.send_json(error(Code.INVALID_MESSAGE, "resume needs 'since': the last seq you have (0 for all)"))
            return
        try:
            replayed = await self.stream.resume(since)
        except ResumeRefused as refused:
            RESUMES.labels("/ws", refused.reason).inc()
            await self.send_json(refused.as_message())
            return
        RESUMES.labels("/ws", "ok").inc()
        await self.send_json({"type": "resumed", "since": since, "lastSeq": self.stream.last_seq, "replayed": replayed})

    async def cmd_ping(self, content: dict) -> None:
        await self.send_json({"type": "pong", "serverTime": now_iso()})

    COMMANDS = {
        "auth": cmd_auth,
        "subscribe": cmd_subscribe,
        "unsubscribe": cmd_unsubscribe,
        "list_rooms": cmd_list_rooms,
        "resume": cmd_resume,
        "ping": cmd_ping,
    }

    async def _join(self, room: rooms.Room) -> None:
        """Personal events come on this socket's own channel (they need seq order and gap
        filling); every other room through the process's hub."""
        if room.name not in self.joined:
            self.joined[room.name] = room
            if room.kind is rooms.RoomKind.USER:
                await self.channel_layer.group_add(room.group, self.channel_name)
            else:
                await hub().join(room.group, self)

    async def _leave(self, room: rooms.Room) -> None:
        if room.kind is rooms.RoomKind.USER:
            await self.channel_layer.group_discard(room.group, self.channel_name)
        else:
            await hub().leave(room.group, self)

    def _subscribed(self) -> list[str]:
        return [*self.joined, *(c for c in rooms.CATEGORIES if c in self.filters)]

    def _room_reply(self, room: rooms.Room, status: str) -> dict:
        return {
            "type": "room_subscription",
            "channel": room.name,
            "status": status,
            "subscribedRooms": self._subscribed(),
        }

    # ---- channel-layer handlers -----------------------------------------------------------

    async def event_message(self, message: dict) -> None:
        if self.closing:
            return
        if message["personal"]:
            await self.stream.live(message["seq"], message["channel"], message["text"])
        elif message["channel"] in self.filters or message["channel"] not in rooms.CATEGORIES:
            # unlogged values on the user's room (position_status_update) obey the category filters too
            await self.send(text_data=message["text"])
            DELIVERED.labels(message["channel"]).inc()

    def deliver(self, message: dict) -> None:
        """From the hub: a room event for this connection's outbox."""
        if not self.closing and self.outbox is not None:
            self.outbox.put(message["text"], message.get("key"), message["channel"])

    async def _send_text(self, text: str) -> None:
        if not self.closing:
            await self.send(text_data=text)

    def _too_slow(self) -> None:
        if not self.closing:
            SLOW_CLOSES.inc()
            self.slow_close = asyncio.ensure_future(
                self.fail(Code.SLOW_CONSUMER, "reading too slowly; reconnect and resume", Close.SLOW_CONSUMER)
            )

    async def _emit_personal(self, seq: int, channel: str, text: str) -> None:
        if channel in self.filters:
            await self.send(text_data=text)
            DELIVERED.labels(channel).inc()

    async def access_changed(self, message: dict) -> None:
        if self.user is None or self.closing:
            return
        user = self.user
        reason = await user_still_allowed(user.pk, user.password, user.is_staff, user.is_superuser)
        if reason:
            await self.fail(Code.ACCESS_REVOKED, reason, Close.ACCESS_REVOKED)
