"""Room names ⇄ group names and the permission rules, in one module."""

import re
from types import SimpleNamespace

import pytest

from broadcast import rooms

GROUP_OK = re.compile(r"^[A-Za-z0-9._-]{1,99}$")


def person(pk, staff=False, superuser=False, perms=()):
    granted = set(perms)
    return SimpleNamespace(pk=pk, is_staff=staff, is_superuser=superuser, has_perm=lambda p: superuser or p in granted)


@pytest.mark.parametrize(
    ("name", "group"),
    [
        ("user:42", "user.42"),
        ("market:BTC_USD", "market.BTC_USD"),
        ("market:SBIN-EQ", "market.SBIN-EQ"),
        ("admin:staff", "admin.staff"),
        ("system", "system"),
    ],
)
def test_room_to_group(name, group):
    room = rooms.parse(name)
    assert room.name == name and room.group == group


@pytest.mark.parametrize("symbol", ["BTC/USD", "M&M", "A.B", "X.2f.Y", "BRK.B", "A" * 32])
def test_symbols_with_unsafe_characters_map_to_valid_distinct_groups(symbol):
    group = rooms.market_room(symbol).group
    assert GROUP_OK.match(group), group
    assert group != rooms.market_room(symbol + "x").group


def test_escaping_is_injective():
    symbols = ["A.B", "A/B", "A_B", "A-B", "A.2f.B", "A2fB"]
    assert len({rooms.market_room(s).group for s in symbols}) == len(symbols)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "user:",
        "user:abc",
        "user:01",
        "user:1/../2",
        "admin:root",
        "market:",
        "market:$X",
        "x" * 101,
        "market:BTC_USD\u0430",
        None,
        5,
    ],
)
def test_malformed_names_are_invalid(name):
    with pytest.raises(rooms.InvalidRoom):
        rooms.parse(name)


def test_permissions():
    alice, root = person(1), person(3, superuser=True)
    staff = person(2, staff=True, perms=[rooms.STAFF_FEED_PERMISSION])
    symbols = {"BTC_USD"}
    rooms.check_join(alice, rooms.parse("user:1"), known_symbols=symbols)
    rooms.check_join(alice, rooms.parse("market:BTC_USD"), known_symbols=symbols)
    rooms.check_join(alice, rooms.parse("notifications"), known_symbols=symbols)
    with pytest.raises(rooms.Forbidden):
        rooms.check_join(alice, rooms.parse("user:2"), known_symbols=symbols)
    with pytest.raises(rooms.Forbidden):
        rooms.check_join(alice, rooms.parse("admin:staff"), known_symbols=symbols)
    with pytest.raises(rooms.InvalidRoom):
        rooms.check_join(alice, rooms.parse("market:ETH_USD"), known_symbols=symbols)
    rooms.check_join(staff, rooms.parse("admin:staff"), known_symbols=symbols)
    with pytest.raises(rooms.Forbidden):
        rooms.check_join(staff, rooms.parse("admin:superuser"), known_symbols=symbols)
    rooms.check_join(root, rooms.parse("admin:superuser"), known_symbols=symbols)
    assert [r.name for r in rooms.auto_rooms(root)] == ["user:3", "system", "admin:staff", "admin:superuser"]


def test_the_staff_feed_is_for_staff_who_may_view_the_event_log():
    """admin:staff carries every user's logged events: being staff is not enough."""
    bare = person(2, staff=True, perms=["orders.view_order", "accounts.view_user"])
    not_staff = person(4, perms=[rooms.STAFF_FEED_PERMISSION])
    for user in (bare, not_staff):
        with pytest.raises(rooms.Forbidden):
            rooms.check_join(user, rooms.parse("admin:staff"), known_symbols=set())
        assert rooms.admin_rooms_for(user) == []
    reader = person(5, staff=True, perms=[rooms.STAFF_FEED_PERMISSION])
    assert [r.name for r in rooms.auto_rooms(reader)] == ["user:5", "system", "admin:staff"]


def test_the_staff_feed_takes_what_the_events_page_takes():
    """/panel/events opens with the event log's view or change permission (the admin's
    has_view_permission, panel/permissions.py): its live feed, admin:staff, with either too."""
    from panel import permissions

    editor = person(6, staff=True, perms=["realtime.change_eventlog"])
    assert permissions.may_open(editor, "events")
    rooms.check_join(editor, rooms.parse("admin:staff"), known_symbols=set())
    assert [r.name for r in rooms.auto_rooms(editor)] == ["user:6", "system", "admin:staff"]
