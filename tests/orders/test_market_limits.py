"""Limits an order meets before it is recorded (400, nothing stored): a limit price inside the band
around the last traded price, a stop whose trigger the market has not already crossed, a notional
within the maximum per order."""

from __future__ import annotations

import pytest

from margin.ticks import ticks_ingest
from orders.models import Order
from tests.conftest import auth_api

pytestmark = pytest.mark.django_db


def last(price: str) -> None:
    ticks_ingest([{"symbol": "BTC_USD", "price": price, "volume": "1"}])


def order(**kw) -> dict:
    return {"tradingSymbol": "BTC_USD", "orderType": "LIMIT", "transactionType": "BUY", "quantity": 1,
            "price": 40000, "leverage": 10, **kw}  # fmt: skip


@pytest.mark.parametrize(
    "body, field",
    [
        (order(price=35999.5), "price"),  # more than 10 % under 40,000
        (order(transactionType="SELL", price=44000.5), "price"),
        (order(orderType="SL-M", price=None, triggerPrice=39000), "triggerPrice"),  # a BUY stop below the market
        (order(orderType="SL-M", transactionType="SELL", price=None, triggerPrice=41000), "triggerPrice"),
        (order(orderType="SL", price=40000, triggerPrice=39500), "triggerPrice"),
        (order(quantity=3000), "quantity"),  # 120 M notional, above the 100 M maximum
    ],
)
def test_orders_outside_the_markets_limits_are_refused_and_not_recorded(make_user, instruments, body, field):
    last("40000")
    user = make_user()
    answer = auth_api(user).post("/api/orders", body, format="json")
    assert answer.status_code == 400 and field in answer.json()["fields"], answer.json()
    assert not Order.objects.filter(user=user).exists()


def test_orders_inside_the_limits_are_taken(make_user, instruments):
    last("40000")
    api = auth_api(make_user())
    for body in [order(price=36000), order(transactionType="SELL", price=44000),
                 order(orderType="SL-M", price=None, triggerPrice=41000),
                 order(orderType="SL-M", transactionType="SELL", price=None, triggerPrice=39000)]:  # fmt: skip
        assert api.post("/api/orders", body, format="json").status_code == 201, body


def test_a_modification_outside_the_band_is_refused(make_user, instruments):
    last("40000")
    api = auth_api(make_user())
    placed = api.post("/api/orders", order(), format="json").json()
    refused = api.patch(f"/api/orders/{placed['orderId']}", {"price": 30000}, format="json")
    assert refused.status_code == 400 and "price" in refused.json()["fields"]
    assert Order.objects.get(order_id=placed["orderId"]).price == 40000


def test_before_any_trade_only_the_notional_is_checked(make_user, instruments):
    api = auth_api(make_user())
    assert api.post("/api/orders", order(price=1000), format="json").status_code == 201  # no last price: no band
    assert (
        api.post("/api/orders", order(quantity=3000, price=None, orderType="MARKET"), format="json").status_code == 400
    )


def test_a_modification_of_the_quantity_alone_meets_the_notional_at_the_orders_own_price(make_user, instruments):
    # Outside review (twelfth session): a quantity-only modification was checked at the last price,
    # so a limit priced up to the band above it could grow 10 % past the maximum notional.
    from decimal import Decimal

    from django.core.exceptions import ValidationError

    from orders.services import order_modify
    from tests.orders.factories import place

    last("40000")
    sell = place(make_user(), symbol="BTC_USD", side="SELL", price="44000", quantity="2000")  # 88 M at its price
    with pytest.raises(ValidationError) as refused:
        order_modify(order=sell, quantity=Decimal("2400"))  # 105.6 M at 44,000 (96 M at the last price)
    assert "quantity" in refused.value.message_dict
    assert Order.objects.get(pk=sell.pk).quantity == 2000
    order_modify(order=sell, quantity=Decimal("2200"))  # 96.8 M: inside
