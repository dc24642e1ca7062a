"""A resting SELL limit modified into the market: the venue fills it at the market (the better of its
new limit and the last price), so from the modification on it holds what placing the same order
would hold, max(limit, last) ÷ leverage and the fee, and a modification the free margin cannot fund
is refused and changes nothing. Before, the modification was checked, and held, at its new limit,
below the market: under-reserved until the venue's next step filled it at the market."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from margin.account import account_figures, order_amend, order_submit
from orders.models import Order
from tests.conftest import auth_api
from tests.margin.conftest import tick
from tests.orders.factories import execute

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("instruments")]


def submit(user, side: str, quantity: str, price: str, *, leverage: int = 10, order_type: str = "LIMIT", **kw):
    return order_submit(
        user=user,
        trading_symbol="BTC_USD",
        exchange=None,
        order_type=order_type,
        transaction_type=side,
        quantity=D(quantity),
        price=D(price),
        leverage=leverage,
        **kw,
    )


def resting_sell(user, quantity: str = "1", price: str = "41000") -> Order:
    """A SELL limit above the market, accepted by the venue: it rests (OPEN)."""
    order = submit(user, "SELL", quantity, price)
    assert order.order_status == "PENDING", order.rejection_reason
    execute(order, "accept")
    order.refresh_from_db()
    assert order.order_status == "OPEN"
    return order


def test_a_resting_sell_modified_into_the_market_holds_what_placing_it_would(make_user):
    tick("BTC_USD", 40000)
    user, fresh = make_user(balance=100_000), make_user(balance=100_000)
    order = resting_sell(user)
    assert account_figures(user_id=user.pk).order_margin == D("4120.5")  # 41,000 ÷ 10 and its 20.50 fee
    order_amend(order=order.order_id, price=D("39000"))  # below the market: it fills at 40,000
    submit(fresh, "SELL", "1", "39000")  # the same order, placed
    held = account_figures(user_id=user.pk).order_margin
    assert held == account_figures(user_id=fresh.pk).order_margin == D("4020")  # at 40,000, not 39,000


def test_a_modification_into_the_market_the_free_margin_cannot_fund_is_refused(make_user):
    tick("BTC_USD", 40000)
    user = make_user(balance=4130)
    order = resting_sell(user)  # holds 4,120.50 of 4,130
    api = auth_api(user)
    # SELL 1.03 at 39,000 fills at the market: 1.03 × (4,000 + 20) = 4,140.60, more than the 4,130
    # the account has (it was checked at 39,000: 4,037.11, less than the order held, and accepted).
    answer = api.patch(f"/api/orders/{order.order_id}", {"quantity": 1.03, "price": 39000}, format="json")
    assert answer.status_code == 409, answer.json()
    assert answer.json()["code"] == "insufficient_funds"
    assert answer.json()["detail"].startswith("Insufficient funds: the change needs")
    order.refresh_from_db()
    assert (order.quantity, order.price, order.version) == (D(1), D(41000), 2)  # placed, accepted: unchanged
    assert account_figures(user_id=user.pk).order_margin == D("4120.5")
    # what the account can fund goes through: 1.02 × 4,020 = 4,100.40
    ok = api.patch(f"/api/orders/{order.order_id}", {"quantity": 1.02, "price": 39000}, format="json")
    assert ok.status_code == 200, ok.json()
    assert account_figures(user_id=user.pk).order_margin == D("4100.4")


def test_the_venue_fills_the_modified_sell_at_the_market_within_what_it_held(make_user):
    from margin.venue import PaperVenue
    from tests.orders.test_venue import Prices

    tick("BTC_USD", 40000)
    user = make_user(balance=210)
    venue = PaperVenue(Prices(BTC_USD="40000"))
    order = submit(user, "SELL", "0.05", "41000")  # 0.05 × 4,120.50 = 206.03 held
    venue.step()  # accepted: rests at 41,000
    order.refresh_from_db()
    assert order.order_status == "OPEN"
    order_amend(order=order.order_id, price=D("39000"))
    held = account_figures(user_id=user.pk)
    venue.step()  # modified into the market: filled at 40,000, in full
    order.refresh_from_db()
    assert (order.order_status, order.filled_quantity, order.average_price) == ("COMPLETE", D("0.05"), D(40000))
    after = account_figures(user_id=user.pk)
    # what it held is what its fill took: the short's margin (200) and the fee (1)
    assert after.position_margin + (held.balance - after.balance) == held.order_margin == D(201)
    assert after.available == D(9)


def test_a_resting_sell_still_holds_its_limit_while_above_the_market(make_user):
    tick("BTC_USD", 40000)
    user = make_user(balance=100_000)
    order = resting_sell(user, price="42000")
    order_amend(order=order.order_id, price=D("41500"))  # still above the market: it rests there
    assert account_figures(user_id=user.pk).order_margin == D("4170.75")  # 41,500 ÷ 10 and 20.75


def test_a_buy_modified_into_the_market_holds_its_limit(make_user):
    tick("BTC_USD", 40000)
    user = make_user(balance=100_000)
    order = submit(user, "BUY", "1", "39000")
    execute(order, "accept")
    order_amend(order=order.order_id, price=D("41000"))  # fills at 40,000 or better: 41,000 covers it
    assert account_figures(user_id=user.pk).order_margin == D("4120.5")
