"""The orders REST API: placement, idempotency, listing, modify, cancel, history, trades,
sessions and the venue executions endpoint."""

from __future__ import annotations

import pytest

from broadcast.models import EventLog
from orders.models import Order, OrderSession, Trade
from tests.conftest import auth_api
from tests.orders.factories import LIMIT

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("instruments")]


@pytest.fixture
def user(make_user):
    return make_user("rest")


@pytest.fixture
def client(user):
    return auth_api(user)


@pytest.fixture
def staff(make_user):
    return auth_api(make_user("venue", superuser=True))


def test_place_get_list_modify_cancel(client, staff):
    resp = client.post("/api/orders", LIMIT, format="json")
    assert resp.status_code == 201, resp.content
    order = resp.json()
    assert order["orderStatus"] == "PENDING" and order["quantity"] == 10 and order["pendingQuantity"] == 10
    assert order["price"] == 625.5 and order["version"] == 1 and order["orderId"].isdigit()
    oid = order["orderId"]

    assert client.get(f"/api/orders/{oid}").json()["orderId"] == oid
    listing = client.get("/api/orders?status=PENDING&symbol=SBIN-EQ").json()
    assert listing["count"] == 1 and listing["results"][0]["orderId"] == oid
    assert client.get("/api/orders?status=OPEN").json()["count"] == 0
    assert client.get("/api/orders?status=BOGUS").status_code == 400

    accept = staff.post("/api/internal/executions", {"orderId": oid, "execId": "a1", "type": "accept"}, format="json")
    assert accept.status_code == 200 and accept.json()["order"]["orderStatus"] == "OPEN"

    modified = client.patch(f"/api/orders/{oid}", {"price": 624.0, "quantity": 12}, format="json")
    assert modified.status_code == 200 and modified.json()["pendingQuantity"] == 12
    cancelled = client.post(f"/api/orders/{oid}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["orderStatus"] == "CANCELLED"
    again = client.post(f"/api/orders/{oid}/cancel")
    assert again.status_code == 409 and again.json()["code"] == "invalid_transition"

    history = client.get(f"/api/orders/{oid}/updates").json()
    assert [h["updateType"] for h in history] == ["ORDER_PLACED", "ORDER_STATUS", "ORDER_MODIFIED", "ORDER_CANCELLED"]
    assert [h["version"] for h in history] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"tradingSymbol": "NOPE"}, "tradingSymbol"),
        ({"exchange": "NYSE"}, "exchange"),
        ({"orderType": "FOK"}, "orderType"),
        ({"transactionType": "HOLD"}, "transactionType"),
        ({"quantity": -1}, "quantity"),
        ({"quantity": "ten"}, "quantity"),
        ({"quantity": "1_0"}, "quantity"),  # Decimal reads it as 10 (an outside review placed one)
        ({"quantity": "\u0661\u0660"}, "quantity"),  # Arabic-Indic "10"
        ({"price": "\uff16\uff12\uff15"}, "price"),  # full-width "625"
        ({"price": None}, "price"),
        ({"leverage": 50}, "leverage"),
    ],
)
def test_bad_input_is_400_with_field_and_writes_nothing(client, change, field):
    resp = client.post("/api/orders", {**LIMIT, **change}, format="json")
    assert resp.status_code == 400, resp.content
    body = resp.json()
    assert body["code"] == "validation_error" and field in body["fields"]
    assert Order.objects.count() == 0 and EventLog.objects.count() == 0


