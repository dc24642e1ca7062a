"""Rooms: the one place that maps room names to channel-layer groups and decides who may join.

Room names are what clients see (``user:42``, ``market:BTC_USD``, ``admin:staff``, ``system``);
group names are what the channel layer sees (``user.42``, ``market.BTC_USD``, ``admin.staff``,
``system``). Nothing else in the code base builds a group name.

The seed's category names (``notifications``, ``positions``, ``margin_guard``, ``alerts``,
``orders``) are not rooms: they are filters on the caller's own personal stream.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import Enum

MAX_ROOM_NAME = 100
# Channel-layer group names: ASCII alphanumerics, hyphen, underscore, period; under 100 chars.
_GROUP_SAFE = re.compile(r"[A-Za-z0-9_-]")
_SYMBOL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-./&]{0,31}")
_USER_ID = re.compile(r"[1-9][0-9]{0,18}")

CATEGORIES = ("notifications", "positions", "margin_guard", "alerts", "orders")
ADMIN_LEVELS = ("staff", "superuser")
# admin:staff carries a copy of every logged event, every user's (broadcast/stafffeed.py): the
# live event log, so the event log's view permission (the panel's Events page asks the same).
STAFF_FEED_PERMISSION = "realtime.view_eventlog"  # the broadcast app's label
# ... or its change permission: either lets the admin show a model (ModelAdmin.has_view_permission),
# and either opens /panel/events, whose live feed this room is: panel/permissions.py's "events"
# ability is this tuple.
STAFF_FEED_PERMISSIONS = (STAFF_FEED_PERMISSION, "realtime.change_eventlog")


class RoomKind(str, Enum):
    USER = "user"
    MARKET = "market"
    ADMIN = "admin"
    SYSTEM = "system"
    CATEGORY = "category"


class InvalidRoom(ValueError):
    """The name is not a room this server knows (→ INVALID_ROOM)."""


class Forbidden(PermissionError):
    """The room exists but the caller may not join it (→ FORBIDDEN)."""


@dataclass(frozen=True)
class Room:
    kind: RoomKind
    key: str = ""

    @property
    def name(self) -> str:
        if self.kind in (RoomKind.SYSTEM, RoomKind.CATEGORY):
            return self.key or "system"
        return f"{self.kind.value}:{self.key}"

    @property
    def group(self) -> str | None:
        """The channel-layer group, or None for category filters (they ride on the user group)."""
        if self.kind is RoomKind.CATEGORY:
            return None
        if self.kind is RoomKind.SYSTEM:
            return "system"
        return f"{self.kind.value}.{_group_safe(self.key)}"

    @property
    def layer_group(self) -> str:
        """``group`` for a room that has one: every kind but the category filters."""
        group = self.group
        assert group is not None, f"{self.name} is a category filter: it has no group"
        return group

    @property
    def is_personal_filter(self) -> bool:
        return self.kind is RoomKind.CATEGORY


def is_user_group(group: str) -> bool:
    """Whether a channel-layer group is a user's own room's (``Room.group`` of RoomKind.USER)."""
    return group.startswith(f"{RoomKind.USER.value}.")


def is_market_group(group: str) -> bool:
    """Whether a channel-layer group is a market room's (``Room.group`` of RoomKind.MARKET)."""
    return group.startswith(f"{RoomKind.MARKET.value}.")


def _group_safe(key: str) -> str:
    """Injective, group-safe spelling of a room key.

    Safe characters pass through; any other becomes ``.HEX.`` (periods never pass through, so the
    escape cannot be confused with the key). Keys whose spelling would not fit are hashed.
    """
    out = "".join(ch if _GROUP_SAFE.fullmatch(ch) else f".{ord(ch):x}." for ch in key)
    if len(out) > 80:
        out = "h." + hashlib.sha256(key.encode()).hexdigest()[:40]
    return out


def parse(name: object) -> Room:
    """Parse a client-supplied room name; raise InvalidRoom for anything malformed."""
    if not isinstance(name, str) or not name or len(name) > MAX_ROOM_NAME or not name.isascii():
        raise InvalidRoom("room names are ASCII strings of 1 to 100 characters")
    if name == "system":
        return Room(RoomKind.SYSTEM, "system")
    if name in CATEGORIES:
        return Room(RoomKind.CATEGORY, name)
    kind, sep, key = name.partition(":")
    if not sep:
        raise InvalidRoom(f"unknown room {name!r}: expected user:ID, market:SYMBOL, admin:LEVEL, system or a category")
    if kind == "user" and _USER_ID.fullmatch(key):
        return Room(RoomKind.USER, key)
    if kind == "market" and _SYMBOL.fullmatch(key):
        return Room(RoomKind.MARKET, key)
    if kind == "admin" and key in ADMIN_LEVELS:
        return Room(RoomKind.ADMIN, key)
    raise InvalidRoom(f"unknown room {name!r}")


def user_room(user_id: int | str) -> Room:
    return Room(RoomKind.USER, str(int(user_id)))


def market_room(symbol: str) -> Room:
    return Room(RoomKind.MARKET, symbol)


def system_room() -> Room:
    return Room(RoomKind.SYSTEM, "system")


def admin_room(level: str) -> Room:
    if level not in ADMIN_LEVELS:
        raise InvalidRoom(f"unknown admin level {level!r}")
    return Room(RoomKind.ADMIN, level)


def admin_rooms_for(user) -> list[Room]:
    """The admin rooms ``user`` may be in. For a staff member who is not a superuser this asks
    ``user.has_perm``: on an event loop, read the user's permissions first (on a thread, as the
    consumer does: ``get_all_permissions`` fills the user's cache)."""
    rooms = []
    if user.is_superuser or (user.is_staff and any(user.has_perm(p) for p in STAFF_FEED_PERMISSIONS)):
        rooms.append(Room(RoomKind.ADMIN, "staff"))
    if user.is_superuser:
        rooms.append(Room(RoomKind.ADMIN, "superuser"))
    return rooms


def auto_rooms(user) -> list[Room]:
    """Rooms joined on authentication: the user's own room, ``system``, the admin rooms allowed."""
    return [user_room(user.pk), system_room(), *admin_rooms_for(user)]


def check_join(user, room: Room, *, known_symbols: frozenset[str] | set[str]) -> None:
    """Raise Forbidden or InvalidRoom unless ``user`` may join ``room``."""
    if room.kind is RoomKind.USER and room.key != str(user.pk):
        raise Forbidden("you may only join your own user room")
    if room.kind is RoomKind.ADMIN and room not in admin_rooms_for(user):
        raise Forbidden(f"{room.name} is for {room.key} accounts only")
    if room.kind is RoomKind.MARKET and room.key not in known_symbols:
        raise InvalidRoom(f"unknown instrument {room.key!r}")
