"""A SELL the venue fills as an arriving order, at the better of its limit and the market, holds
the margin of that fill: held at its limit, the pre-trade check let the difference be spent, and
the venue then filled part of the order and cancelled the rest for funds (the session's review)."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from margin.account import INSUFFICIENT_FUNDS, account_figures
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
