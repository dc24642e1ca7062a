"""What a staff member may do in the admin and with money is what they were granted, found by an
outside security review: a staff member with only change_user made themselves superuser; one with
no permission composed a notification to every user; one with only view_order cancelled an order
through an admin action; any staff account credited its own balance."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from ledger.models import LedgerEntry
from notifications.models import Notification
from orders.models import OrderStatus
from orders.services import order_accept
from tests.conftest import auth_api
from tests.orders.factories import place

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("instruments")]


def staff_with(make_user, *codenames: str):
    user = make_user(staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(user)
    return user, client


def change_form(user, **fields) -> dict:
    data = {
        "username": user.username, "first_name": "", "last_name": "", "email": "", "tier": user.tier,
        "is_active": "on", "date_joined_0": "2026-01-01", "date_joined_1": "00:00:00",
    }  # fmt: skip
    return {**data, **fields}


def test_a_staff_member_who_may_change_users_cannot_grant_powers_or_touch_a_superuser(make_user):
    staffer, client = staff_with(make_user, "change_user", "view_user")
    page = client.post(
        f"/admin/accounts/user/{staffer.pk}/change/",
        change_form(staffer, is_staff="on", is_superuser="on", tier="enterprise"),
    )
    assert page.status_code == 302
    staffer.refresh_from_db()
    assert staffer.tier == "enterprise"  # what they may change, changed
    assert not staffer.is_superuser and not staffer.user_permissions.filter(codename="delete_user").exists()
    root, strong = make_user("root", superuser=True), make_user("strong", staff=True)
    strong.user_permissions.set(Permission.objects.filter(codename__in=["add_notification", "change_order"]))
    reset = client.post(
        f"/admin/accounts/user/{strong.pk}/password/", {"password1": "taken-over-123", "password2": "taken-over-123"}
    )
    assert reset.status_code == 403  # another staff member's account: the review of the first fix
    strong.refresh_from_db()
    assert strong.check_password("pw-secret-123")
    assert client.get(f"/admin/accounts/user/{root.pk}/change/").status_code in (200, 403)  # at most a view
    assert client.post(f"/admin/accounts/user/{root.pk}/change/", change_form(root)).status_code == 403
    reset = client.post(
        f"/admin/accounts/user/{root.pk}/password/", {"password1": "taken-over-123", "password2": "taken-over-123"}
    )
    assert reset.status_code == 403
    root.refresh_from_db()
    assert root.check_password("pw-secret-123")


def test_a_superuser_still_grants_powers(make_user):
    root, client = make_user("root", superuser=True), Client()
    client.force_login(root)
    user = make_user("promoted")
    page = client.post(f"/admin/accounts/user/{user.pk}/change/", change_form(user, is_staff="on"))
    assert page.status_code == 302
    user.refresh_from_db()
    assert user.is_staff


def test_composing_a_notification_takes_the_permission_to_add_one(make_user):
    _, plain = staff_with(make_user)
    make_user("reader")
    body = {"audience": "all", "title": "t", "message": "m", "type": "info", "category": "system"}
    assert plain.get("/admin/notifications/notification/compose/").status_code == 403
    assert plain.post("/admin/notifications/notification/compose/", body).status_code == 403
    assert not Notification.objects.exists()
    _, granted = staff_with(make_user, "add_notification", "view_notification")
    assert granted.post("/admin/notifications/notification/compose/", body).status_code == 302
    assert Notification.objects.exists()


def test_admin_actions_take_the_permission_to_change(make_user):
    order = place(make_user("trader"))
    order_accept(order=order)
    _, viewer = staff_with(make_user, "view_order")
    viewer.post("/admin/orders/order/", {"action": "cancel_orders", "_selected_action": [order.pk], "reason": ""})
    order.refresh_from_db()
    assert order.order_status != OrderStatus.CANCELLED
    _, changer = staff_with(make_user, "view_order", "change_order")
    changer.post("/admin/orders/order/", {"action": "cancel_orders", "_selected_action": [order.pk], "reason": ""})
    order.refresh_from_db()
    assert order.order_status == OrderStatus.CANCELLED


def test_moving_money_is_granted_and_never_on_ones_own_account(make_user):
    plain, finance, other = make_user(staff=True), make_user(staff=True, balance=0), make_user(staff=True)
    for granted in (finance, other):
        granted.user_permissions.add(Permission.objects.get(codename="add_ledgerentry"))
    url = f"/api/account/{finance.pk}/adjust"
    by_plain = auth_api(plain).post(url, {"kind": "deposit", "amount": "5"}, format="json")
    assert by_plain.status_code == 403 and "ledger.add_ledgerentry" in by_plain.json()["detail"]
    own = auth_api(finance).post(url, {"kind": "deposit", "amount": "1000000"}, format="json")
    assert own.status_code == 403 and "their own account" in own.json()["detail"], own.json()
    assert not LedgerEntry.objects.filter(user=finance).exists()
    theirs = auth_api(other).post(url, {"kind": "deposit", "amount": "5"}, format="json")
    assert theirs.status_code == 201


def test_a_withdrawal_refusal_names_the_amount_in_plain_digits(make_user):
    staff, user = make_user(superuser=True), make_user(balance=0)
    over = auth_api(staff).post(f"/api/account/{user.pk}/adjust", {"kind": "withdrawal", "amount": "1"}, format="json")
    assert over.status_code == 409
    assert over.json()["detail"] == "only 0.00000000 is available to withdraw"  # was "only 0E-8"


def test_a_superuser_without_is_staff_and_groups_are_guarded_too(make_user):
    """The second review: the staff-account guard tested is_staff alone, so a superuser account
    without it was open again; and a staff member with change_group could add any permission to a
    group of their own."""
    _, client = staff_with(make_user, "change_user", "view_user", "change_group", "view_group", "add_group")
    root = make_user("root2", superuser=True)
    root.is_staff = False
    root.save()
    reset = client.post(
        f"/admin/accounts/user/{root.pk}/password/", {"password1": "x-taken-123", "password2": "x-taken-123"}
    )
    assert reset.status_code == 403
    assert client.post("/admin/auth/group/add/", {"name": "mine"}).status_code == 403
