"""What the panel shows live: the staff feed on admin:staff, per-process presence, and the
"disconnect" action closing a user's sockets (real channel layer on Redis, real ASGI app)."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.db import transaction
from django.test import Client

from axisor.asgi import application
from broadcast import presence, stafffeed
from broadcast.outbox import publish
from broadcast.rooms import admin_room, system_room
from notifications.services import notification_broadcast
from tests.conftest import closed_with, connected, jwt_for
from tests.orders.factories import place
from tests.orders.test_order_socket import open_socket
from tests.panel.grants import EVERY_PANEL_PERMISSION, grant
from wire import envelope

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("instruments")]


class Boom(Exception):
    pass


async def next_of_type(comm, type_: str, timeout: float = 5) -> dict:
    """The next message of ``type_`` (admin_stats arrive every second in between)."""
    async with asyncio.timeout(timeout):
        while True:
            msg = await comm.receive_json_from(timeout=timeout)
            if msg.get("type") == type_:
                return msg


async def feed_listener() -> tuple[object, str]:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(admin_room("staff").group, channel)
    return layer, channel


async def next_feed(layer, channel) -> dict:
    while True:
        message = await asyncio.wait_for(layer.receive(channel), 5)
        payload = json.loads(message["text"])
        if payload["type"] == stafffeed.FEED_TYPE:
            return payload["data"]


def staff_member(make_user, name: str, *perms: str):
    """A staff account granted exactly ``perms`` (made on a thread: call through database_sync_to_async)."""
    user = make_user(name, staff=True)
    grant(user, *perms)
    return user


FEED = "realtime.view_eventlog"  # what admin:staff asks (broadcast.rooms.STAFF_FEED_PERMISSION)
DISCONNECT = ("accounts.view_user", "accounts.disconnect_user")  # the panel's disconnect


def marker(text: str) -> None:
    publish(room=system_room(), event=envelope("service_status_update", "system", {"message": text}))


# ---- the staff feed ------------------------------------------------------------------------


async def test_staff_socket_gets_a_compact_copy_of_each_logged_event(make_user):
    staff = await database_sync_to_async(staff_member)(make_user, "op", FEED)
    customer = await database_sync_to_async(make_user)("cust")
    comm, _ = await connected(jwt_for(staff))
    order = await database_sync_to_async(place)(customer)
    feed = await next_of_type(comm, "admin_events")
    assert feed["channel"] == "admin"
    assert feed["data"]["counts"] == {"order_update": 1} and feed["data"]["total"] == 1
    [entry] = feed["data"]["events"]
    assert entry["type"] == "order_update" and entry["room"] == f"user:{customer.pk}"
    assert entry["userId"] == str(customer.pk) and entry["seq"] == 1
    assert entry["data"]["orderId"] == order.order_id and entry["data"]["orderStatus"] == "PENDING"
    await comm.disconnect()


async def test_a_customer_socket_never_sees_the_staff_feed(make_user):
    customer = await database_sync_to_async(make_user)("cust")
    comm, _ = await connected(jwt_for(customer))
    await database_sync_to_async(place)(customer)
    own = await comm.receive_json_from(timeout=5)
    assert own["type"] == "order_update"
    assert await comm.receive_nothing(timeout=1.5)  # no admin_events, no admin_stats
    await comm.disconnect()


async def until_marker(comm, text: str) -> list[str]:
    """The types of what reaches ``comm`` up to the system-room marker ``text``."""
    seen = []
    async with asyncio.timeout(5):
        while True:
            msg = await comm.receive_json_from(timeout=5)
            if msg["type"] == "service_status_update" and msg["data"].get("message") == text:
                return seen
            seen.append(msg["type"])


async def test_the_staff_feed_is_for_those_who_may_view_the_event_log(make_user):
    """admin:staff carries every user's logged events (orders, notifications, margin-guard runs):
    the live event log. A staff member granted every other panel permission but not the event
    log's view permission is not put in it, may not join it, and none of it reaches them; one
    granted only that permission gets it."""
    others = [p for p in EVERY_PANEL_PERMISSION if not p.startswith("realtime.")]
    bare = await database_sync_to_async(staff_member)(make_user, "bare", *others)
    reader = await database_sync_to_async(staff_member)(make_user, "reader", FEED)
    customer = await database_sync_to_async(make_user)("cust")
    bare_ws, _ = await connected(jwt_for(bare))
    reader_ws, _ = await connected(jwt_for(reader))
    for comm, expected in ((bare_ws, False), (reader_ws, True)):
        await comm.send_json_to({"type": "list_rooms"})
        assert ("admin:staff" in (await next_of_type(comm, "room_list"))["subscribedRooms"]) is expected
    await bare_ws.send_json_to({"type": "subscribe", "channel": "admin:staff"})
    refused = await bare_ws.receive_json_from(timeout=5)
    assert (refused["type"], refused["code"], refused["channel"]) == ("error", "FORBIDDEN", "admin:staff")

    order = await database_sync_to_async(place)(customer)
    await database_sync_to_async(marker)("after the order")
    feed = await next_of_type(reader_ws, "admin_events")
    assert feed["data"]["events"][0]["data"]["orderId"] == order.order_id
    assert await until_marker(bare_ws, "after the order") == []  # no admin_events, no admin_stats
    await bare_ws.disconnect()
    await reader_ws.disconnect()


async def test_a_renewed_token_is_a_fresh_look_at_the_staff_feed_permission(make_user):
    """The panel renews its socket's token every few minutes: a staff member whose permission was
    taken away since leaves admin:staff then, told so, and gets none of the feed after."""
    staff = await database_sync_to_async(staff_member)(make_user, "op", FEED)
    customer = await database_sync_to_async(make_user)("cust")
    comm, _ = await connected(jwt_for(staff))
    await comm.send_json_to({"type": "list_rooms"})
    assert "admin:staff" in (await next_of_type(comm, "room_list"))["subscribedRooms"]
    await database_sync_to_async(grant)(staff)  # nothing any more
    await comm.send_json_to({"type": "auth", "token": jwt_for(staff)})
    left = await next_of_type(comm, "room_subscription")
    assert (left["channel"], left["status"]) == ("admin:staff", "unsubscribed")
    assert "admin:staff" not in left["subscribedRooms"]
    assert (await comm.receive_json_from(timeout=5))["type"] == "connection"
    await database_sync_to_async(place)(customer)
    await database_sync_to_async(marker)("after the order")
    assert await until_marker(comm, "after the order") == []
    await comm.disconnect()


async def test_one_feed_message_per_transaction_however_many_recipients(make_user):
    users = await database_sync_to_async(lambda: [make_user(f"u{i}") for i in range(60)])()
    layer, channel = await feed_listener()
    created = await database_sync_to_async(notification_broadcast)(
        audience="all", title="Hello", message="everyone", category="system"
    )
    assert created == len(users)
    data = await next_feed(layer, channel)
    assert data["counts"] == {"in_app_notification": 60} and data["total"] == 60
    assert len(data["events"]) == stafffeed.MAX_ENTRIES
    assert data["events"][0]["data"]["title"] == "Hello"
    # the very next feed message is the next transaction's: nothing per recipient came in between
    await database_sync_to_async(marker)("next")
    assert (await next_feed(layer, channel))["events"][0]["data"]["message"] == "next"


async def test_a_rolled_back_change_puts_nothing_on_the_feed(make_user):
    customer = await database_sync_to_async(make_user)("cust")
    layer, channel = await feed_listener()

    def rolled_back():
        with pytest.raises(Boom), transaction.atomic():
            place(customer)
            raise Boom

    await database_sync_to_async(rolled_back)()
    await database_sync_to_async(marker)("after")
    data = await next_feed(layer, channel)
    assert data["counts"] == {"service_status_update": 1}


# ---- presence ------------------------------------------------------------------------------


async def test_connections_are_counted_per_user_endpoint_and_process(make_user):
    staff = await database_sync_to_async(staff_member)(make_user, "op", FEED)
    customer = await database_sync_to_async(make_user)("cust", tier="premium")
    comm, _ = await connected(jwt_for(customer))
    orders, _ = await open_socket(customer)
    counts = await database_sync_to_async(presence.connections_by_user)([customer.pk])
    assert counts == {customer.pk: {"/ws": 1, "/ws/orders": 1}}
    assert await database_sync_to_async(presence.online)(customer.pk)

    watcher, _ = await connected(jwt_for(staff))
    stats = (await next_of_type(watcher, "admin_stats"))["data"]
    assert stats["process"] == presence.process_id()
    assert stats["connections"] == {"/ws": 2, "/ws/orders": 1}
    assert stats["rooms"]["user"] == 2 and stats["rooms"]["system"] == 2 and stats["rooms"]["admin"] == 1
    listed = await database_sync_to_async(presence.processes)()
    assert presence.process_id() in [p["process"] for p in listed]

    await comm.disconnect()
    await orders.disconnect()
    counts = await database_sync_to_async(presence.connections_by_user)([customer.pk])
    assert counts == {customer.pk: {"/ws": 0, "/ws/orders": 0}}
    assert not await database_sync_to_async(presence.online)(customer.pk)
    await watcher.disconnect()


# ---- disconnect ----------------------------------------------------------------------------


async def test_disconnect_closes_the_users_sockets_with_4004_endpoint_by_endpoint(make_user):
    staff = await database_sync_to_async(staff_member)(make_user, "op", *DISCONNECT)
    customer = await database_sync_to_async(make_user)("cust", tier="premium")
    events, _ = await connected(jwt_for(customer))
    orders, _ = await open_socket(customer)
    panel = Client()
    await database_sync_to_async(panel.force_login)(staff)

    response = await database_sync_to_async(panel.post)(f"/panel/users/{customer.pk}/disconnect", {"endpoint": "/ws"})
    assert response.status_code == 303
    error = await events.receive_json_from(timeout=5)
    assert (error["type"], error["code"]) == ("error", "DISCONNECTED")
    assert await closed_with(events) == 4004
    assert await orders.receive_nothing(timeout=1)  # the other endpoint is untouched

    response = await database_sync_to_async(panel.post)(f"/panel/users/{customer.pk}/disconnect", {"endpoint": "all"})
    assert response.status_code == 303
    error = await orders.receive_json_from(timeout=5)
    assert (error["type"], error["code"]) == ("error", "DISCONNECTED")
    assert await closed_with(orders) == 4004
    # nothing about the account changed: the user may connect again
    again, hello = await connected(jwt_for(customer))
    assert hello["userId"] == str(customer.pk)
    await again.disconnect()


# ---- the panel's socket: a token, never the session cookie ---------------------------------


async def test_a_session_cookie_alone_opens_no_socket(make_user):
    """The panel signs its socket in with a minted token; /ws ignores the session cookie, so a
    foreign page riding a staff member's cookie gets nowhere (and a foreign Origin not even a socket)."""
    staff = await database_sync_to_async(make_user)("op", staff=True)
    panel = Client()
    await database_sync_to_async(panel.force_login)(staff)
    cookie = f"sessionid={panel.cookies['sessionid'].value}".encode()

    foreign = WebsocketCommunicator(
        application, "/ws", headers=[(b"host", b"127.0.0.1"), (b"cookie", cookie), (b"origin", b"https://evil.example")]
    )
    ok, _ = await foreign.connect()
    assert not ok  # refused at the handshake by the Origin check

    same_site = WebsocketCommunicator(
        application, "/ws", headers=[(b"host", b"127.0.0.1"), (b"cookie", cookie), (b"origin", b"http://127.0.0.1")]
    )
    ok, _ = await same_site.connect()
    assert ok
    await same_site.send_json_to({"type": "list_rooms"})
    assert (await same_site.receive_json_from())["code"] == "AUTHENTICATION_FAILED"
    assert await closed_with(same_site) == 4001


