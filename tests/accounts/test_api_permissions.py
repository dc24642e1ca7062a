"""The staff endpoints of the REST API take the Django permission the admin and the staff panel take
for the same thing. Being staff was enough before: the panel refused a staff member granted
nothing, who then did it all through the API with the panel's own token (``/panel/token``): a
notice to every socket, a notification to any user, a fill booked, a price posted."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from market.models import Tick
from notifications.models import Notification
from orders.models import ExecutionReport
from system.models import SystemNotice
from tests.conftest import auth_api
from tests.orders.factories import place
from tests.panel.grants import grant

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("instruments")]


def panel_token(user) -> str:
    """What the staff panel hands its signed-in staff member for the API and the socket."""
    browser = Client()
    browser.force_login(user)
    return browser.post("/panel/token").json()["token"]


def test_each_staff_endpoint_takes_its_permission_not_being_staff(make_user):
    customer = make_user("customer")
    order = place(customer)
    notice = SystemNotice.objects.create(kind="service_status", service="feed", status="degraded", message="lag")
    start = timezone.now() + timedelta(hours=2)
    calls = {
        "system.add_systemnotice": (
            "/api/system/notices",
            {
                "kind": "maintenance",
                "message": "m",
                "startTime": start.isoformat(),
                "endTime": (start + timedelta(hours=1)).isoformat(),
            },
            201,
        ),
        "system.change_systemnotice": (f"/api/system/notices/{notice.pk}/end", None, 200),
        "notifications.add_notification": (
            "/api/notifications",
            {"userId": customer.pk, "title": "t", "message": "m", "category": "system"},
            201,
        ),
        "market.add_tick": ("/api/internal/ticks", [{"symbol": "BTC_USD", "price": "625", "volume": 1}], 202),
        "orders.add_executionreport": (
            "/api/internal/executions",
            {"orderId": order.order_id, "execId": "venue-1", "type": "accept"},
            200,
        ),
    }
    staff = make_user("operator", staff=True)
    api = auth_api(staff)
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {panel_token(staff)}")
    # Granted nothing (and, for each call, everything but its own permission): refused, nothing done
    for perm, (url, body, _) in calls.items():
        grant(staff, *(other for other in calls if other != perm))
        refused = api.post(url, body, format="json")
        assert refused.status_code == 403, (perm, refused.content)
        assert refused.json()["code"] == "permission_denied" and perm in refused.json()["detail"]
    assert SystemNotice.objects.count() == 1 and SystemNotice.objects.get().end_time is None
    assert not Notification.objects.exists() and not Tick.objects.exists()
    assert not ExecutionReport.objects.exists()
    # Granted exactly its permission: done
    for perm, (url, body, status) in calls.items():
        grant(staff, perm)
        done = api.post(url, body, format="json")
        assert done.status_code == status, (perm, done.content)
    assert SystemNotice.objects.count() == 2 and Notification.objects.count() == 1
    assert Tick.objects.count() == 1 and ExecutionReport.objects.count() == 1


def test_the_service_key_serves_beside_any_token_and_only_a_granted_staff_member_is_the_actor(make_user, settings):
    """The second review: a staff token without the permission beside the service key was refused
    (the docs say "or"), and a customer's token beside the key was recorded as the actor of a
    money movement."""
    from ledger.models import LedgerEntry

    settings.AXISOR_SERVICE_KEY = "ops-key"
    staff, customer = make_user("operator", staff=True), make_user("customer")
    tick = [{"symbol": "BTC_USD", "price": "625", "volume": 1}]
    assert auth_api(staff).post("/api/internal/ticks", tick, format="json").status_code == 403
    keyed = auth_api(staff).post("/api/internal/ticks", tick, format="json", HTTP_X_SERVICE_KEY="ops-key")
    assert keyed.status_code == 202
    other = make_user("other")
    deposit = {"kind": "deposit", "amount": "5"}
    url = f"/api/account/{other.pk}/adjust"
    moved = auth_api(customer).post(url, deposit, format="json", HTTP_X_SERVICE_KEY="ops-key")
    assert moved.status_code == 201
    assert LedgerEntry.objects.filter(user=other, note="").latest("pk").actor_id is None
