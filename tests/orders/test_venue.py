"""The paper venue against a price source the test controls."""

from __future__ import annotations

from decimal import Decimal

import pytest

from margin.venue import LIQUIDITY_LOTS_PER_STEP, PaperVenue
from orders.models import OrderStatus
from orders.services import order_cancel, order_modify
from tests.orders.factories import place

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("instruments")]


class Prices:
    def __init__(self, **prices: str) -> None:
        self.prices = {k.replace("__", "-"): Decimal(v) for k, v in prices.items()}
        self.ranges: dict[str, tuple[Decimal, Decimal]] = {}

    def latest(self, symbol: str) -> Decimal | None:
        return self.prices.get(symbol)

    def path(self, symbol: str) -> tuple[Decimal, Decimal]:
        """The low and high traded since the last step (the last price alone unless a test says)."""
        last = self.prices[symbol]
        return self.ranges.get(symbol, (last, last))


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


def test_limit_rests_until_price_crosses_then_fills_at_its_limit(user):
    prices = Prices(SBIN__EQ="630.00")
    order = place(user, order_type="LIMIT", side="BUY", price="625.50", quantity="10")
    venue = PaperVenue(prices)
    venue.step()
    order.refresh_from_db()
    assert order.order_status == OrderStatus.OPEN
    venue.step()
    order.refresh_from_db()
    assert order.order_status == OrderStatus.OPEN and order.filled_quantity == 0
    prices.prices["SBIN-EQ"] = Decimal("624.00")  # the market gaps through the resting limit
    venue.step()
    order.refresh_from_db()
    assert order.order_status == OrderStatus.COMPLETE and order.average_price == Decimal("625.5")
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


def test_an_arriving_marketable_limit_gets_the_better_price(user):
    prices = Prices(SBIN__EQ="624.00")
    order = place(user, order_type="LIMIT", side="BUY", price="625.50", quantity="10")
    PaperVenue(prices).step()
    order.refresh_from_db()
    assert order.order_status == OrderStatus.COMPLETE and order.average_price == Decimal("624")


def test_the_limit_that_counts_is_the_one_at_the_moment_of_the_fill(user):
    """A BUY lowered from 630 to 620 while the price is 625 never fills at 625."""
    prices = Prices(SBIN__EQ="640.00")
    order = place(user, order_type="LIMIT", side="BUY", price="630", quantity="10")
    venue = PaperVenue(prices)
    venue.step()  # accepted, resting
    order_modify(order=order, price=Decimal("620"))
    prices.prices["SBIN-EQ"] = Decimal("625.00")
    venue.step()
    order.refresh_from_db()
    assert order.order_status == OrderStatus.OPEN and order.filled_quantity == 0


def test_stops_and_limits_are_evaluated_along_the_path_not_the_last_tick(user):
    prices = Prices(SBIN__EQ="630.00")
    stop = place(user, order_type="SL-M", side="SELL", price=None, trigger="620", quantity="5")
    limit = place(user, order_type="LIMIT", side="BUY", price="618", quantity="5")
    venue = PaperVenue(prices)
    venue.step()  # both accepted and working
    prices.ranges["SBIN-EQ"] = (Decimal("615"), Decimal("631"))  # dipped to 615, back at 630
    venue.step()
    stop.refresh_from_db()
    limit.refresh_from_db()
    assert stop.order_status == OrderStatus.OPEN  # triggered by the dip
    assert limit.order_status == OrderStatus.COMPLETE and limit.average_price == Decimal("618")


def test_a_limit_raised_into_a_dip_that_is_over_does_not_fill_at_the_dip(user):
    """Outside review (twelfth session): the path's ticks were checked against the limit as it is
    now, so a resting BUY raised to 620 after the market dipped to 615 and came back to 630 filled
    at 620, a price the market never traded at while that limit existed. Modified since the last
    step, it is judged as arriving: against the last price alone, and filled at the better of its
    limit and the market once it is marketable."""
    prices = Prices(SBIN__EQ="630.00")
    limit = place(user, order_type="LIMIT", side="BUY", price="600", quantity="5")
    stop = place(user, order_type="SL-M", side="SELL", price=None, trigger="610", quantity="5")
    untouched = place(user, order_type="LIMIT", side="BUY", price="618", quantity="5")
    venue = PaperVenue(prices)
    venue.step()  # all accepted and working
    prices.ranges["SBIN-EQ"] = (Decimal("615"), Decimal("631"))  # dipped to 615, back at 630
    order_modify(order=limit, price=Decimal("620"))  # raised into the dip after it was over
    order_modify(order=stop, trigger_price=Decimal("617"))  # likewise the stop's trigger
    venue.step()
    for order in (limit, stop, untouched):
        order.refresh_from_db()
    assert limit.order_status == OrderStatus.OPEN and limit.filled_quantity == 0
    assert stop.order_status == OrderStatus.TRIGGER_PENDING
    assert untouched.order_status == OrderStatus.COMPLETE  # unmodified: the path counts for it
    prices.ranges.clear()
    venue.step()  # nothing new traded: still not filled
    limit.refresh_from_db()
    assert limit.order_status == OrderStatus.OPEN
    order_modify(order=limit, price=Decimal("640"))  # modified into the market
    venue.step()
    limit.refresh_from_db()
    assert limit.order_status == OrderStatus.COMPLETE and limit.average_price == Decimal("630")
    prices.prices["SBIN-EQ"] = Decimal("616.00")  # the market now reaches the stop's new trigger
    venue.step()
    stop.refresh_from_db()
    assert stop.order_status != OrderStatus.TRIGGER_PENDING


