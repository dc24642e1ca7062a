"""The /ws gateway against the real ASGI application, channel layer on Redis."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.contrib.auth.models import Permission

from accounts.tokens import AccessToken
from broadcast.outbox import publish_personal_many
from broadcast.rooms import STAFF_FEED_PERMISSION, user_room
from tests.conftest import closed_with, connected, jwt_for, ws
from wire import dumps, envelope

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("instruments")]


async def personal_event(user_id: int, channel: str, marker: str) -> None:
    """Publish a personal event through the outbox."""
    await database_sync_to_async(publish_personal_many)(
        [(user_id, envelope(f"{channel}_test", channel, {"marker": marker}))]
    )


@pytest.fixture
def user(make_user):
    return make_user("alice")


# ---- authentication ---------------------------------------------------------------------------


async def test_bearer_header_authenticates_with_seed_connection_message(user):
    comm, hello = await connected(jwt_for(user))
    assert hello["status"] == "connected"
    assert hello["userId"] == str(user.pk)
    assert hello["sessionId"].startswith("session_")
    assert hello["serverTime"].endswith("Z")
    await comm.disconnect()


async def test_auth_message_after_connect_authenticates(user):
    comm = ws()
    assert (await comm.connect())[0]
    await comm.send_json_to({"type": "auth", "token": jwt_for(user)})
    hello = await comm.receive_json_from()
    assert hello["type"] == "connection" and hello["userId"] == str(user.pk)
    await comm.send_json_to({"type": "list_rooms"})
    rooms = await comm.receive_json_from()
    assert rooms["subscribedRooms"][:2] == [f"user:{user.pk}", "system"]
    await comm.disconnect()


@pytest.mark.parametrize("token", ["not-a-jwt", "", "eyJhbGciOiJIUzI1NiJ9.e30.bad"])
async def test_bad_token_in_header_is_refused_with_4001(user, token):
    comm = ws(token=token or "x")
    assert (await comm.connect())[0]
    err = await comm.receive_json_from()
    assert err["type"] == "error" and err["code"] == "AUTHENTICATION_FAILED" and err["message"]
    assert await closed_with(comm) == 4001


async def test_bad_token_in_auth_message_is_refused_with_4001(user):
    comm = ws()
    await comm.connect()
    await comm.send_json_to({"type": "auth", "token": 12345})
    assert (await comm.receive_json_from())["code"] == "AUTHENTICATION_FAILED"
    assert await closed_with(comm) == 4001


async def test_expired_token_is_refused(user):
    token = AccessToken.for_user(user)
    token.set_exp(lifetime=-timedelta(seconds=5))
    comm = ws(token=str(token))
    await comm.connect()
    err = await comm.receive_json_from()
    assert err["code"] == "AUTHENTICATION_FAILED" and "expired" in err["message"].lower()
    assert await closed_with(comm) == 4001


async def test_token_of_inactive_user_is_refused(make_user):
    user = await database_sync_to_async(make_user)("bob")
    token = jwt_for(user)
    user.is_active = False
    await database_sync_to_async(user.save)()
    comm = ws(token=token)
    await comm.connect()
    assert (await comm.receive_json_from())["code"] == "AUTHENTICATION_FAILED"
    assert await closed_with(comm) == 4001


async def test_sockets_opening_together_each_get_their_own_user_and_baseline(make_user):
    """Connect reads asked for together share one statement (connect_read): each socket still gets
    its own user and seq baseline, and each of simplejwt's refusals applies to its own token only."""
    import asyncio

    from accounts.services import account_upsert

    users = [await database_sync_to_async(make_user)(f"storm{i}") for i in range(4)]
    for i, user in enumerate(users):
        for n in range(i):  # user i has i events: baseline i
            await personal_event(user.pk, "notifications", f"{i}.{n}")
    tokens = [jwt_for(user) for user in users]
    inactive = await database_sync_to_async(make_user)("storm-inactive")
    inactive_token = jwt_for(inactive)
    inactive.is_active = False
    await database_sync_to_async(inactive.save)()
    moved = await database_sync_to_async(make_user)("storm-moved")
    moved_token = jwt_for(moved)
    await database_sync_to_async(account_upsert)(username="storm-moved", password="a-new-password-1", tier="basic")
    gone = await database_sync_to_async(make_user)("storm-gone")
    gone_token = jwt_for(gone)
    await database_sync_to_async(gone.delete)()

    good = [ws(token=t) for t in tokens + tokens[:2]]  # two users with a second socket each
    bad = [ws(token=t) for t in (inactive_token, moved_token, gone_token)]
    await asyncio.gather(*(comm.connect() for comm in good + bad))
    hellos = await asyncio.gather(*(comm.receive_json_from(timeout=10) for comm in good))
    for hello, user in zip(hellos, users + users[:2], strict=True):
        assert hello["type"] == "connection" and hello["userId"] == str(user.pk), hello
        assert hello["lastSeq"] == users.index(user), hello
    for comm, reason in zip(bad, ("inactive", "password", "not found"), strict=True):
        err = await comm.receive_json_from(timeout=10)
        assert err["code"] == "AUTHENTICATION_FAILED" and reason in err["message"], err
        assert await closed_with(comm) == 4001
    for comm in good:
        await comm.disconnect()