async def test_a_socket_that_unsubscribed_its_own_room_is_still_disconnected(make_user):
    # Outside probe (twelfth session): access control reaches a socket through its user's room,
    # and unsubscribing `user:<id>` left that room's group: the socket then outlived a staff
    # disconnect (and a deactivation, a changed password). Unsubscribed, the room's events are
    # not written, and the socket stays in its group; subscribed again, it gets what it missed.
    from notifications.services import notification_create

    staff = await database_sync_to_async(staff_member)(make_user, "op2", *DISCONNECT)
    customer = await database_sync_to_async(make_user)("cust2", tier="premium")
    events, _ = await connected(jwt_for(customer))
    await events.send_json_to({"type": "unsubscribe", "channel": f"user:{customer.pk}"})
    answer = await next_of_type(events, "room_subscription")
    assert answer["status"] == "unsubscribed" and f"user:{customer.pk}" not in answer["subscribedRooms"]
    witness, _ = await connected(jwt_for(customer))  # subscribed: sees when the event has arrived
    await database_sync_to_async(notification_create)(
        user=customer.pk, title="t", message="not for now", category="system"
    )
    assert (await next_of_type(witness, "in_app_notification"))["data"]["message"] == "not for now"
    await witness.disconnect()
    await events.send_json_to({"type": "ping"})
    assert (await events.receive_json_from(timeout=5))["type"] == "pong"  # and nothing before it
    await events.send_json_to({"type": "subscribe", "channel": f"user:{customer.pk}"})
    assert (await next_of_type(events, "room_subscription"))["status"] == "subscribed"
    # what it missed while unsubscribed comes at once, from the log (no later event needed)
    assert (await next_of_type(events, "in_app_notification"))["data"]["message"] == "not for now"
    await database_sync_to_async(notification_create)(user=customer.pk, title="t", message="now", category="system")
    assert (await next_of_type(events, "in_app_notification"))["data"]["message"] == "now"
    await events.send_json_to({"type": "unsubscribe", "channel": f"user:{customer.pk}"})
    await next_of_type(events, "room_subscription")

    panel = Client()
    await database_sync_to_async(panel.force_login)(staff)
    response = await database_sync_to_async(panel.post)(f"/panel/users/{customer.pk}/disconnect", {"endpoint": "/ws"})
    assert response.status_code == 303
    error = await next_of_type(events, "error")
    assert error["code"] == "DISCONNECTED"
    assert await closed_with(events) == 4004
