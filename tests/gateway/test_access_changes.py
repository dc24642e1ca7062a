"""A staff member's access changes reach their open ``/ws`` sockets at once, however they are made:
a permission taken (the user's own, or its group's, or the group itself) drops ``admin:staff``,
told so; one given lets the next ``subscribe`` in; the staff, superuser or active flag changed by a
plain ``save()`` closes the socket 4003. Before, only the next ``auth`` looked again."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import Group

from accounts.models import User
from tests.conftest import closed_with, connected, jwt_for
from tests.orders.factories import place
from tests.panel.grants import grant, perm_objects
from tests.panel.test_live import FEED, marker, next_of_type, staff_member, until_marker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("instruments")]


async def rooms_of(comm) -> list[str]:
    await comm.send_json_to({"type": "list_rooms"})
    return (await next_of_type(comm, "room_list"))["subscribedRooms"]


async def dropped_from_the_feed(comm, customer) -> None:
    """``admin:staff`` left, told so, and no more of the feed after it."""
    left = await next_of_type(comm, "room_subscription")
    assert (left["channel"], left["status"]) == ("admin:staff", "unsubscribed"), left
    assert "admin:staff" not in left["subscribedRooms"]
    await database_sync_to_async(place)(customer)
    await database_sync_to_async(marker)("after the order")
    assert await until_marker(comm, "after the order") == []
    await comm.send_json_to({"type": "subscribe", "channel": "admin:staff"})
    refused = await next_of_type(comm, "error")
    assert (refused["code"], refused["channel"]) == ("FORBIDDEN", "admin:staff")


async def subscribes_to_the_feed(comm, staff) -> None:
    """Once the socket has heard of the grant: an event on the user's own room after it (the
    user's room carries both, in order) is the sign."""
    await database_sync_to_async(place)(staff)
    await next_of_type(comm, "order_update")
    await comm.send_json_to({"type": "subscribe", "channel": "admin:staff"})
    joined = await next_of_type(comm, "room_subscription")
    assert (joined["channel"], joined["status"]) == ("admin:staff", "subscribed"), joined


async def test_a_permission_taken_from_the_user_drops_the_staff_feed_and_one_given_lets_it_in(make_user):
    staff = await database_sync_to_async(staff_member)(make_user, "op", FEED)
    customer = await database_sync_to_async(make_user)("cust")
    comm, _ = await connected(jwt_for(staff))
    assert "admin:staff" in await rooms_of(comm)

    await database_sync_to_async(lambda: staff.user_permissions.remove(*perm_objects(FEED)))()
    await dropped_from_the_feed(comm, customer)

    await database_sync_to_async(grant)(staff, FEED)  # user_permissions.set: given back
    await subscribes_to_the_feed(comm, staff)
    await database_sync_to_async(lambda: User.objects.get(pk=staff.pk).user_permissions.clear())()
    await dropped_from_the_feed(comm, customer)
    await comm.disconnect()


async def test_group_membership_and_a_groups_permissions_reach_open_sockets(make_user):
    staff = await database_sync_to_async(staff_member)(make_user, "op")
    customer = await database_sync_to_async(make_user)("cust")
    readers = await database_sync_to_async(lambda: Group.objects.create(name="feed readers"))()
    comm, _ = await connected(jwt_for(staff))
    assert "admin:staff" not in await rooms_of(comm)

    await database_sync_to_async(lambda: readers.permissions.add(*perm_objects(FEED)))()  # no member yet
    await database_sync_to_async(lambda: staff.groups.add(readers))()
    await subscribes_to_the_feed(comm, staff)
    await database_sync_to_async(lambda: readers.permissions.remove(*perm_objects(FEED)))()  # the group's
    await dropped_from_the_feed(comm, customer)

    await database_sync_to_async(lambda: readers.permissions.add(*perm_objects(FEED)))()
    await subscribes_to_the_feed(comm, staff)
    await database_sync_to_async(lambda: readers.user_set.remove(staff))()  # from the group's side
    await dropped_from_the_feed(comm, customer)

    await database_sync_to_async(lambda: staff.groups.add(readers))()
    await subscribes_to_the_feed(comm, staff)
    await database_sync_to_async(readers.delete)()  # the group itself
    await dropped_from_the_feed(comm, customer)
    await comm.disconnect()


@pytest.mark.parametrize("flag", ["is_staff", "is_active", "is_superuser"])
async def test_a_flag_changed_by_a_plain_save_closes_the_socket(make_user, flag):
    """Not through a service or the admin (a shell, a script): ``User.save`` tells the sockets."""
    if flag == "is_superuser":
        staff = await database_sync_to_async(make_user)("root", superuser=True)
    else:
        staff = await database_sync_to_async(staff_member)(make_user, "op", FEED)
    comm, _ = await connected(jwt_for(staff))
    assert "admin:staff" in await rooms_of(comm)

    def change() -> None:
        user = User.objects.get(pk=staff.pk)
        setattr(user, flag, False)
        user.save()

    await database_sync_to_async(change)()
    revoked = await next_of_type(comm, "error")
    assert revoked["code"] == "ACCESS_REVOKED", revoked
    assert await closed_with(comm) == 4003
    await comm.disconnect()


async def test_a_rolled_back_change_tells_no_socket(make_user):
    from django.db import transaction

    staff = await database_sync_to_async(staff_member)(make_user, "op", FEED)
    comm, _ = await connected(jwt_for(staff))

    def rolled_back() -> None:
        try:
            with transaction.atomic():
                staff.user_permissions.clear()
                User.objects.filter(pk=staff.pk).update(is_staff=False)
                user = User.objects.get(pk=staff.pk)
                user.is_active = False
                user.save()
                raise RuntimeError("rolled back")
        except RuntimeError:
            pass

    await database_sync_to_async(rolled_back)()
    await database_sync_to_async(marker)("after the rollback")
    seen = await until_marker(comm, "after the rollback")
    assert "room_subscription" not in seen and "error" not in seen, seen
    assert "admin:staff" in await rooms_of(comm)
    await comm.disconnect()