async def test_room_value_arriving_while_the_socket_authenticates_comes_after_connection(user, monkeypatch):
    """The socket joins its user's room before its connect read; a value published on that room in
    between (a position update) waits until `connection`, which is always the first message."""
    import asyncio

    from gateway import connect_read
    from gateway.hub import hub

    read = connect_read.user_row
    group = user_room(user.pk).group
    text = dumps({"type": "position_status_update", "channel": "positions", "data": {"marker": "early"}})

    async def read_after_a_value(user_id):
        before = hub().stamps[group]  # the socket is in the room: the process's hub holds the group
        message = {"type": "event.message", "channel": "positions", "personal": False, "text": text}
        await get_channel_layer().group_send(group, {**message, "group": group})
        async with asyncio.timeout(5):
            while hub().stamps[group] == before:  # noqa: ASYNC110 - the hub bumps it on delivery
                await asyncio.sleep(0.01)
        return await read(user_id)

    monkeypatch.setattr(connect_read, "user_row", read_after_a_value)
    comm, hello = await connected(jwt_for(user))
    assert hello["type"] == "connection"
    value = await comm.receive_json_from(timeout=5)
    assert value["type"] == "position_status_update" and value["data"]["marker"] == "early", value
    await comm.disconnect()


async def test_connect_read_survives_its_connection_being_cut(user):
    """The process's connect-read connection killed by the server (a restart, a proxy timeout):
    the next socket's read is retried on a fresh connection and succeeds."""
    from gateway import connect_read

    comm, _ = await connected(jwt_for(user))
    await comm.disconnect()
    reader = connect_read._readers()
    pid = reader.conn.info.backend_pid
    await database_sync_to_async(_terminate_backend)(pid)
    comm, hello = await connected(jwt_for(user))
    assert hello["userId"] == str(user.pk)
    assert reader.conn.info.backend_pid != pid
    await comm.disconnect()


async def test_a_connect_read_given_up_leaves_the_rest_of_its_batch_answered(user):
    """Each socket's read waits on a future of its own in the batch: a socket gone mid-connect
    cancels only that future; the reads batched with it get their rows."""
    import asyncio

    from gateway import connect_read

    reader = connect_read._readers()
    gone = asyncio.ensure_future(connect_read.user_row(user.pk))
    stays = asyncio.ensure_future(connect_read.user_row(user.pk))
    await asyncio.sleep(0)  # both asked for, in one batch
    gone.cancel()
    found, baseline = await asyncio.wait_for(stays, 10)
    assert found is not None and found.pk == user.pk
    assert gone.cancelled()
    assert await asyncio.wait_for(connect_read.user_row(user.pk), 10) == (found, baseline)  # the reader goes on
    assert reader is connect_read._readers()


def _terminate_backend(pid: int) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])


