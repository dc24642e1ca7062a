"""Review 14: a SELL the venue fills as an arriving order, at the better
of its limit and the market, while its margin is held at its limit: a stop-limit that fired, a
resting limit modified into the market. The pre-trade check lets the difference be spent, and the
venue then fills part of the order and cancels the rest for funds (the case commit aa524eb fixed
for a new order only). The stop-limit is fixed; the modified limit is a reproduction, not fixed."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from margin.account import INSUFFICIENT_FUNDS, account_figures, order_amend
from margin.venue import PaperVenue
from tests.conftest import fund
from tests.margin.conftest import tick
from tests.margin.test_account import submit
from tests.orders.test_venue import Prices

pytestmark = pytest.mark.django_db


def test_a_sell_stop_limit_holds_the_margin_of_its_fill_at_its_trigger(make_user, instruments):
    """A SELL stop-limit arrives when it fires (4ca1e59): it fills at the better of its limit and the
    market, then at its trigger. Held at its limit, a stop 39,900 limit 39,000 on 196 was accepted,
    fired, filled 0.048 at 39,900 and was cancelled for funds."""
    user = make_user(balance=196)
    tick("BTC_USD", 40000)
    order = submit(user, "SELL", "0.05", order_type="SL", price=D("39000"), trigger_price=D("39900"))
    assert order.rejection_reason == (
        f"{INSUFFICIENT_FUNDS}: the order needs 200.50 USD of margin and fees, 196.00 USD is available"
    )
    fund(user.pk, D("4.4975"))  # 0.05 × (3,990 + 19.95): the fill at its trigger, carried in full
    order = submit(user, "SELL", "0.05", order_type="SL", price=D("39000"), trigger_price=D("39900"))
    assert order.order_status == "PENDING"
    prices = Prices(BTC_USD="40000")
    venue = PaperVenue(prices)
    venue.step()
    prices.prices["BTC_USD"] = D("39900")  # fires, the market above its limit: it fills at 39,900
    for _ in range(3):
        venue.step()
    order.refresh_from_db()
    assert (order.order_status, order.average_price) == ("COMPLETE", D(39900))
    assert account_figures(user_id=user.pk).available == 0


@pytest.mark.xfail(strict=True, reason="review 14: not fixed")
def test_a_resting_sell_limit_modified_into_the_market_holds_what_its_fill_needs(make_user, instruments):
    user = make_user(balance="211.05")
    tick("BTC_USD", 40000)
    order = submit(user, "SELL", "0.05", price=D("42000"))  # holds 211.05: rests above the market
    PaperVenue(Prices(BTC_USD="40000")).step()
    order.refresh_from_db()
    assert order.order_status == "OPEN"
    order_amend(order=order.order_id, price=D("39000"))  # into the market: the venue fills it at 40,000
    # seen: 15.075 available (held at 39,000), where its fill at 40,000 leaves 10.05
    assert account_figures(user_id=user.pk).available <= D("211.05") - D("201")
