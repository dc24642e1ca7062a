"""The `/ws` events gateway (seed 000): authenticate, manage rooms, forward events.

Thin by design: no business logic, no ORM writes. Events arrive pre-serialised from the outbox
(broadcast.outbox) and are forwarded as text.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.db import connection as db_connection
from redis.exceptions import RedisError

from broadcast import presence, rooms
from broadcast.history import ResumeRefused
from core.metrics import RESUMES, open_sockets
from gateway import connect_read, limits
from gateway.auth import (
    AuthError,
    Identity,
    bearer_token,
    identity_check,
    jwt_authenticate,
    jwt_decode,
    jwt_user_id,
    user_still_allowed,
)
from gateway.connect_read import DB_UNAVAILABLE, DatabaseUnavailable
from gateway.hub import UNAVAILABLE, HubMember, LayerUnavailable, hub
from gateway.inbound_limits import InboundLimiter, over_size
from gateway.stream import PersonalStream
from market.events import market_data_key
from market.selectors import instrument_symbols_async, snapshot_text_async
from system.selectors import notices_in_force_texts
from wire import Close, Code, connection, dumps, error, iso, now_iso, whole_number

if TYPE_CHECKING:
    from accounts.models import User

logger = logging.getLogger(__name__)


ALL_CATEGORIES = frozenset(rooms.CATEGORIES)  # the personal categories a socket gets until it unsubscribes one
NOTICES_MAX_AGE = 10.0  # seconds; also bounds how long a maintenance window that ended by time lingers


class NoticesCache:
    """The system notices in force, read once per process and reused while the process's hub has
    held the ``system`` group without a break and heard nothing in it since the read (every notice
    change is announced there), for at most NOTICES_MAX_AGE. A socket joins ``system`` before it
    asks, so a notice changed after the read reaches it live. Sockets that ask while a read is
    under way (a connect storm on a cold process) wait for that read instead of each making one."""

    def __init__(self) -> None:
        self.stamp: int | None = None
        self.read_at = 0.0
        self.texts: list[str] = []
        self.pending: tuple[int | None, asyncio.Future] | None = None

    def get(self) -> list[str] | None:
        fresh = time.monotonic() - self.read_at < NOTICES_MAX_AGE
        if fresh and self.stamp is not None and hub().stamps.get(SYSTEM_GROUP) == self.stamp:
            return self.texts
        return None

    async def current(self) -> list[str]:
        cached = self.get()
        if cached is not None:
            return cached
        stamp = hub().stamps.get(SYSTEM_GROUP)
        pending = self.pending
        if (
            pending is None
            or pending[0] != stamp  # a notice changed since that read began: it may miss it
            or pending[1].done()
            or pending[1].get_loop() is not asyncio.get_running_loop()
        ):
            pending = self.pending = (stamp, asyncio.ensure_future(self._read(stamp)))
        return await asyncio.shield(pending[1])

    async def _read(self, stamp: int | None) -> list[str]:
        read_at = time.monotonic()
        texts = await _notices_read()
        self.stamp, self.texts, self.read_at = stamp, texts, read_at
        return texts


_notices = NoticesCache()


def _notices_in_force_texts() -> list[str]:
    try:
        return notices_in_force_texts()
    finally:
        db_connection.close()  # a pool thread: leave no connection behind it


# On a pool thread, not the one ORM thread the background loops share: after a database restart a
# venue or relay step there can wait out DB_POOL_TIMEOUT, and a socket's hello with it.
_notices_read = database_sync_to_async(_notices_in_force_texts, thread_sensitive=False)
SYSTEM_GROUP = rooms.system_room().layer_group


def _permissions_read_sync(user: User) -> None:
    try:
        user.get_all_permissions()  # fills the user's permission cache (ModelBackend)
    finally:
        db_connection.close()  # a pool thread: leave no connection behind it


_permissions_read = database_sync_to_async(_permissions_read_sync, thread_sensitive=False)


# What ModelBackend caches on a user it was asked about (get_all_permissions fills all three).
PERMISSION_CACHES = ("_perm_cache", "_user_perm_cache", "_group_perm_cache")


async def staff_permissions(user: User) -> None:
    """Read a staff member's permissions (not a superuser's: they have all), so that the room
    checks (rooms.admin_rooms_for: admin:staff needs realtime.view_eventlog) answer on the loop.
    Raises DatabaseUnavailable when the database cannot answer."""
    if not user.is_staff or user.is_superuser:
        return
    try:
        await _permissions_read(user)
    except connect_read.DATABASE_ERRORS as exc:
        raise DatabaseUnavailable(str(exc)) from exc


async def connection_start(token, user_id: int) -> tuple[Identity, int, list[str]]:
    """What a new /ws connection needs: who the token's user is (AuthError if no longer allowed),
    the latest seq of its stream (one statement, connect_read), and the notices in force (cached
    per process). Raises DatabaseUnavailable when the database cannot answer."""
    try:
        notices = _notices.get()
        if notices is None:
            (user, baseline), fresh = await asyncio.gather(connect_read.user_row(user_id), _notices.current())
            notices = fresh
        else:
            user, baseline = await connect_read.user_row(user_id)
    except connect_read.DATABASE_ERRORS as exc:
        raise DatabaseUnavailable(str(exc)) from exc
    return identity_check(token, user), baseline, notices


def _echo(name: object) -> str | None:
    """A client's room name as an error repeats it: no room name is longer than 100 characters,
    and a 64 KiB one came back whole."""
    return name[:100] if isinstance(name, str) else None


class EventsConsumer(HubMember, AsyncJsonWebsocketConsumer):
    """Every room, the user's own included, comes through the process hub (see hub.HubMember):
    a socket costs no channel-layer subscription of its own."""

    # ---- connection lifecycle -------------------------------------------------------------

    async def connect(self) -> None:
        conf = settings.AXISOR_WS
        self.user: User | None = None
        self.session_id = f"session_{uuid.uuid4().hex[:16]}"
        self.joined: dict[str, rooms.Room] = {}
        # The user's own room is subscribed. Unsubscribed, the socket stays in the room's group all
        # the same (access control comes there: a staff disconnect, a deactivation, a changed
        # password, and a client must not be able to leave it); its events are left out
        # (HubMember.deliver), and subscribed again the stream fills what it missed from the log.
        self.personal_open = False
        self.filters: frozenset[str] = ALL_CATEGORIES  # shared until the client changes its own
        self.limiter = InboundLimiter.from_settings()
        self.closing = False
        self.expires_at: datetime | None = None
        # the auth deadline, then the token-expiry watch: a timer of the loop, not a task per socket
        self.timer: asyncio.TimerHandle | None = None
        self.closer: asyncio.Task | None = None
        self.presence: str | None = None
        self.stream: PersonalStream | None = None
        self.slot: int | None = None  # the user whose /ws socket lease this socket holds (renewed per process)
        await self.accept()
        self.hub_open(hold=True)
        open_sockets("/ws").inc()
        self.counted = True
        token = bearer_token(self.scope)
        if token is not None:
            since = parse_qs(self.scope.get("query_string", b"").decode("latin1")).get("since", [None])[0]
            number = whole_number(since)
            await self.authenticate(token, since=since if number is None else number)
        else:
            self.timer = asyncio.get_running_loop().call_later(conf["AUTH_TIMEOUT_SECONDS"], self._auth_deadline)

    async def disconnect(self, code: int) -> None:
        if getattr(self, "counted", False):  # not when connect() failed before counting it
            self.counted = False
            open_sockets("/ws").dec()
        self.closing = True
        if self.timer is not None:
            self.timer.cancel()
        if self.slot is not None:
            try:
                await limits.release(limits.WS, self.slot, self.session_id)
            except (OSError, RedisError):  # Redis away: the lease lapses by itself
                pass
            self.slot = None
        self.hub_close()
        if self.presence is not None:
            assert self.user is not None  # presence is joined after authentication
            await presence.leave(self.user.pk, self.presence)
        await self.hub_leave_all()
        self.joined.clear()

    async def dispatch(self, message: dict) -> None:
        # Channels awaits aclose_old_connections() (a thread hop) before every handler. Nothing
        # here touches the ORM outside database_sync_to_async, which cleans up by itself.
        handler = getattr(self, message["type"].replace(".", "_"), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    def _auth_deadline(self) -> None:
        self.timer = None
        if self.user is None:
            self._close_soon(
                Code.AUTHENTICATION_FAILED, "no authentication within the time limit", Close.AUTHENTICATION_FAILED
            )

    def _close_soon(self, code: str, message: str, close: int) -> None:
        if not self.closing and self.closer is None:
            self.closer = asyncio.ensure_future(self.fail(code, message, close))

    async def _first_auth(self, raw: object) -> tuple[Identity, list[str]]:
        """The signature is checked here; the user, its stream's baseline and the notices in force
        come in one database trip. The socket is in its user's group before the baseline is read:
        an event committed in between is in the baseline or arrives live (and waits in the inbox
        until the stream starts)."""
        token = jwt_decode(raw)
        try:
            user_id = int(jwt_user_id(token))
            claimed = [rooms.user_room(user_id), rooms.system_room()]
        except (KeyError, ValueError):
            raise AuthError("token has no valid user id") from None
        for room in claimed:
            await self._join(room)
        try:
            identity, baseline, notices = await connection_start(token, user_id)
        except (AuthError, DatabaseUnavailable):
            for room in claimed:
                del self.joined[room.name]
                await self.hub_leave(room.layer_group)
            self.personal_open = False
            raise
        self.stream = PersonalStream(identity.user.pk, self._emit_personal, identity.user.tier)
        self.stream.start_at(baseline)
        return identity, notices

    def _expiry_watch(self) -> None:
        """Warn before the token expires (at a quarter of what is left, at most a minute before,
        and again as it nears); close if no fresh `auth` arrived by then."""
        self.timer = None
        if self.closing or self.expires_at is None:
            return
        left = (self.expires_at - datetime.now(UTC)).total_seconds()
        if left <= 0:
            self._close_soon(
                Code.TOKEN_EXPIRED, "token expired; send a fresh auth message to stay connected", Close.TOKEN_EXPIRED
            )
            return
        warn_at = min(60.0, left / 4)
        loop = asyncio.get_running_loop()
        if left > warn_at + 0.5:
            self.timer = loop.call_later(left - warn_at, self._expiry_warning)
        else:
            self.timer = loop.call_later(left, self._expiry_watch)

    def _expiry_warning(self) -> None:
        self.timer = None
        if not self.closing and self.expires_at is not None:
            self.reply({"type": "auth_expiring", "expiresAt": iso(self.expires_at)})
            self._expiry_watch()

    async def authenticate(self, token: object, since: object = None) -> None:
        """Check the token; on the first success join the auto rooms and answer ``connection``.
        With ``since`` (first auth only) the missed events follow at once, before any live one."""
        previous = self.user
        first = previous is None
        try:
            if first:
                identity, notices = await self._first_auth(token)
            else:
                identity = await jwt_authenticate(token)
            await staff_permissions(identity.user)
        except AuthError as exc:
            await self.fail(Code.AUTHENTICATION_FAILED, str(exc), Close.AUTHENTICATION_FAILED)
            return
        except LayerUnavailable:
            await self.fail(Code.SERVICE_UNAVAILABLE, UNAVAILABLE, Close.TRY_AGAIN_LATER)
            return
        except DatabaseUnavailable:
            await self.fail(Code.SERVICE_UNAVAILABLE, DB_UNAVAILABLE, Close.TRY_AGAIN_LATER)
            return
        if previous is not None and identity.user.pk != previous.pk:
            await self.fail(Code.AUTHENTICATION_FAILED, "token belongs to another user", Close.AUTHENTICATION_FAILED)
            return
        if first and not await self._take_slot(identity.user):
            return
        self.user = identity.user
        if first:
            self.limiter.bind(self.user.pk, self.user.tier)
        else:
            await self._leave_admin_rooms_no_longer_allowed()
        self.expires_at = identity.expires_at
        if self.timer is not None:
            self.timer.cancel()
        self._expiry_watch()
        if first:
            for room in rooms.admin_rooms_for(self.user):
                try:
                    await self._join(room)
                except LayerUnavailable:
                    await self.fail(Code.SERVICE_UNAVAILABLE, UNAVAILABLE, Close.TRY_AGAIN_LATER)
                    return
            self.presence = await presence.join(self.user.pk, "/ws", self.session_id)
        reply = connection(user_id=self.user.pk, session_id=self.session_id)
        reply["tokenExpiresAt"] = iso(self.expires_at)
        assert self.stream is not None  # set by the first authentication
        reply["lastSeq"] = self.stream.last_seq
        self.reply(reply)
        if first:
            for notice in notices:
                self.write(notice, "system")
            self.release()  # what the user's and system rooms carried since joining: after the notices read
            if since is not None:
                await self._resume(since)
            self.inbox.start()

    async def _take_slot(self, user: User) -> bool:
        """Hold one of the user's CAP_WS_SOCKETS_<TIER> slots (a lease in Redis shared by every
        process, gateway/limits.py), or refuse this socket: error RATE_LIMIT_EXCEEDED with
        ``closeCode``, then close 4029. Sockets already open are never touched."""
        if not limits.capped(limits.WS, user.tier):
            return True
        try:
            refusal = await limits.acquire(limits.WS, user.pk, user.tier, self.session_id)
        except (OSError, RedisError):
            await self.fail(Code.SERVICE_UNAVAILABLE, UNAVAILABLE, Close.TRY_AGAIN_LATER)
            return False
        if refusal is not None:
            self.closing = True
            await self.send(
                text_data=dumps(error(Code.RATE_LIMIT_EXCEEDED, refusal.reason, closeCode=int(refusal.code)))
            )
            await self.close(code=refusal.code, reason=refusal.reason)
            return False
        self.slot = user.pk  # this process's lease registry renews it until released (gateway/limits.py)
        return True

    # ---- client commands ------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.closing:
            return
        verdict = self.limiter.check()
        if verdict == "close":
            await self.fail(Code.RATE_LIMIT_EXCEEDED, "too many messages; closing", Close.RATE_LIMITED)
            return
        if verdict != "ok":
            self.reply(error(Code.RATE_LIMIT_EXCEEDED, self.limiter.refusal(verdict)))
            return
        most = over_size(text_data, bytes_data)
        if most is not None:
            if self.user is None:
                await self.fail(Code.AUTHENTICATION_FAILED, "authenticate first", Close.AUTHENTICATION_FAILED)
            else:
                self.reply(error(Code.MESSAGE_TOO_LARGE, f"messages are limited to {most} bytes"))
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
            self.reply(error(Code.INVALID_MESSAGE, "messages are JSON text objects with a string 'type'"))
            return
        command = content["type"]
        handler = self.COMMANDS.get(command)
        if handler is None:
            self.reply(error(Code.INVALID_MESSAGE, f"unknown message type {command[:64]!r}"))
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
            self.reply(error(Code.INVALID_ROOM, str(exc), channel=_echo(name)))
            return
        except rooms.Forbidden as exc:
            self.reply(error(Code.FORBIDDEN, str(exc), channel=_echo(name)))
            return
        reopened = room.kind is rooms.RoomKind.USER and not self.personal_open
        if room.is_personal_filter:
            if room.key not in self.filters:  # the shared set stays shared when nothing changes
                self.filters = self.filters | {room.key}
        else:
            try:
                await self._join(room)
            except LayerUnavailable:
                self.reply(error(Code.SERVICE_UNAVAILABLE, UNAVAILABLE, channel=_echo(name)))
                return
        self.reply(self._room_reply(room, "subscribed"))
        if room.kind is rooms.RoomKind.MARKET:
            await self._market_snapshot(room.key)
        elif reopened and self.stream is not None:
            async with self.stream_lock:  # what the room carried while unsubscribed, from the log
                await self.stream.catch_up()

    async def _market_snapshot(self, symbol: str) -> None:
        """The symbol's state, unless a newer one reached this socket live first. It joined the
        room before the read: a value committed after the read began can be in its queue already,
        and the older snapshot would then take it back to a stale price until the next tick (a
        quiet symbol's may be far off). What reached it before the read began, the read sees.
        Once written, the snapshot is the key's floor for a while: an older value held for its
        slot by another process does not follow it."""
        key = market_data_key(symbol)
        self.watch(key)
        try:
            snapshot = await snapshot_text_async(symbol)
        finally:
            newest = self.seen_since(key)
        if snapshot is None:
            return
        text, version = snapshot
        if newest is None or version is None or newest <= version:
            self.write(text, "market_data")
            if version is not None:
                self.floor(key, version)

    async def cmd_unsubscribe(self, content: dict) -> None:
        name = content.get("channel")
        try:
            room = rooms.parse(name)
        except rooms.InvalidRoom as exc:
            self.reply(error(Code.INVALID_ROOM, str(exc), channel=_echo(name)))
            return
        if room.kind is rooms.RoomKind.SYSTEM:
            # what every connection must hear (maintenance, service status): not a room to leave
            self.reply(error(Code.FORBIDDEN, "every connection stays in the system room", channel=room.name))
            return
        if room.kind in (rooms.RoomKind.USER, rooms.RoomKind.ADMIN):
            try:  # another user's room, a staff room: not yours to leave either
                rooms.check_join(self.user, room, known_symbols=frozenset())
            except rooms.Forbidden as exc:
                self.reply(error(Code.FORBIDDEN, str(exc), channel=room.name))
                return
        if room.is_personal_filter:
            if room.key in self.filters:
                self.filters = self.filters - {room.key}
        elif room.name in self.joined:
            del self.joined[room.name]
            if room.kind == rooms.RoomKind.USER:
                self.personal_open = False  # still in the group: see connect()
            else:
                await self.hub_leave(room.layer_group)
        self.reply(self._room_reply(room, "unsubscribed"))

    async def cmd_list_rooms(self, content: dict) -> None:
        self.reply({"type": "room_list", "subscribedRooms": self._subscribed()})

    async def cmd_resume(self, content: dict) -> None:
        await self._resume(content.get("since"))

    async def _resume(self, since: object) -> None:
        if not isinstance(since, int) or isinstance(since, bool) or not 0 <= since < 2**63:
            self.reply(error(Code.INVALID_MESSAGE, "resume needs 'since': the last seq you have (0 for all)"))
            return
        assert self.stream is not None  # commands come after the first authentication
        async with self.stream_lock:  # live events wait in the inbox meanwhile, then dedupe by seq
            try:
                replayed = await self.stream.resume(since)
            except ResumeRefused as refused:
                RESUMES.labels("/ws", refused.reason).inc()
                self.reply(refused.as_message())
                return
            RESUMES.labels("/ws", "ok").inc()
            self.reply({"type": "resumed", "since": since, "lastSeq": self.stream.last_seq, "replayed": replayed})

    async def cmd_ping(self, content: dict) -> None:
        self.reply({"type": "pong", "serverTime": now_iso()})

    COMMANDS = {
        "auth": cmd_auth,
        "subscribe": cmd_subscribe,
        "unsubscribe": cmd_unsubscribe,
        "list_rooms": cmd_list_rooms,
        "resume": cmd_resume,
        "ping": cmd_ping,
    }

    async def _join(self, room: rooms.Room) -> None:
        if room.name not in self.joined:
            await self.hub_join(room.layer_group)
            self.joined[room.name] = room
            if room.kind == rooms.RoomKind.USER:
                self.personal_open = True

    async def _leave_admin_rooms_no_longer_allowed(self) -> None:
        """A fresh token, or a change to the user's permissions (``access_changed``), is a fresh look
        at them: a staff member whose permission to a room was taken away since leaves it, told so
        (``room_subscription`` ``unsubscribed``); one given it may subscribe."""
        assert self.user is not None
        allowed = rooms.admin_rooms_for(self.user)
        for name, room in list(self.joined.items()):
            if room.kind is rooms.RoomKind.ADMIN and room not in allowed:
                del self.joined[name]
                await self.hub_leave(room.layer_group)
                self.reply(self._room_reply(room, "unsubscribed"))

    def _subscribed(self) -> list[str]:
        return [*self.joined, *(c for c in rooms.CATEGORIES if c in self.filters)]

    def _room_reply(self, room: rooms.Room, status: str) -> dict:
        return {
            "type": "room_subscription",
            "channel": room.name,
            "status": status,
            "subscribedRooms": self._subscribed(),
        }

    # ---- what reaches the client ------------------------------------------------------------

    def reply(self, content: dict) -> None:
        """Answers and notices go out in order with everything else this socket writes."""
        self.write(dumps(content))

    def wants(self, channel: str) -> bool:
        # unlogged values on the user's room (position values) obey the category filters too, and
        # the room's own subscription
        return channel not in rooms.CATEGORIES or (self.personal_open and channel in self.filters)

    async def _emit_personal(self, seq: int, channel: str, text: str, frame: str | None) -> None:
        if channel in self.filters:
            self.write(text, channel)

    async def access_changed(self, message: dict) -> None:
        if self.user is None or self.closing:
            return
        if "/ws" in message.get("disconnect", ()):
            await self.fail(Code.DISCONNECTED, "disconnected by staff", Close.DISCONNECTED)
            return
        user = self.user
        reason = await user_still_allowed(user.pk, user.credentials_version, user.is_staff, user.is_superuser)
        if reason:
            await self.fail(Code.ACCESS_REVOKED, reason, Close.ACCESS_REVOKED)
            return
        if user.is_staff and not user.is_superuser:  # its permissions may have changed: a fresh look
            # read into a copy, then swapped in: a command meanwhile still finds the user's
            # permissions cached (a missing cache would be read on the event loop)
            fresh = copy.copy(user)
            for cache in PERMISSION_CACHES:
                fresh.__dict__.pop(cache, None)
            try:
                await staff_permissions(fresh)
            except DatabaseUnavailable:
                await self.fail(Code.SERVICE_UNAVAILABLE, DB_UNAVAILABLE, Close.TRY_AGAIN_LATER)
                return
            for cache in PERMISSION_CACHES:
                if cache in fresh.__dict__:
                    user.__dict__[cache] = fresh.__dict__[cache]
            if not self.closing and self.user is user:
                await self._leave_admin_rooms_no_longer_allowed()
