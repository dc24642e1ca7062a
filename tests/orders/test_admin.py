"""Staff actions in the Django admin go through the services and broadcast."""

import pytest
from django.test import Client

from broadcast.models import EventLog
from orders.models import OrderStatus
from orders.services import order_accept
from tests.orders.factories import execute, place

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("instruments")]


def test_admin_reject_with_reason_and_cancel(make_user, django_capture_on_commit_callbacks):
    root = make_user("root", superuser=True)
    user = make_user("t")
    pending, open_ = place(user), place(user)
    order_accept(order=open_)
    client = Client()
    client.force_login(root)
    with django_capture_on_commit_callbacks(execute=False) as sent:
        resp = client.post(
            "/admin/orders/order/",
            {"action": "reject_orders", "_selected_action": [pending.pk], "reason": "Risk limit"},
        )
        assert resp.status_code == 302
        client.post("/admin/orders/order/", {"action": "cancel_orders", "_selected_action": [open_.pk], "reason": ""})
    pending.refresh_from_db()
    open_.refresh_from_db()
    assert pending.order_status == OrderStatus.REJECTED and pending.rejection_reason == "Risk limit"
    assert open_.order_status == OrderStatus.CANCELLED
    assert len(sent) == 3  # two order updates and the rejection notification
    assert EventLog.objects.filter(user=user, payload__data__updateType="ORDER_REJECTED").exists()
    page = client.get(f"/admin/orders/order/{pending.pk}/change/")
    assert page.status_code == 200 and b"ORDER_REJECTED" in page.content


def test_admin_refusal_is_reported_not_raised(make_user):
    root = make_user("root", superuser=True)
    order = place(make_user("t"))
    execute(order, "reject", reason="venue said no")
    client = Client()
    client.force_login(root)
    resp = client.post(
        "/admin/orders/order/", {"action": "cancel_orders", "_selected_action": [order.pk], "reason": ""}, follow=True
    )
    assert resp.status_code == 200 and b"cannot become CANCELLED" in resp.content
    order.refresh_from_db()
    assert order.order_status == OrderStatus.REJECTED