@pytest.mark.parametrize("first", [{"type": "subscribe", "channel": "system"}, "not json", {"no": "type"}])
async def test_any_other_message_before_auth_closes_4001(user, first):
    comm = ws()
    await comm.connect()
    if isinstance(first, str):
        await comm.send_to(text_data=first)
    else:
        await comm.send_json_to(first)
    assert (await comm.receive_json_from())["code"] == "AUTHENTICATION_FAILED"
    assert await closed_with(comm) == 4001


async def test_no_auth_within_timeout_closes_4001(user, settings):
    settings.AXISOR_WS = {**settings.AXISOR_WS, "AUTH_TIMEOUT_SECONDS": 0.2}
    comm = ws()
    await comm.connect()
    err = await comm.receive_json_from(timeout=5)
    assert err["code"] == "AUTHENTICATION_FAILED" and "time" in err["message"]
    assert await closed_with(comm) == 4001


async def test_token_expiring_on_open_socket_warns_then_closes_4002(user):
    token = AccessToken.for_user(user)
    token.set_exp(lifetime=timedelta(seconds=2))
    comm, hello = await connected(str(token))
    assert hello["tokenExpiresAt"]
    warning = await comm.receive_json_from(timeout=5)
    assert warning == {"type": "auth_expiring", "expiresAt": hello["tokenExpiresAt"]}
    err = await comm.receive_json_from(timeout=5)
    assert err["type"] == "error" and err["code"] == "TOKEN_EXPIRED"
    assert await closed_with(comm) == 4002


async def test_fresh_auth_before_expiry_keeps_socket_open(user):
    short = AccessToken.for_user(user)
    short.set_exp(lifetime=timedelta(seconds=1))
    comm, hello = await connected(str(short))
    await comm.send_json_to({"type": "auth", "token": jwt_for(user)})
    again = await comm.receive_json_from()
    assert again["type"] == "connection" and again["sessionId"] == hello["sessionId"]
    assert again["tokenExpiresAt"] > hello["tokenExpiresAt"]
    # The first token's expiry passes without a warning or a close.
    assert await comm.receive_nothing(timeout=1.5, interval=0.05)
    await comm.send_json_to({"type": "ping"})
    assert (await comm.receive_json_from())["type"] == "pong"
    await comm.disconnect()


async def test_auth_with_another_users_token_closes(user, make_user):
    other = await database_sync_to_async(make_user)("mallory")
    comm, _ = await connected(jwt_for(user))
    await comm.send_json_to({"type": "auth", "token": jwt_for(other)})
    assert (await comm.receive_json_from())["code"] == "AUTHENTICATION_FAILED"
    assert await closed_with(comm) == 4001


# ---- origin -----------------------------------------------------------------------------------


async def test_foreign_browser_origin_is_refused_at_handshake(user):
    comm = ws(token=jwt_for(user), origin="https://evil.example")
    ok, _ = await comm.connect()
    assert not ok


async def test_allowed_origin_and_missing_origin_are_accepted(user):
    for origin in ("http://localhost:8000", None):
        comm, hello = await connected(jwt_for(user), origin=origin)
        assert hello["status"] == "connected"
        await comm.disconnect()


# ---- rooms ------------------------------------------------------------------------------------


async def test_subscribe_unsubscribe_and_list_rooms(user):
    comm, _ = await connected(jwt_for(user))
    await comm.send_json_to({"type": "subscribe", "channel": "market:BTC_USD"})
    reply = await comm.receive_json_from()
    assert reply["type"] == "room_subscription"
    assert reply["channel"] == "market:BTC_USD" and reply["status"] == "subscribed"
    assert f"user:{user.pk}" in reply["subscribedRooms"] and "market:BTC_USD" in reply["subscribedRooms"]

    await comm.send_json_to({"type": "unsubscribe", "channel": "market:BTC_USD"})
    reply = await comm.receive_json_from()
    assert reply["status"] == "unsubscribed" and "market:BTC_USD" not in reply["subscribedRooms"]

    await comm.send_json_to({"type": "list_rooms"})
    listing = await comm.receive_json_from()
    assert listing == {"type": "room_list", "subscribedRooms": reply["subscribedRooms"]}
    await comm.disconnect()


