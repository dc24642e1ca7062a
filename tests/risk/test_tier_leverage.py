"""Leverage is capped per account tier as well as per instrument (``CAP_LEVERAGE_<TIER>``: 20, 50
and 100 by default): the effective cap is the lower of the two, and an order above it is refused
with 400 ``validation_error`` on ``fields.leverage``, naming the cap, when it is placed and when a
working one is modified (after the account's tier went down) in a way that could add exposure.
Before, only the instrument's cap held: a basic account traded BTC_USD at 100x."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from orders.models import Order
from tests.conftest import auth_api
from tests.margin.conftest import tick

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("instruments")]

BODY = {"tradingSymbol": "BTC_USD", "orderType": "LIMIT", "transactionType": "BUY", "quantity": "0.01",
        "price": "40000"}  # fmt: skip


def leverage_error(answer) -> str:
    assert answer.status_code == 400, answer.json()
    assert answer.json()["code"] == "validation_error"
    return answer.json()["fields"]["leverage"][0]["message"]


@pytest.mark.parametrize(("tier", "cap"), [("basic", 20), ("premium", 50), ("enterprise", 100)])
def test_each_tier_places_up_to_its_cap_and_not_beyond(make_user, tier, cap):
    tick("BTC_USD", 40000)
    api = auth_api(make_user(tier=tier))
    assert api.post("/api/orders", {**BODY, "leverage": cap}, format="json").status_code == 201
    if cap < 100:  # BTC_USD's own cap is 100
        message = leverage_error(api.post("/api/orders", {**BODY, "leverage": cap + 1}, format="json"))
        assert message == f"must be between 1 and {cap} for BTC_USD ({tier} accounts may use at most {cap}x)"
    assert Order.objects.filter(leverage__gt=cap).count() == 0


def test_the_instruments_cap_holds_where_it_is_lower(make_user):
    api = auth_api(make_user(tier="enterprise"))
    body = {**BODY, "tradingSymbol": "SBIN-EQ", "price": "625.5", "quantity": "1", "leverage": 6}
    assert leverage_error(api.post("/api/orders", body, format="json")) == "must be between 1 and 5 for SBIN-EQ"


def test_the_seeds_example_leverage_works_for_every_tier(make_user):
    tick("BTC_USD", 40000)
    for tier in ("basic", "premium", "enterprise"):  # seed 000's order request: "leverage": 10
        answer = auth_api(make_user(tier=tier)).post("/api/orders", {**BODY, "leverage": 10}, format="json")
        assert answer.status_code == 201 and answer.json()["orderStatus"] == "PENDING"


def test_the_caps_are_settings(make_user, settings):
    settings.AXISOR_CAPS = {**settings.AXISOR_CAPS, "LEVERAGE": {"basic": 5, "premium": 0, "enterprise": 0}}
    tick("BTC_USD", 40000)
    basic, premium = auth_api(make_user()), auth_api(make_user(tier="premium"))
    assert "(basic accounts may use at most 5x)" in leverage_error(
        basic.post("/api/orders", {**BODY, "leverage": 6}, format="json")
    )
    assert premium.post("/api/orders", {**BODY, "leverage": 100}, format="json").status_code == 201  # 0: no cap


def test_a_modification_above_the_tiers_cap_is_refused_and_changes_nothing(make_user):
    tick("BTC_USD", 40000)
    user = make_user(tier="premium")
    api = auth_api(user)
    placed = api.post("/api/orders", {**BODY, "leverage": 50}, format="json").json()
    user.tier = "basic"  # downgraded while the order works
    user.save(update_fields=["tier"])
    url = f"/api/orders/{placed['orderId']}"
    for change in ({"quantity": "0.02"}, {"price": "40500"}):
        message = leverage_error(api.patch(url, change, format="json"))
        assert message == (
            "the order's leverage 50 is above the 20 basic accounts may use for BTC_USD:"
            " cancel it and place it again at 20 or less"
        )
    order = Order.objects.get(order_id=placed["orderId"])
    assert (order.quantity, order.price, order.version) == (D("0.01"), D(40000), 1)
    # taking risk off stays possible: a smaller quantity, and the cancel
    assert api.patch(url, {"quantity": "0.005"}, format="json").status_code == 200
    assert api.post(f"{url}/cancel").status_code == 200


def test_closing_a_position_opened_above_the_tiers_cap_stays_possible(make_user, trade):
    from margin.services import position_close

    tick("BTC_USD", 40000)
    user = make_user(tier="enterprise")
    trade(user, "BUY", "0.01", "40000", leverage=100)
    user.tier = "basic"
    user.save(update_fields=["tier"])
    (position,) = user.positions.filter(status="open")
    close = position_close(position=position)
    assert close.order_status == "PENDING" and close.reduce_only
