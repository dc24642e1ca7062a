"""The paper venue against a price source the test controls."""

from __future__ import annotations

from decimal import Decimal

import pytest

from margin.venue import LIQUIDITY_LOTS_PER_STEP, PaperVenue
from orders.models import OrderStatus
from orders.services import order_cancel
from tests.orders.factories import place

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("instruments")]


class Prices:
    def __init__(self, **prices: str) -> None:
        self.prices = {k.replace("__", "-"): Decimal(v) for k, v in prices.items()}

    def latest(self, symbol: str) -> Decimal | None:
        return self.prices.get(symbol)


@pytest.fixture
def user(make_user):
    return make_user("paper")


def kinds(order):
    return list(order.updates.order_by("version").values_list("update_type", flat=True))


def test_market_order_fills_at_once_at_market(user):
    prices = Prices(SBIN__EQ="626.00")
    order = place(user, order_type="MARKET", price=None, quantity="10")
    PaperVenue(prices).step()
    order.refresh_from_db()
    assert order.order_status == OrderStatus.COMPLETE and order.average_price == Decimal("626")
    assert kinds(order) == ["ORDER_PLACED", "TRADE_UPDATE", "ORDER_EXECUTED"]


def test_limit_rests_until_price_crosses_then_fills_no_worse_than_limit(user):
    prices = Prices(SBIN__EQ="630.00")
    order = place(user, order_type="LIMIT", side="BUY", price="625.50", quantity="10")
    venue = PaperVenue(prices)
    venue.step()
    order.refresh_from_db()
    assert order.order_status == OrderStatus.OPEN
    venue.step()
    order.refresh_from_db()
    assert order.order_status == OrderStatus.OPEN and order.filled_quantity == 0
    prices.prices["SBIN-EQ"] = Decimal("624.00")
    venue.step()
    order.refresh_from_db()
    assert order.order_status == OrderStatus.COMPLETE and order.average_price == Decimal("624")
    assert kinds(order) == ["ORDER_PLACED", "ORDER_STATUS", "TRADE_UPDATE", "ORDER_EXECUTED"]


def test_stop_market_triggers_then_fills(user):
    prices = Prices(SBIN__EQ="620.00")
    order = place(user, order_type="SL-M", side="BUY", price=None, trigger="625", quantity="5")
    venue = PaperVenue(prices)
    venue.step()
    order.refresh_from_db()
    assert order.order_status == OrderStatus.TRIGGER_PENDING
    venue.step()
    order.refresh_from_db()
    assert order.order_status == OrderStatus.TRIGGER_PENDING
    prices.prices["SBIN-EQ"] = Decimal("626.00")
    venue.step()  # trigger → OPEN
    venue.step()  # fill
    order.refresh_from_db()
    assert order.order_status == OrderStatus.COMPLETE
    assert kinds(order) == ["ORDER_PLACED", "ORDER_STATUS", "ORDER_STATUS", "TRADE_UPDATE", "ORDER_EXECUTED"]


def test_large_order_fills_in_parts(user):
    prices = Prices(SBIN__EQ="626.00")
    quantity = LIQUIDITY_LOTS_PER_STEP * 2 + 7
    order = place(user, order_type="MARKET", price=None, quantity=str(quantity))
    venue = PaperVenue(prices)
    for _ in range(3):
        venue.step()
    order.refresh_from_db()
    assert order.order_status == OrderStatus.COMPLETE and order.trades.count() == 3
    assert kinds(order).count("ORDER_PARTIAL") == 2


def test_cancelled_order_is_left_alone_and_amo_opens_next_step(user):
    prices = Prices(SBIN__EQ="630.00")
    resting = place(user, order_type="LIMIT", price="600", quantity="1")
    amo = place(user, order_type="LIMIT", price="600", quantity="1", amo=True)
    venue = PaperVenue(prices)
    venue.step()
    order_cancel(order=resting)
    venue.step()
    resting.refresh_from_db()
    amo.refresh_from_db()
    assert resting.order_status == OrderStatus.CANCELLED and resting.trades.count() == 0
    assert amo.order_status == OrderStatus.OPEN
    assert kinds(amo) == ["ORDER_PLACED", "ORDER_STATUS", "ORDER_STATUS"]