@pytest.mark.parametrize(
    ("channel", "code"),
    [
        ("market:NOPE_USD", "INVALID_ROOM"),
        ("garbage", "INVALID_ROOM"),
        ("user:1/../2", "INVALID_ROOM"),
        ("market:" + "A" * 200, "INVALID_ROOM"),
        ("market:BTC_USD\u0430", "INVALID_ROOM"),
        (42, "INVALID_ROOM"),
        ("admin:staff", "FORBIDDEN"),
        ("admin:superuser", "FORBIDDEN"),
    ],
)
async def test_bad_subscriptions_are_refused_and_socket_stays(user, channel, code):
    comm, _ = await connected(jwt_for(user))
    await comm.send_json_to({"type": "subscribe", "channel": channel})
    err = await comm.receive_json_from()
    assert err["type"] == "error" and err["code"] == code and err["message"]
    await comm.send_json_to({"type": "list_rooms"})
    assert "admin:staff" not in (await comm.receive_json_from())["subscribedRooms"]
    await comm.disconnect()


async def test_another_users_room_is_forbidden(user, make_user):
    other = await database_sync_to_async(make_user)("carol")
    comm, _ = await connected(jwt_for(user))
    await comm.send_json_to({"type": "subscribe", "channel": f"user:{other.pk}"})
    err = await comm.receive_json_from()
    assert err["code"] == "FORBIDDEN"
    # and nothing of the other user's reaches us
    await personal_event(other.pk, "notifications", "theirs")
    await personal_event(user.pk, "notifications", "mine")
    got = await comm.receive_json_from()
    assert got["data"]["marker"] == "mine"
    await comm.disconnect()


async def test_staff_auto_join_admin_rooms(make_user):
    async def answer(comm) -> dict:
        """The next reply, past the process's figures (``admin_stats``), which reach staff every
        second once a test has started the process's reporting."""
        while (message := await comm.receive_json_from())["type"] == "admin_stats":
            pass
        return message

    def feed_reader():
        """A staff member who may view the event log: what admin:staff carries (broadcast.rooms)."""
        staff = make_user("sam", staff=True)
        app, codename = STAFF_FEED_PERMISSION.split(".")
        staff.user_permissions.add(Permission.objects.get(content_type__app_label=app, codename=codename))
        return staff

    staff = await database_sync_to_async(feed_reader)()
    root = await database_sync_to_async(make_user)("root", superuser=True)
    comm, _ = await connected(jwt_for(staff))
    await comm.send_json_to({"type": "list_rooms"})
    rooms = (await answer(comm))["subscribedRooms"]
    assert "admin:staff" in rooms and "admin:superuser" not in rooms
    await comm.send_json_to({"type": "subscribe", "channel": "admin:superuser"})
    assert (await answer(comm))["code"] == "FORBIDDEN"
    await comm.disconnect()
    comm, _ = await connected(jwt_for(root))
    await comm.send_json_to({"type": "list_rooms"})
    rooms = (await answer(comm))["subscribedRooms"]
    assert {"admin:staff", "admin:superuser"} <= set(rooms)
    await comm.disconnect()


async def test_market_room_receives_group_messages(user):
    comm, _ = await connected(jwt_for(user))
    await comm.send_json_to({"type": "subscribe", "channel": "market:SBIN-EQ"})
    await comm.receive_json_from()
    text = dumps({"type": "market_data_update", "channel": "market_data", "data": {"symbol": "SBIN-EQ"}})
    await get_channel_layer().group_send(
        "market.SBIN-EQ",
        {"type": "event.message", "channel": "market_data", "personal": False, "text": text, "group": "market.SBIN-EQ"},
    )
    assert (await comm.receive_json_from())["data"]["symbol"] == "SBIN-EQ"
    await comm.disconnect()


async def test_category_filters_on_personal_stream(user):
    comm, _ = await connected(jwt_for(user))
    await comm.send_json_to({"type": "unsubscribe", "channel": "notifications"})
    reply = await comm.receive_json_from()
    assert reply["status"] == "unsubscribed" and "notifications" not in reply["subscribedRooms"]
    await personal_event(user.pk, "notifications", "filtered")
    await personal_event(user.pk, "orders", "passes")
    assert (await comm.receive_json_from())["data"]["marker"] == "passes"
    await comm.send_json_to({"type": "subscribe", "channel": "notifications"})
    assert (await comm.receive_json_from())["status"] == "subscribed"
    await personal_event(user.pk, "notifications", "back")
    assert (await comm.receive_json_from())["data"]["marker"] == "back"
    await comm.disconnect()


