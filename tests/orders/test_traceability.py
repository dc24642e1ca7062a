"""Traceability: the client's own order id, echoed on every update and unique per user; cancel
all working orders."""

from __future__ import annotations

import pytest

from broadcast.models import EventLog
from orders.models import Order
from tests.conftest import auth_api
from tests.orders.factories import execute

pytestmark = pytest.mark.django_db

BODY = {"tradingSymbol": "SBIN-EQ", "orderType": "LIMIT", "transactionType": "BUY", "quantity": 1, "price": 600}


def test_client_order_id_is_echoed_on_every_update_and_found_by(make_user, instruments):
    user = make_user()
    api = auth_api(user)
    placed = api.post("/api/orders", {**BODY, "clientOrderId": "my-strategy:42"}, format="json").json()
    assert placed["clientOrderId"] == "my-strategy:42"
    order = Order.objects.get(order_id=placed["orderId"])
    execute(order, "accept")
    api.post(f"/api/orders/{order.order_id}/cancel")
    sent = [e.payload["data"] for e in EventLog.objects.filter(user=user, type="order_update").order_by("seq")]
    assert [u["updateType"] for u in sent] == ["ORDER_PLACED", "ORDER_STATUS", "ORDER_CANCELLED"]
    assert {u["clientOrderId"] for u in sent} == {"my-strategy:42"}
    found = api.get("/api/orders?clientOrderId=my-strategy:42").json()
    assert [o["orderId"] for o in found["results"]] == [order.order_id]
    plain = api.post("/api/orders", BODY, format="json").json()
    assert plain["clientOrderId"] is None


def test_client_order_id_is_unique_per_user_and_checked(make_user, instruments):
    user, other = make_user(), make_user()
    api = auth_api(user)
    assert api.post("/api/orders", {**BODY, "clientOrderId": "a1"}, format="json").status_code == 201
    again = api.post("/api/orders", {**BODY, "clientOrderId": "a1"}, format="json")
    assert again.status_code == 409 and again.json()["code"] == "duplicate_client_order_id"
    assert auth_api(other).post("/api/orders", {**BODY, "clientOrderId": "a1"}, format="json").status_code == 201
    for bad in ["", "x" * 65, "has space", "<script>", None]:
        refused = api.post("/api/orders", {**BODY, "clientOrderId": bad}, format="json")
        assert refused.status_code == 400 and "clientOrderId" in refused.json()["fields"], (bad, refused.json())
    assert Order.objects.filter(user=user).count() == 1


def test_cancel_all_cancels_every_working_order_of_the_caller_only(make_user, instruments):
    user, other = make_user(), make_user()
    api = auth_api(user)
    ids = [api.post("/api/orders", BODY, format="json").json()["orderId"] for _ in range(3)]
    btc = api.post("/api/orders", {**BODY, "tradingSymbol": "BTC_USD", "price": 40000}, format="json").json()
    theirs = auth_api(other).post("/api/orders", BODY, format="json").json()
    only_sbin = api.post("/api/orders/cancel-all", {"symbol": "SBIN-EQ"}, format="json").json()
    assert sorted(o["orderId"] for o in only_sbin["cancelled"]) == sorted(ids) and only_sbin["failed"] == []
    rest = api.post("/api/orders/cancel-all", {}, format="json").json()
    assert [o["orderId"] for o in rest["cancelled"]] == [btc["orderId"]]
    assert Order.objects.get(order_id=theirs["orderId"]).order_status == "PENDING"
    assert api.post("/api/orders/cancel-all", {"symbol": ["x"]}, format="json").status_code == 400


def test_a_fill_keeps_the_venues_execution_time(make_user, instruments):
    user, venue = make_user(), auth_api(make_user(superuser=True))
    order_id = auth_api(user).post("/api/orders", BODY, format="json").json()["orderId"]
    report = {"orderId": order_id, "execId": "v-1", "type": "fill", "quantity": 1, "price": 600,
              "executedAt": "2026-01-05T09:30:01.250Z"}  # fmt: skip
    assert venue.post("/api/internal/executions", report, format="json").status_code == 200
    (trade,) = auth_api(user).get("/api/trades").json()["results"]
    assert trade["time"] == "2026-01-05T09:30:01.250Z"
    future = {**report, "execId": "v-2", "executedAt": "2999-01-01T00:00:00Z"}
    refused = venue.post("/api/internal/executions", future, format="json")
    assert refused.status_code == 400 and "executedAt" in refused.json()["fields"]
