"""The staff panel's pages and actions: who may see them, CSRF on every form, and that each action
goes through the services (and bad input changes nothing)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from accounts.tokens import AccessToken
from notifications.models import Notification
from orders.models import Order, OrderSession, OrderUpdate
from orders.services import order_session_create
from system.models import SystemNotice
from tests.orders.factories import execute, place
from tests.panel.grants import EVERY_PANEL_PERMISSION, grant, signed_in

pytestmark = pytest.mark.django_db

PAGES = [
    "/panel/",
    "/panel/events",
    "/panel/orders",
    "/panel/notifications",
    "/panel/system",
    "/panel/users",
    "/panel/market",
]


@pytest.fixture
def staff(make_user):
    """An operator granted every permission the panel asks (tests/panel/test_permissions.py: one
    granted none, or only some)."""
    user = make_user("operator", staff=True)
    grant(user, *EVERY_PANEL_PERMISSION)
    return user


@pytest.fixture
def customer(make_user, instruments):
    return make_user("customer", tier="premium")


@pytest.fixture
def panel(staff) -> Client:
    return signed_in(staff)


@pytest.fixture
def open_order(customer):
    order = place(customer)
    execute(order, "accept")
    order.refresh_from_db()
    assert order.order_status == "OPEN"
    return order


def post_urls(order_id: str, user_id: int, notice_id: int, session: str) -> list[str]:
    return [
        "/panel/token",
        f"/panel/orders/{order_id}/cancel",
        f"/panel/orders/{order_id}/reject",
        "/panel/notifications",
        "/panel/system/maintenance",
        "/panel/system/status",
        f"/panel/system/{notice_id}/end",
        f"/panel/users/{user_id}/disconnect",
        f"/panel/users/{user_id}/sessions/{session}/revoke",
    ]


@pytest.fixture
def targets(customer, open_order, staff):
    notice = SystemNotice.objects.create(kind="service_status", service="feed", status="degraded", message="slow")
    session, _ = order_session_create(user=customer)
    return post_urls(open_order.order_id, customer.pk, notice.pk, session.session)


# ---- who may see the panel -----------------------------------------------------------------


@pytest.mark.parametrize("url", [*PAGES, "/panel/users/1"])
def test_anonymous_visitors_are_sent_to_the_login_page(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/panel/login?next=")


def test_non_staff_get_403_on_every_page_and_action(client, customer, targets):
    client.force_login(customer)
    for url in [*PAGES, f"/panel/users/{customer.pk}"]:
        assert client.get(url).status_code == 403, url
    for url in targets:
        assert client.post(url, {"reason": "x", "endpoint": "all"}).status_code == 403, url
    assert Order.objects.get().order_status == "OPEN"
    assert not OrderSession.objects.filter(revoked_at__isnull=False).exists()


def test_non_staff_cannot_sign_in_and_is_not_told_the_password_was_right(client, customer):
    response = client.post("/panel/login", {"username": "customer", "password": "pw-secret-123"})
    assert response.status_code == 200
    wrong = client.post("/panel/login", {"username": "customer", "password": "not-the-password"})
    assert "Wrong username or password, or not a staff account." in response.content.decode()
    assert response.context["form"].errors == wrong.context["form"].errors
    assert "_auth_user_id" not in client.session


def test_staff_sign_in_and_see_every_page(client, staff, instruments):
    response = client.post("/panel/login", {"username": "operator", "password": "pw-secret-123"})
    assert response.status_code == 302 and response["Location"] == "/panel/"
    for url in [*PAGES, f"/panel/users/{staff.pk}"]:
        response = client.get(url)
        assert response.status_code == 200, url
        assert b'<main id="main">' in response.content


def test_logout_is_a_post(panel):
    assert panel.get("/panel/logout").status_code == 405
    assert panel.post("/panel/logout").status_code == 302
    assert panel.get("/panel/").status_code == 302


# ---- CSRF on every form --------------------------------------------------------------------


def test_every_form_refuses_a_post_without_the_csrf_token(staff, targets, open_order):
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    form = {
        "reason": "x",
        "endpoint": "all",
        "audience": "all",
        "title": "t",
        "message": "m",
        "type": "info",
        "category": "system",
        "service": "feed",
        "status": "down",
        "start_time": "2030-01-01T10:00",
        "end_time": "2030-01-01T11:00",
    }
    for url in targets:
        response = client.post(url, form)
        assert response.status_code == 403, url
        assert b"CSRF" in response.content, url
    open_order.refresh_from_db()
    assert open_order.order_status == "OPEN"
    assert not Notification.objects.exists()
    assert SystemNotice.objects.count() == 1 and SystemNotice.objects.get().ended_at is None
    assert not OrderSession.objects.filter(revoked_at__isnull=False).exists()


def test_a_post_with_the_page_csrf_token_is_accepted(staff, open_order):
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    page = client.get("/panel/orders").content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    response = client.post(f"/panel/orders/{open_order.order_id}/cancel", {"csrfmiddlewaretoken": token})
    assert response.status_code == 303
    open_order.refresh_from_db()
    assert open_order.order_status == "CANCELLED"


# ---- socket token --------------------------------------------------------------------------


def test_socket_token_is_a_short_lived_jwt_for_the_staff_member(panel, staff):
    assert panel.get("/panel/token").status_code == 405
    response = panel.post("/panel/token")
    assert response.status_code == 200
    token = AccessToken(response.json()["token"])
    assert str(token["user_id"]) == str(staff.pk)
    lifetime = token["exp"] - int(timezone.now().timestamp())
    assert 0 < lifetime <= 300


# ---- orders --------------------------------------------------------------------------------


def test_staff_cancel_goes_through_the_service(panel, open_order):
    response = panel.post(f"/panel/orders/{open_order.order_id}/cancel")
    assert response.status_code == 303
    open_order.refresh_from_db()
    assert open_order.order_status == "CANCELLED"
    assert OrderUpdate.objects.filter(order=open_order, update_type="ORDER_CANCELLED").count() == 1
    assert "cancelled" in panel.get("/panel/orders").content.decode()


def test_cancel_of_a_completed_order_is_refused_and_changes_nothing(panel, open_order):
    execute(open_order, "fill", quantity=10, price="625.50")
    versions = OrderUpdate.objects.filter(order=open_order).count()
    response = panel.post(f"/panel/orders/{open_order.order_id}/cancel")
    assert response.status_code == 409
    assert "not cancelled" in response.content.decode()
    open_order.refresh_from_db()
    assert open_order.order_status == "COMPLETE"
    assert OrderUpdate.objects.filter(order=open_order).count() == versions


def test_cancel_of_an_unknown_order_is_404(panel, instruments):
    assert panel.post("/panel/orders/999999999/cancel").status_code == 404


def test_reject_needs_a_reason_and_then_goes_through_the_service(panel, customer):
    order = place(customer)  # PENDING: not yet accepted by the venue
    response = panel.post(f"/panel/orders/{order.order_id}/reject", {"reason": "   "})
    assert response.status_code == 400
    assert "needs a reason" in response.content.decode()
    order.refresh_from_db()
    assert order.order_status == "PENDING"

    response = panel.post(f"/panel/orders/{order.order_id}/reject", {"reason": "risk limit"})
    assert response.status_code == 303
    order.refresh_from_db()
    assert (order.order_status, order.rejection_reason) == ("REJECTED", "risk limit")
    # the customer is told, like any rejection
    assert Notification.objects.get(user=customer).title == "Order rejected"


def test_reject_of_an_open_order_is_refused_by_the_state_machine(panel, open_order):
    response = panel.post(f"/panel/orders/{open_order.order_id}/reject", {"reason": "risk limit"})
    assert response.status_code == 409
    assert "cannot become REJECTED" in response.content.decode()
    open_order.refresh_from_db()
    assert open_order.order_status == "OPEN"


# ---- notifications -------------------------------------------------------------------------


def compose(panel, **fields):
    form = {"audience": "user", "title": "Hello", "message": "From staff", "type": "info", "category": "system"}
    return panel.post("/panel/notifications", {**form, **fields})


def test_compose_to_one_user(panel, customer):
    assert compose(panel, username="customer").status_code == 303
    n = Notification.objects.get()
    assert (n.user, n.title, n.deliveries.get().method) == (customer, "Hello", "in_app")


def test_compose_to_a_tier_and_to_everyone(panel, make_user, customer, staff):
    make_user("b1", tier="basic")
    make_user("b2", tier="basic")
    assert compose(panel, audience="basic").status_code == 303
    assert sorted(Notification.objects.values_list("user__username", flat=True)) == ["b1", "b2", "operator"]
    Notification.objects.all().delete()
    assert compose(panel, audience="all").status_code == 303
    assert Notification.objects.count() == 4


@pytest.mark.parametrize(
    "fields, error",
    [
        ({"username": "nobody"}, "No active user with this name."),
        ({"username": "customer", "type": "shout"}, "Select a valid choice."),
        ({"username": "customer", "title": ""}, "This field is required."),
        ({"audience": "platinum"}, "Select a valid choice."),
    ],
)
def test_bad_compose_input_is_shown_and_sends_nothing(panel, customer, fields, error):
    response = compose(panel, **fields)
    assert response.status_code == 400
    assert error in response.content.decode()
    assert not Notification.objects.exists()


# ---- system notices ------------------------------------------------------------------------


def test_schedule_maintenance_and_end_it(panel):
    start = timezone.now() + timedelta(hours=1)
    response = panel.post(
        "/panel/system/maintenance",
        {
            "message": "DB upgrade",
            "start_time": start.strftime("%Y-%m-%dT%H:%M"),
            "end_time": (start + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"),
        },
    )
    assert response.status_code == 303
    notice = SystemNotice.objects.get()
    assert (notice.kind, notice.message, notice.ended_at) == ("maintenance", "DB upgrade", None)
    assert "DB upgrade" in panel.get("/panel/system").content.decode()
    assert panel.post(f"/panel/system/{notice.pk}/end").status_code == 303
    notice.refresh_from_db()
    assert notice.ended_at is not None
    assert panel.post(f"/panel/system/{notice.pk}/end").status_code == 409
    assert panel.post("/panel/system/99999/end").status_code == 404


def test_maintenance_that_ends_before_it_starts_is_refused(panel):
    response = panel.post(
        "/panel/system/maintenance",
        {"message": "x", "start_time": "2030-01-01T11:00", "end_time": "2030-01-01T10:00"},
    )
    assert response.status_code == 400
    assert "must end after it starts" in response.content.decode()
    assert not SystemNotice.objects.exists()


def test_set_a_service_status(panel):
    response = panel.post("/panel/system/status", {"service": "order-routing", "status": "down", "message": "outage"})
    assert response.status_code == 303
    notice = SystemNotice.objects.get()
    assert (notice.service, notice.status) == ("order-routing", "down")
    bad = panel.post("/panel/system/status", {"service": "no spaces!", "status": "sideways", "message": ""})
    assert bad.status_code == 400
    assert SystemNotice.objects.count() == 1


# ---- users ---------------------------------------------------------------------------------


def test_user_page_shows_tier_connections_and_sessions(panel, customer):
    session, _ = order_session_create(user=customer)
    page = panel.get(f"/panel/users/{customer.pk}").content.decode()
    assert "premium" in page and session.session in page and "Disconnect /ws/orders" in page
    assert panel.get(f"/panel/users/{customer.pk}/connections").json() == {
        "userId": str(customer.pk),
        "connections": {"/ws": 0, "/ws/orders": 0},
    }
    assert panel.get("/panel/users/999999").status_code == 404


def test_revoke_a_session_through_the_service(panel, customer):
    session, _ = order_session_create(user=customer)
    url = f"/panel/users/{customer.pk}/sessions/{session.session}/revoke"
    assert panel.post(url).status_code == 303
    session.refresh_from_db()
    assert session.revoked_at is not None
    assert panel.post(url).status_code == 409
    assert panel.post(f"/panel/users/{customer.pk}/sessions/sess_nope/revoke").status_code == 404


def test_disconnect_with_an_unknown_endpoint_is_refused(panel, customer, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        response = panel.post(f"/panel/users/{customer.pk}/disconnect", {"endpoint": "/ws/everything"})
    assert response.status_code == 400
    assert callbacks == []


@pytest.mark.django_db
def test_market_page_lists_recent_margin_guard_executions(panel, customer):
    from django.utils import timezone

    from margin.models import MarginGuardExecution

    MarginGuardExecution.objects.create(
        execution_id="mg_panel_1",
        user=customer,
        action="notification_sent",
        trigger="threshold",
        threshold="0.85",
        positions=[],
        summary={"positionsChecked": 2, "positionsAtRisk": 1, "actionsExecuted": ["notification_sent"]},
        executed_at=timezone.now(),
    )
    page = panel.get("/panel/market").content.decode()
    assert "notification_sent" in page and "1 of 2 position(s) at risk" in page and "customer" in page


def test_users_and_a_users_page_show_the_money(panel, make_user, instruments):
    rich = make_user("rich", balance="12345.678")
    listing = panel.get("/panel/users?q=rich").content.decode()
    assert re.search(r'data-col="balance">12345\.68<', listing)
    page = panel.get(f"/panel/users/{rich.pk}").content.decode()
    assert re.search(r'data-col="balance">12345\.68<', page) and re.search(r'data-col="available">12345\.68<', page)


def test_the_dashboard_shows_what_readyz_answers_for_each_layer_server(panel, settings):
    """The panel's readiness is /readyz's (core.health): with a sharded layer each server is a row,
    and one server down is "degraded", not a single "channel layer: ok" read from REDIS_URL."""
    from core import redis_clients
    from tests.integration.http import free_port

    page = panel.get("/panel/").content.decode()
    assert re.search(r'data-check="status">ready<', page) and re.search(r'data-check="channelLayer">ok<', page)

    dead = free_port()
    settings.CHANNEL_LAYER_HOSTS = [settings.REDIS_URL, f"redis://127.0.0.1:{dead}/0"]
    settings.REDIS_CONNECT_TIMEOUT = 1.0
    redis_clients._sync_layer_clients.clear()
    page = panel.get("/panel/").content.decode()
    assert re.search(r'data-check="status">degraded<', page), page
    assert re.search(r'data-check="redis">ok<', page) and re.search(r'data-check="channelLayer.0">ok<', page)
    assert re.search(
        r'Channel layer server 1</dt>\s*<dd><span class="badge bad" data-check="channelLayer.1">error: ', page
    )

    settings.CHANNEL_LAYER_HOSTS = [f"redis://127.0.0.1:{dead}/0"]  # no layer server answers: not ready
    assert re.search(r'data-check="status">unavailable<', panel.get("/panel/").content.decode())
    redis_clients._sync_layer_clients.clear()