# ---- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize("frame", ["{not json", "[]", '"str"', '{"type": 5}', '{"type": "launch_rockets"}'])
async def test_bad_messages_get_invalid_message_and_socket_stays(user, frame):
    comm, _ = await connected(jwt_for(user))
    await comm.send_to(text_data=frame)
    err = await comm.receive_json_from()
    assert err["type"] == "error" and err["code"] == "INVALID_MESSAGE"
    await comm.send_json_to({"type": "ping"})
    assert (await comm.receive_json_from())["type"] == "pong"
    await comm.disconnect()


async def test_binary_frame_is_invalid_message(user):
    comm, _ = await connected(jwt_for(user))
    await comm.send_to(bytes_data=b"\x00\xff")
    assert (await comm.receive_json_from())["code"] == "INVALID_MESSAGE"
    await comm.disconnect()


async def test_oversized_message_is_refused(user, settings):
    comm, _ = await connected(jwt_for(user))
    await comm.send_to(text_data=json.dumps({"type": "ping", "pad": "x" * (64 * 1024)}))
    assert (await comm.receive_json_from())["code"] == "MESSAGE_TOO_LARGE"
    await comm.send_json_to({"type": "ping"})
    assert (await comm.receive_json_from())["type"] == "pong"
    await comm.disconnect()


def user_budget(settings, rate: float, burst_seconds: float, **ws) -> None:
    per_tier = dict.fromkeys(("basic", "premium", "enterprise"), rate)
    settings.AXISOR_CAPS = {**settings.AXISOR_CAPS, "WS_MESSAGES_PER_SECOND": per_tier}
    settings.AXISOR_WS = {**settings.AXISOR_WS, "USER_BURST_SECONDS": burst_seconds, **ws}


async def test_a_users_sockets_share_one_inbound_budget_and_other_users_keep_theirs(user, make_user, settings):
    # Outside probe (twelfth session): 100 sockets of one user, each under its own 20 messages/s,
    # sent 1,800 a second; the process read ~900, and other users' pings waited 0.25-0.69 s.
    user_budget(settings, 0.001, 3000)  # a burst of three messages, then (next to) nothing
    first, _ = await connected(jwt_for(user))
    second, _ = await connected(jwt_for(user))
    for comm in (first, first, second):
        await comm.send_json_to({"type": "ping"})
        assert (await comm.receive_json_from())["type"] == "pong"
    for comm in (second, first):  # each socket is far under its own 20 a second
        await comm.send_json_to({"type": "subscribe", "channel": "market:BTC_USD"})
        refused = await comm.receive_json_from()
        assert refused["code"] == "RATE_LIMIT_EXCEEDED", refused
        assert refused["message"] == "basic accounts may send 0.001 messages per second over all their sockets"
    third, _ = await connected(jwt_for(user))  # a new socket does not bring a new budget
    await third.send_json_to({"type": "ping"})
    assert (await third.receive_json_from())["code"] == "RATE_LIMIT_EXCEEDED"
    other, _ = await connected(jwt_for(await database_sync_to_async(make_user)("bystander")))
    for _ in range(3):
        await other.send_json_to({"type": "ping"})
        assert (await other.receive_json_from())["type"] == "pong"
    for comm in (first, second, third, other):
        await comm.disconnect()