def test_a_limit_changed_while_a_step_runs_is_judged_on_the_last_price_for_one_step_more(user):
    """Outside review of the first fix: a change made during a step, after that step's prices were
    read, is noticed by that step; the next step's path still holds ticks from before the change
    (it starts where that step's prices were read), so it is judged on the last price there too."""
    prices = Prices(SBIN__EQ="630.00")
    limit = place(user, order_type="LIMIT", side="BUY", price="600", quantity="5")
    venue = PaperVenue(prices)
    venue.step()  # accepted, resting at 600
    order_modify(order=limit, price=Decimal("620"))  # during step 2, before its turn (as far as it knows)
    venue.step()  # notices the change: last price only
    prices.ranges["SBIN-EQ"] = (Decimal("615"), Decimal("631"))  # step 3's path: its dip predates the change
    venue.step()
    limit.refresh_from_db()
    assert limit.order_status == OrderStatus.OPEN and limit.filled_quantity == 0
    venue.step()  # the path from here on is after the change: it counts again
    limit.refresh_from_db()
    assert limit.order_status == OrderStatus.COMPLETE and limit.average_price == Decimal("620")


@pytest.mark.parametrize(
    ("side", "limit", "trigger", "before", "fired"),
    [("BUY", "630", "625", "620.00", "626.00"), ("SELL", "610", "615", "620.00", "614.00")],
)
def test_a_stop_limit_that_fires_into_the_market_fills_at_the_market_not_its_limit(
    user, side, limit, trigger, before, fired
):
    """A risk review: a BUY stop-limit 625/630 fired at 626 filled at 630, 4 worse than the market,
    as if it had rested at 630 while the market crossed it. It arrives when it fires."""
    prices = Prices(SBIN__EQ=before)
    order = place(user, order_type="SL", side=side, price=limit, trigger=trigger, quantity="5")
    venue = PaperVenue(prices)
    venue.step()
    prices.prices["SBIN-EQ"] = Decimal(fired)
    venue.step()  # fired → OPEN
    venue.step()  # fills as an arriving limit: the better of its limit and the last price
    order.refresh_from_db()
    assert order.order_status == OrderStatus.COMPLETE and order.average_price == Decimal(fired)


def test_a_stop_limit_the_market_left_behind_when_it_fired_rests_at_its_limit(user):
    prices = Prices(SBIN__EQ="620.00")
    order = place(user, order_type="SL", side="BUY", price="627", trigger="625", quantity="5")
    venue = PaperVenue(prices)
    venue.step()
    prices.prices["SBIN-EQ"] = Decimal("628.00")  # fires, and is already above the limit
    venue.step()
    venue.step()
    order.refresh_from_db()
    assert order.order_status == OrderStatus.OPEN and order.filled_quantity == 0
    prices.ranges["SBIN-EQ"] = (Decimal("626.00"), Decimal("628.00"))  # dips through 627: it rested there
    venue.step()
    order.refresh_from_db()
    assert order.order_status == OrderStatus.COMPLETE and order.average_price == Decimal("627")


def test_an_after_market_limit_the_open_is_through_fills_at_the_open_not_its_limit(user):
    """A BUY AMO at 630 with the market opening at 600 filled at 630 (the same review)."""
    prices = Prices(SBIN__EQ="630.00")
    order = place(user, order_type="LIMIT", side="BUY", price="630", quantity="5", amo=True)
    venue = PaperVenue(prices)
    venue.step()  # AFTER_MARKET_ORDER_REQ_RECEIVED
    prices.prices["SBIN-EQ"] = Decimal("600.00")  # the session opens at 600
    venue.step()  # opens
    venue.step()  # fills as an arriving limit
    order.refresh_from_db()
    assert order.order_status == OrderStatus.COMPLETE and order.average_price == Decimal("600")
