"""REST: /api/positions (list, history, close), /api/margin-guard (GET/PUT, validation),
/api/margin-guard/executions."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from broadcast.models import EventLog
from margin.models import MarginGuardConfig, Position
from tests.conftest import auth_api
from tests.margin.conftest import tick
from tests.orders.factories import execute

pytestmark = pytest.mark.django_db


def test_margin_guard_defaults_and_update(make_user, instruments):
    user = make_user()
    api = auth_api(user)
    got = api.get("/api/margin-guard")
    assert got.status_code == 200
    assert got.json() == {"enabled": True, "threshold": 0.85, "action": "notify", "cooldownSeconds": 300}
    put = api.put(
        "/api/margin-guard",
        {"enabled": True, "threshold": 0.9, "action": "close_position", "cooldownSeconds": 60},
        format="json",
    )
    assert put.status_code == 200, put.json()
    assert put.json() == {"enabled": True, "threshold": 0.9, "action": "close_position", "cooldownSeconds": 60}
    partial = api.put("/api/margin-guard", {"enabled": False}, format="json")
    assert partial.json() == {"enabled": False, "threshold": 0.9, "action": "close_position", "cooldownSeconds": 60}
    assert api.get("/api/margin-guard").json() == partial.json()


@pytest.mark.parametrize(
    "body, field",
    [
        ({"threshold": 0}, "threshold"),
        ({"threshold": 1}, "threshold"),
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": -0.2}, "threshold"),
        ({"threshold": "abc"}, "threshold"),
        ({"threshold": True}, "threshold"),
        ({"threshold": "NaN"}, "threshold"),
        ({"threshold": "0.0_5"}, "threshold"),  # Decimal reads 0.05 (the diff review)
        ({"threshold": "\u0660.\u0660\u0665"}, "threshold"),  # Arabic-Indic 0.05
        ({"action": "panic"}, "action"),
        ({"cooldownSeconds": -1}, "cooldownSeconds"),
        ({"cooldownSeconds": 1.5}, "cooldownSeconds"),
        ({"cooldownSeconds": "10"}, "cooldownSeconds"),
        ({"cooldownSeconds": 10**9}, "cooldownSeconds"),
        ({"enabled": "yes"}, "enabled"),
        ({"enabled": 1}, "enabled"),
        ({"enabled": True, "colour": "red"}, "colour"),
        ({}, "non_field_errors"),
    ],
)
def test_margin_guard_rejects_bad_values_and_changes_nothing(make_user, instruments, body, field):
    user = make_user()
    api = auth_api(user)
    api.put("/api/margin-guard", {"threshold": 0.8}, format="json")
    bad = api.put("/api/margin-guard", body, format="json")
    assert bad.status_code == 400, bad.json()
    assert bad.json()["code"] == "validation_error" and field in bad.json()["fields"]
    assert MarginGuardConfig.objects.get(user=user).threshold == D("0.8")


def test_bad_json_body_is_a_400(make_user, instruments):
    api = auth_api(make_user())
    bad = api.generic("PUT", "/api/margin-guard", "[1, 2]", content_type="application/json")
    assert bad.status_code == 400


def test_threshold_change_moves_the_guard_price_of_open_positions(make_user, trade):
    user = make_user()
    trade(user, "BUY", "1", "100", leverage=10)
    assert Position.objects.get(user=user).guard_price == D("98.575")
    auth_api(user).put("/api/margin-guard", {"threshold": 0.5}, format="json")
    assert Position.objects.get(user=user).guard_price == D("95.25")
    auth_api(user).put("/api/margin-guard", {"enabled": False}, format="json")
    assert Position.objects.get(user=user).guard_price is None


def test_positions_list_open_and_history(make_user, trade):
    user, other = make_user(), make_user()
    trade(user, "BUY", "1", "100", leverage=10)
    trade(user, "SELL", "2", "2000", symbol="ETH_USD", leverage=5)
    trade(user, "BUY", "2", "1990", symbol="ETH_USD", leverage=5)  # closes ETH with pnl 20
    trade(other, "BUY", "1", "100")
    tick("BTC_USD", 102)
    api = auth_api(user)
    listed = api.get("/api/positions").json()["results"]
    assert len(listed) == 1
    p = listed[0]
    assert p["symbol"] == "BTC_USD" and p["side"] == "long" and p["status"] == "open"
    assert p["id"].startswith("pos_") and p["entryPrice"] == 100 and p["currentPrice"] == 102
    assert p["size"] == 100 and p["margin"] == 10 and p["leverage"] == 10 and p["quantity"] == 1
    assert p["pnl"] == 2 and p["unrealizedPnl"] == 2 and p["realizedPnl"] == 0
    assert p["liquidationPrice"] == 90.5 and p["distanceToLiquidation"] == pytest.approx(1.2105, abs=1e-4)
    assert p["isAtRisk"] is False
    closed = api.get("/api/positions?status=closed").json()["results"]
    assert [(c["symbol"], c["realizedPnl"], c["closeReason"]) for c in closed] == [("ETH_USD", 20, "order")]
    assert api.get("/api/positions?status=bogus").status_code == 400
    assert api.get(f"/api/positions/{p['id']}").json()["id"] == p["id"]
    theirs = Position.objects.get(user=other)
    assert api.get(f"/api/positions/{theirs.public_id}").status_code == 404


def test_close_places_a_market_order_and_order_updates_flow(make_user, trade):
    user = make_user()
    trade(user, "SELL", "2", "2000", symbol="ETH_USD", leverage=5)
    position = Position.objects.get(user=user)
    api = auth_api(user)
    before = EventLog.objects.filter(user=user, type="order_update").count()
    closed = api.post(f"/api/positions/{position.public_id}/close")
    assert closed.status_code == 202, closed.json()
    order = closed.json()["order"]
    assert order["transactionType"] == "BUY" and order["orderType"] == "MARKET" and order["quantity"] == 2
    assert order["orderStatus"] == "PENDING" and closed.json()["position"]["status"] == "open"
    again = api.post(f"/api/positions/{position.pk}/close")
    assert again.status_code == 409 and again.json()["code"] == "close_pending"
    from orders.models import Order

    execute(Order.objects.get(order_id=order["orderId"]), "fill", quantity="2", price="1950")
    position.refresh_from_db()
    assert position.status == "closed" and position.close_reason == "manual" and position.realized_pnl == 100
    updates = [e.payload["data"]["updateType"] for e in EventLog.objects.filter(user=user, type="order_update")]
    assert updates[before:] == ["ORDER_PLACED", "TRADE_UPDATE", "ORDER_EXECUTED"]
    done = api.post(f"/api/positions/{position.public_id}/close")
    assert done.status_code == 409 and done.json()["code"] == "position_closed"


def test_close_of_someone_elses_position_is_404(make_user, trade):
    owner, intruder = make_user(), make_user()
    trade(owner, "BUY", "1", "100")
    position = Position.objects.get(user=owner)
    assert auth_api(intruder).post(f"/api/positions/{position.public_id}/close").status_code == 404
    assert auth_api(intruder).post("/api/positions/pos_999999/close").status_code == 404
    assert Position.objects.get(pk=position.pk).close_order is None


def test_executions_are_listed_newest_first(make_user, trade):
    user = make_user()
    trade(user, "BUY", "1", "100", leverage=10)
    tick("BTC_USD", 98)
    tick("BTC_USD", 99.6)
    tick("BTC_USD", 98)
    body = auth_api(user).get("/api/margin-guard/executions").json()
    assert body["count"] == 2
    first, second = body["results"]
    assert first["executedAt"] >= second["executedAt"]
    assert first["summary"]["positionsChecked"] == 1 and first["action"] == "notification_sent"
    assert auth_api(make_user()).get("/api/margin-guard/executions").json()["count"] == 0


def test_order_leverage_is_validated_over_rest(make_user, instruments):
    api = auth_api(make_user(tier="enterprise"))  # up to BTC_USD's own cap, 100 (tiers: tests/risk)
    base = {"tradingSymbol": "BTC_USD", "orderType": "MARKET", "transactionType": "BUY", "quantity": "0.01"}
    for bad in (0, 101, "x", 2.5):
        r = api.post("/api/orders", {**base, "leverage": bad}, format="json")
        assert r.status_code == 400 and "leverage" in r.json()["fields"], (bad, r.json())
    ok = api.post("/api/orders", {**base, "leverage": 100}, format="json")
    assert ok.status_code == 201 and ok.json()["leverage"] == 100