@pytest.mark.parametrize("over", ["its own rate", "its user's budget"])
async def test_a_socket_that_keeps_sending_over_a_limit_is_refused_then_closed(user, settings, over):
    if over == "its own rate":
        settings.AXISOR_WS = {
            **settings.AXISOR_WS,
            "RATE_PER_SECOND": 0.001,
            "RATE_BURST": 3,
            "RATE_ABUSE_CLOSE_AFTER": 5,
        }
    else:
        user_budget(settings, 0.001, 3000, RATE_ABUSE_CLOSE_AFTER=5)  # three messages, then refusals
    comm, _ = await connected(jwt_for(user))
    for _ in range(3):
        await comm.send_json_to({"type": "ping"})
        assert (await comm.receive_json_from())["type"] == "pong"
    for _ in range(4):
        await comm.send_json_to({"type": "ping"})
        assert (await comm.receive_json_from())["code"] == "RATE_LIMIT_EXCEEDED"
    await comm.send_json_to({"type": "ping"})
    closing = await comm.receive_json_from()
    assert (closing["code"], closing["message"]) == ("RATE_LIMIT_EXCEEDED", "too many messages; closing")
    assert await closed_with(comm) == 4008


async def test_order_update_sockets_count_against_the_same_budget(user, settings, instruments):
    from orders.services import order_session_create

    user_budget(settings, 0.001, 1000)
    events, _ = await connected(jwt_for(user))
    await events.send_json_to({"type": "ping"})
    assert (await events.receive_json_from())["type"] == "pong"
    session, token = await database_sync_to_async(order_session_create)(user=user)
    orders = ws(f"/ws/orders?session={session.session}&token={token}")
    assert (await orders.connect())[0]
    await orders.send_to(text_data="PONG")
    refused = await orders.receive_json_from()
    assert refused["code"] == "RATE_LIMIT_EXCEEDED", refused
    assert refused["message"].endswith("messages per second over all their sockets")
    await events.disconnect()
    await orders.disconnect()


async def test_an_uncapped_tier_has_no_user_budget(make_user, settings):
    user_budget(settings, 0, 1000)
    carol = await database_sync_to_async(make_user)("carol", tier="enterprise")
    comm, _ = await connected(jwt_for(carol))
    for _ in range(30):
        await comm.send_json_to({"type": "ping"})
        assert (await comm.receive_json_from())["type"] == "pong"
    await comm.disconnect()


# ---- access changes ---------------------------------------------------------------------------


async def test_deactivated_user_socket_is_closed_4003(user):
    from accounts.services import account_deactivate

    comm, _ = await connected(jwt_for(user))
    await database_sync_to_async(account_deactivate)(user=user)
    err = await comm.receive_json_from(timeout=5)
    assert err["code"] == "ACCESS_REVOKED"
    assert await closed_with(comm) == 4003


async def test_password_change_closes_socket_and_old_token_stops_working(user):
    from accounts.services import account_upsert

    token = jwt_for(user)
    comm, _ = await connected(token)
    await database_sync_to_async(account_upsert)(username=user.username, password="a-new-password-1", tier="basic")
    assert (await comm.receive_json_from(timeout=5))["code"] == "ACCESS_REVOKED"
    assert await closed_with(comm) == 4003
    again = ws(token=token)
    await again.connect()
    assert (await again.receive_json_from())["code"] == "AUTHENTICATION_FAILED"
    assert await closed_with(again) == 4001


async def test_rooms_a_socket_may_not_leave_and_names_echoed_short(make_user):
    # Outside probe (twelfth session): `unsubscribe system` left the room every connection must
    # hear (maintenance notices), another user's or a staff room answered "unsubscribed", and a
    # 64 KiB room name came back whole in the error.
    user = await database_sync_to_async(make_user)("leaver")
    comm, _ = await connected(jwt_for(user))
    for name in ("system", f"user:{user.pk + 1000}", "admin:staff"):
        await comm.send_json_to({"type": "unsubscribe", "channel": name})
        answer = await comm.receive_json_from(timeout=5)
        assert (answer["type"], answer["code"], answer["channel"]) == ("error", "FORBIDDEN", name), answer
    await comm.send_json_to({"type": "list_rooms"})
    assert "system" in (await comm.receive_json_from(timeout=5))["subscribedRooms"]
    await comm.send_json_to({"type": "subscribe", "channel": "market:" + "X" * 65_000})
    answer = await comm.receive_json_from(timeout=5)
    assert answer["code"] == "INVALID_ROOM" and len(answer["channel"]) == 100
    assert len(json.dumps(answer)) < 1_000
    await comm.disconnect()
