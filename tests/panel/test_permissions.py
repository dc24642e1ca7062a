"""The panel is no way around Django's permissions: every page and action asks what the admin asks
for the same thing (panel/permissions.py; docs/topics/operations.md, "The staff panel"). Before,
being staff was enough for all of it: a staff member granted nothing cancelled orders, sent a
notification to every user, ended a maintenance notice, cut sockets and read every user's money."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from broadcast.models import EventLog
from notifications.models import Notification
from orders.models import Order, OrderSession
from orders.services import order_session_create
from system.models import SystemNotice
from tests.orders.factories import execute, place
from tests.panel.grants import EVERY_PANEL_PERMISSION, grant, signed_in

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("instruments")]

NAV = ["events", "orders", "notifications", "system", "users", "market"]


@pytest.fixture
def customer(make_user):
    return make_user("customer", tier="premium")


@pytest.fixture
def world(customer):
    """One of everything the actions touch: an open and a pending order, a notice in force, a live
    order-socket session."""
    open_order = place(customer)
    execute(open_order, "accept")
    pending = place(customer)
    notice = SystemNotice.objects.create(
        kind="service_status", service="feed", status="degraded", message="feed lagging"
    )
    session, _ = order_session_create(user=customer)
    return {"open": open_order, "pending": pending, "notice": notice, "session": session}


def staff_with(make_user, *perms: str, name: str = "operator"):
    user = make_user(name, staff=True)
    grant(user, *perms)
    return user, signed_in(user)


def soon(hours: int) -> str:
    return (timezone.now() + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M")


def actions(world, customer) -> dict[str, tuple[str, dict]]:
    """Every panel action, as a valid POST: the name → (url, form)."""
    return {
        "cancel": (f"/panel/orders/{world['open'].order_id}/cancel", {}),
        "reject": (f"/panel/orders/{world['pending'].order_id}/reject", {"reason": "risk"}),
        "compose": (
            "/panel/notifications",
            {"audience": "all", "title": "t", "message": "m", "type": "info", "category": "system"},
        ),
        "maintenance": ("/panel/system/maintenance", {"message": "m", "start_time": soon(1), "end_time": soon(2)}),
        "status": ("/panel/system/status", {"service": "order-routing", "status": "down", "message": "m"}),
        "end": (f"/panel/system/{world['notice'].pk}/end", {}),
        "disconnect": (f"/panel/users/{customer.pk}/disconnect", {"endpoint": "all"}),
        "revoke": (f"/panel/users/{customer.pk}/sessions/{world['session'].session}/revoke", {}),
    }


def state(world) -> tuple:
    """What any action would change, as one comparable value."""
    return (
        tuple(Order.objects.order_by("id").values_list("order_status", flat=True)),
        Notification.objects.count(),
        tuple(SystemNotice.objects.order_by("id").values_list("id", "ended_at")),
        OrderSession.objects.filter(revoked_at__isnull=False).count(),
        EventLog.objects.count(),
    )


# ---- a staff member granted nothing ---------------------------------------------------------


def test_a_staff_member_granted_nothing_may_open_no_page_and_do_nothing(
    make_user, customer, world, django_capture_on_commit_callbacks
):
    _, client = staff_with(make_user)
    for url in ["/panel/events", "/panel/orders", "/panel/notifications", "/panel/system", "/panel/users",
                f"/panel/users/{customer.pk}", "/panel/market"]:  # fmt: skip
        page = client.get(url)
        assert page.status_code == 403, url
        assert page["Content-Type"].startswith("text/html"), url

    before = state(world)
    with django_capture_on_commit_callbacks() as callbacks:
        for name, (url, form) in actions(world, customer).items():
            assert client.post(url, form).status_code == 403, name
    assert callbacks == []  # no disconnect asked, nothing broadcast
    assert state(world) == before

    live = client.get(f"/panel/users/{customer.pk}/connections")
    assert live.status_code == 403
    assert live.json() == {"code": "permission_denied", "detail": "you may not open the users page"}


def test_the_dashboard_shows_a_staff_member_granted_nothing_no_models_rows_and_no_links(make_user, world, customer):
    _, client = staff_with(make_user)
    page = client.get("/panel/")
    assert page.status_code == 200
    html = page.content.decode()
    for name in NAV:
        assert f'href="/panel/{name}"' not in html, name
    assert 'id="processes"' in html and 'id="readiness"' in html  # the servers' figures: every staff's
    for section in ('id="failed-list"', 'id="failed-count"', 'id="notices"', 'id="rates"'):
        assert section not in html, section
    assert world["notice"].message not in html


def test_the_socket_token_is_any_staff_members_and_json_when_refused(make_user, customer):
    _, client = staff_with(make_user)
    assert client.post("/panel/token").status_code == 200  # what the socket then carries, the rooms decide
    refused = signed_in(customer).post("/panel/token")
    assert refused.status_code == 403
    assert refused.json() == {"code": "permission_denied", "detail": "staff only"}
    anonymous = Client().post("/panel/token")
    assert anonymous.status_code == 403 and anonymous.json()["code"] == "not_authenticated"


def test_the_events_page_and_its_live_feed_ask_the_same_permissions():
    """/panel/events and admin:staff, its live feed, are opened by one tuple (they drifted once:
    the change permission opened the page, not the room)."""
    from broadcast.rooms import STAFF_FEED_PERMISSIONS
    from panel.permissions import ABILITIES, view_perms

    assert ABILITIES["events"] is STAFF_FEED_PERMISSIONS
    assert set(STAFF_FEED_PERMISSIONS) == set(view_perms("realtime.eventlog"))  # the admin's rule


# ---- exactly the permission a page asks -----------------------------------------------------


@pytest.mark.parametrize(
    ("page", "perm", "shows"),
    [
        ("events", "realtime.view_eventlog", 'id="stream"'),
        ("orders", "orders.view_order", 'id="orders"'),
        ("notifications", "notifications.view_notification", 'id="notifications"'),
        ("system", "system.view_systemnotice", 'id="in-force"'),
        ("users", "accounts.view_user", 'id="users"'),
        ("market", "market.view_instrument", 'id="market"'),
        ("market", "margin.view_marginguardexecution", 'id="guard"'),
    ],
)
def test_one_view_permission_opens_its_page_and_only_its_link(make_user, world, page, perm, shows):
    _, client = staff_with(make_user, perm)
    response = client.get(f"/panel/{page}")
    assert response.status_code == 200
    html = response.content.decode()
    assert shows in html
    for name in NAV:
        assert (f'href="/panel/{name}"' in html) is (name == page), name
    for other in NAV:
        if other != page:
            assert client.get(f"/panel/{other}").status_code == 403, other


def test_view_permissions_show_no_actions(make_user, customer, world):
    perms = ["orders.view_order", "notifications.view_notification", "system.view_systemnotice",
             "accounts.view_user", "orders.view_ordersession"]  # fmt: skip
    _, client = staff_with(make_user, *perms)
    orders = client.get("/panel/orders").content.decode()
    assert world["open"].order_id in orders and "/cancel" not in orders and "/reject" not in orders
    assert 'id="order-actions"' not in orders  # the template the page fills live rows from
    notifications = client.get("/panel/notifications").content.decode()
    assert 'id="notifications"' in notifications and 'action="/panel/notifications"' not in notifications
    system = client.get("/panel/system").content.decode()
    assert "feed lagging" in system and "/end" not in system and "data-can-end" not in system
    assert "/panel/system/maintenance" not in system and "/panel/system/status" not in system
    user = client.get(f"/panel/users/{customer.pk}").content.decode()
    assert world["session"].session in user and "/revoke" not in user and "/disconnect" not in user
    assert 'id="money"' not in user  # the money is ledger.view_account's
    users = client.get("/panel/users").content.decode()
    assert 'data-col="balance"' not in users


def test_the_users_money_needs_the_ledgers_view_permission(make_user, customer):
    _, client = staff_with(make_user, "accounts.view_user", "ledger.view_account")
    assert 'id="money"' in client.get(f"/panel/users/{customer.pk}").content.decode()
    assert 'data-col="balance"' in client.get("/panel/users").content.decode()


# ---- exactly the permission an action asks --------------------------------------------------

# the action → (enough: the admin's permission for it, and the page's where the action is on one;
# not enough: the closest grant that is not)
NOTIFICATION_READS = ["notifications.view_notification", "notifications.change_notification"]
GRANTS = {
    "cancel": (["orders.change_order"], ["orders.view_order"]),
    "reject": (["orders.change_order"], ["orders.view_order"]),
    "compose": (["notifications.add_notification"], NOTIFICATION_READS),
    "maintenance": (["system.add_systemnotice"], ["system.view_systemnotice", "system.change_systemnotice"]),
    "status": (["system.add_systemnotice"], ["system.view_systemnotice", "system.change_systemnotice"]),
    "end": (["system.change_systemnotice"], ["system.view_systemnotice", "system.add_systemnotice"]),
    "disconnect": (["accounts.view_user", "accounts.disconnect_user"], ["accounts.view_user", "accounts.change_user"]),
    "revoke": (
        ["accounts.view_user", "orders.change_ordersession"],
        ["accounts.view_user", "orders.view_ordersession"],
    ),
}


def done(name: str, world) -> bool:
    if name == "cancel":
        return Order.objects.get(pk=world["open"].pk).order_status == "CANCELLED"
    if name == "reject":
        return Order.objects.get(pk=world["pending"].pk).order_status == "REJECTED"
    if name == "compose":
        return Notification.objects.exists()
    if name in ("maintenance", "status"):
        return SystemNotice.objects.count() == 2
    if name == "end":
        return SystemNotice.objects.get(pk=world["notice"].pk).ended_at is not None
    if name == "revoke":
        return OrderSession.objects.get(pk=world["session"].pk).revoked_at is not None
    raise AssertionError(name)


@pytest.mark.parametrize("name", GRANTS)
def test_the_closest_grant_that_is_not_the_actions_permission_is_refused(
    make_user, customer, world, name, django_capture_on_commit_callbacks
):
    _, client = staff_with(make_user, *GRANTS[name][1])
    url, form = actions(world, customer)[name]
    before = state(world)
    with django_capture_on_commit_callbacks() as callbacks:
        assert client.post(url, form).status_code == 403
    assert callbacks == [] and state(world) == before


@pytest.mark.parametrize("name", GRANTS)
def test_the_actions_permission_is_enough(make_user, customer, world, name, django_capture_on_commit_callbacks):
    _, client = staff_with(make_user, *GRANTS[name][0])
    url, form = actions(world, customer)[name]
    with django_capture_on_commit_callbacks() as callbacks:
        assert client.post(url, form).status_code == 303
    if name == "disconnect":
        assert callbacks  # the disconnect goes out after the commit (accounts.services.account_disconnect)
    else:
        assert done(name, world)


def test_another_staff_accounts_sockets_are_a_superusers_to_cut(make_user, django_capture_on_commit_callbacks):
    """As in the admin (accounts/admin.py): a staff account other than one's own is a superuser's."""
    _, client = staff_with(make_user, "accounts.view_user", "accounts.disconnect_user")
    other = make_user("other-staff", staff=True)
    assert "/disconnect" not in client.get(f"/panel/users/{other.pk}").content.decode()
    with django_capture_on_commit_callbacks() as callbacks:
        assert client.post(f"/panel/users/{other.pk}/disconnect", {"endpoint": "all"}).status_code == 403
    assert callbacks == []
    root = signed_in(make_user("root", superuser=True))
    with django_capture_on_commit_callbacks() as callbacks:
        assert root.post(f"/panel/users/{other.pk}/disconnect", {"endpoint": "all"}).status_code == 303
    assert callbacks


def test_another_staff_accounts_sessions_are_a_superusers_to_revoke(make_user):
    """The second review: Revoke (the panel's and the admin's) took a superuser's order sessions
    from any staff member with the permission; Disconnect did not. Now neither does."""
    perms = ("accounts.view_user", "orders.view_ordersession", "orders.change_ordersession")
    _, client = staff_with(make_user, *perms)
    root = make_user("root", superuser=True)
    session, _ = order_session_create(user=root)
    url = f"/panel/users/{root.pk}/sessions/{session.session}/revoke"
    assert url.rsplit("/", 1)[0] not in client.get(f"/panel/users/{root.pk}").content.decode()
    assert client.post(url).status_code == 403
    admin_action = {"action": "revoke", "_selected_action": [session.pk]}
    client.post("/admin/orders/ordersession/", admin_action)
    assert OrderSession.objects.get(pk=session.pk).revoked_at is None
    assert signed_in(make_user("root2", superuser=True)).post(url).status_code == 303
    assert OrderSession.objects.get(pk=session.pk).revoked_at is not None


def test_a_superuser_keeps_everything(make_user, customer, world):
    root = signed_in(make_user("root", superuser=True))
    for url in ["/panel/", *[f"/panel/{name}" for name in NAV], f"/panel/users/{customer.pk}"]:
        page = root.get(url)
        assert page.status_code == 200, url
        for name in NAV:
            assert f'href="/panel/{name}"' in page.content.decode(), (url, name)
    for name, (url, form) in actions(world, customer).items():
        assert root.post(url, form).status_code == 303, name


def test_every_panel_permission_names_a_permission_that_exists(make_user):
    """The table in panel/permissions.py spells real permissions (grant() finds each row)."""
    user, _ = staff_with(make_user, *EVERY_PANEL_PERMISSION)
    assert user.user_permissions.count() == len(EVERY_PANEL_PERMISSION)