def test_idempotency_key_replays_first_answer_and_refuses_other_body(client):
    first = client.post("/api/orders", LIMIT, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    again = client.post("/api/orders", LIMIT, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json() and again["Idempotent-Replayed"] == "true"
    other = client.post("/api/orders", {**LIMIT, "quantity": 11}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    assert Order.objects.count() == 1
    # a failed placement does not burn the key
    bad = client.post("/api/orders", {**LIMIT, "price": None}, format="json", HTTP_IDEMPOTENCY_KEY="k-2")
    assert bad.status_code == 400
    ok = client.post("/api/orders", LIMIT, format="json", HTTP_IDEMPOTENCY_KEY="k-2")
    assert ok.status_code == 201 and Order.objects.count() == 2


def test_another_users_order_is_404(client, make_user, staff):
    oid = client.post("/api/orders", LIMIT, format="json").json()["orderId"]
    other = auth_api(make_user("other"))
    assert other.get(f"/api/orders/{oid}").status_code == 404
    assert other.patch(f"/api/orders/{oid}", {"price": 600}, format="json").status_code == 404
    assert other.post(f"/api/orders/{oid}/cancel").status_code == 404
    assert other.get(f"/api/orders/{oid}/updates").status_code == 404
    assert other.get("/api/orders").json()["count"] == 0


def test_executions_api_fills_idempotently_and_trades_list(client, staff):
    oid = client.post("/api/orders", LIMIT, format="json").json()["orderId"]
    fill = {"orderId": oid, "execId": "f1", "type": "fill", "quantity": 4, "price": 625.5}
    first = staff.post("/api/internal/executions", fill, format="json").json()
    replay = staff.post("/api/internal/executions", fill, format="json").json()
    assert first["applied"] is True and replay["applied"] is False
    assert replay["order"]["filledQuantity"] == 4 and replay["order"]["orderStatus"] == "OPEN"
    over = staff.post("/api/internal/executions", {**fill, "execId": "f2", "quantity": 7}, format="json")
    assert over.status_code == 409 and over.json()["code"] == "overfill"
    missing = staff.post("/api/internal/executions", {**fill, "execId": "f3", "quantity": None}, format="json")
    assert missing.status_code == 400
    unknown = staff.post("/api/internal/executions", {**fill, "execId": "f4", "orderId": "999999999"}, format="json")
    assert unknown.status_code == 404
    trades = client.get("/api/trades").json()
    assert trades["count"] == 1 and trades["results"][0]["execId"] == "f1" and trades["results"][0]["quantity"] == 4


def test_executions_api_refuses_a_fill_worse_than_the_orders_limit(client, staff, user):
    """A risk review: a BUY limit at 625.5 reported filled at 999,999,999,999,999 was booked (its fee
    alone took the balance to -5e16). A limit never fills at a worse price: 400, nothing booked."""
    from ledger.models import Account

    oid = client.post("/api/orders", LIMIT, format="json").json()["orderId"]
    balance = Account.objects.get(user=user).balance
    fill = {"orderId": oid, "execId": "w1", "type": "fill", "quantity": 10, "price": "999999999999999"}
    worse = staff.post("/api/internal/executions", fill, format="json")
    assert worse.status_code == 400 and worse.json()["fields"]["price"][0]["message"] == (
        "a BUY limit at 625.5 cannot fill above it"
    )
    assert Account.objects.get(user=user).balance == balance and not Trade.objects.filter(order__order_id=oid).exists()
    url = "/api/internal/executions"
    at = staff.post(url, {**fill, "execId": "w2", "quantity": 4, "price": "625.5"}, format="json")
    better = staff.post(url, {**fill, "execId": "w3", "quantity": 6, "price": "600"}, format="json")
    assert at.status_code == better.status_code == 200 and better.json()["order"]["orderStatus"] == "COMPLETE"


def test_a_fill_at_a_limit_the_order_had_before_a_modification_is_booked(client, staff, user):
    """The review of the rule above: the venue filled a BUY limit at 630 before the user's change to
    620 reached it, and its honest report was refused (so never booked): any limit the order has
    had goes, a price worse than all of them does not."""
    order = {**LIMIT, "price": "630", "quantity": 10}
    oid = client.post("/api/orders", order, format="json").json()["orderId"]
    url = "/api/internal/executions"
    assert staff.post(url, {"orderId": oid, "execId": "m0", "type": "accept"}, format="json").status_code == 200
    assert client.patch(f"/api/orders/{oid}", {"price": "620"}, format="json").status_code == 200
    fill = {"orderId": oid, "execId": "m1", "type": "fill", "quantity": 4, "price": "630"}
    assert staff.post(url, fill, format="json").status_code == 200  # at the limit it had
    worse = staff.post(url, {**fill, "execId": "m2", "price": "630.5"}, format="json")
    assert worse.status_code == 400 and worse.json()["fields"]["price"][0]["message"] == (
        "a BUY limit at 630 cannot fill above it"
    )
    assert Trade.objects.filter(order__order_id=oid).count() == 1


def test_executions_api_is_staff_or_service_key(client, api, settings):
    oid = client.post("/api/orders", LIMIT, format="json").json()["orderId"]
    body = {"orderId": oid, "execId": "x1", "type": "reject", "reason": "Insufficient funds"}
    assert client.post("/api/internal/executions", body, format="json").status_code == 403
    settings.AXISOR_SERVICE_KEY = "venue-key"
    resp = api.post("/api/internal/executions", body, format="json", HTTP_X_SERVICE_KEY="venue-key")
    assert resp.status_code == 200
    assert (
        resp.json()["order"]["orderStatus"] == "REJECTED"
        and resp.json()["order"]["rejectionReason"] == "Insufficient funds"
    )


def test_sessions_store_only_a_hash_and_can_be_revoked(client):
    resp = client.post("/api/auth/sessions")
    assert resp.status_code == 201
    body = resp.json()
    assert set(body) == {"session", "token", "expiresAt"} and body["expiresAt"].endswith("Z")
    stored = OrderSession.objects.get(session=body["session"])
    assert body["token"] not in stored.token_hash and len(stored.token_hash) == 64
    assert client.delete(f"/api/auth/sessions/{body['session']}").status_code == 204
    stored.refresh_from_db()
    assert stored.revoked_at is not None


def test_a_pending_order_can_be_withdrawn_and_ends_cancelled(make_user, instruments):
    """Withdrawn is CANCELLED, whatever the state: a client reads REJECTED as an error."""
    client = auth_api(make_user())
    body = {"tradingSymbol": "SBIN-EQ", "orderType": "LIMIT", "transactionType": "BUY", "quantity": 1, "price": 600}
    oid = client.post("/api/orders", body, format="json").json()["orderId"]
    cancelled = client.post(f"/api/orders/{oid}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["orderStatus"] == "CANCELLED"
    assert client.post(f"/api/orders/{oid}/cancel").status_code == 409  # once only


def test_an_order_may_be_modified_a_bounded_number_of_times(client, settings):
    settings.AXISOR_ORDERS = {**settings.AXISOR_ORDERS, "MAX_MODIFICATIONS": 3}
    oid = client.post("/api/orders", LIMIT, format="json").json()["orderId"]
    for n in range(3):
        assert client.patch(f"/api/orders/{oid}", {"price": 620 + n}, format="json").status_code == 200
    refused = client.patch(f"/api/orders/{oid}", {"price": 610}, format="json")
    assert refused.status_code == 409 and refused.json()["code"] == "limit_exceeded"
    order = client.get(f"/api/orders/{oid}").json()
    assert (order["price"], order["version"]) == (622, 4)  # the refused change changed nothing
    assert len(client.get(f"/api/orders/{oid}/updates").json()) == 4
    assert client.post(f"/api/orders/{oid}/cancel").status_code == 200  # a cancel is always possible


def test_modifications_count_against_the_order_rate_cap(client, settings):
    settings.AXISOR_CAPS = {**settings.AXISOR_CAPS, "ORDERS_PER_MINUTE": {"basic": 3, "premium": 3, "enterprise": 3}}
    oid = client.post("/api/orders", LIMIT, format="json").json()["orderId"]
    assert client.patch(f"/api/orders/{oid}", {"price": 620}, format="json").status_code == 200
    assert client.patch(f"/api/orders/{oid}", {"price": 621}, format="json").status_code == 200
    throttled = client.patch(f"/api/orders/{oid}", {"price": 622}, format="json")
    assert throttled.status_code == 429 and throttled.json()["code"] == "throttled" and throttled["Retry-After"]
    assert client.post(f"/api/orders/{oid}/cancel").status_code == 200  # never throttled
