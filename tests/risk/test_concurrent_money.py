"""Double spends, tried for real: requests sent at the same moment from threads (each its own
PostgreSQL connection, released together by a barrier) through the REST API: two orders, two
withdrawals, an order and a withdrawal, a modification and an order, all spending the same
available margin; two closes of one position; a fill racing a close. Whatever the interleaving, at
most one of them may spend the money or place the close, and available never goes below zero.
Each race runs a few rounds (``ROUND``), as one interleaving may hide what the next shows."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from django.contrib.auth.models import Permission

from core.errors import Conflict
from ledger.models import Account, LedgerEntry
from margin.account import account_figures
from margin.services import position_close
from orders.models import LIVE, Order
from tests.conftest import auth_api
from tests.orders.factories import execute, place
from tests.orders.test_concurrency import race

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("instruments")]

ROUND = pytest.mark.parametrize("round_", range(4))
# BTC_USD before its first tick is priced at its reference price, 43,250.50: a BUY 1 LIMIT 43,000 at
# 10x holds 4,300 of margin and a 21.50 fee.
ORDER = {"tradingSymbol": "BTC_USD", "orderType": "LIMIT", "transactionType": "BUY", "quantity": "1",
         "price": "43000", "leverage": 10}  # fmt: skip
HOLDS = D("4321.5")


@pytest.fixture
def staff(make_user):
    user = make_user(staff=True, balance=0)
    user.user_permissions.add(Permission.objects.get(codename="add_ledgerentry"))
    return user


def settled(user) -> None:
    """Available never below zero, and the balance is the sum of the entries."""
    figures = account_figures(user_id=user.pk)
    assert figures.available >= 0, figures
    entries = sum((e.amount for e in LedgerEntry.objects.filter(user=user)), D(0))
    assert Account.objects.get(user=user).balance == entries


def accepted(response) -> bool:
    assert response.status_code == 201, response.content
    return response.json()["orderStatus"] != "REJECTED"


@ROUND
def test_two_orders_at_once_cannot_both_spend_the_same_margin(make_user, round_):
    user = make_user(balance=str(HOLDS * D("1.5")))
    first, second = auth_api(user), auth_api(user)
    results = race(
        lambda: first.post("/api/orders", ORDER, format="json"),
        lambda: second.post("/api/orders", ORDER, format="json"),
    )
    assert sorted(accepted(r) for r in results) == [False, True]
    settled(user)


@ROUND
def test_two_withdrawals_at_once_cannot_both_take_the_same_money(make_user, staff, round_):
    user = make_user(balance="1000")
    url = f"/api/account/{user.pk}/adjust"
    a, b = auth_api(staff), auth_api(staff)
    results = race(
        lambda: a.post(url, {"kind": "withdrawal", "amount": "600"}, format="json"),
        lambda: b.post(url, {"kind": "withdrawal", "amount": "600"}, format="json"),
    )
    assert sorted(r.status_code for r in results) == [201, 409]
    assert Account.objects.get(user=user).balance == D(400)
    settled(user)


@ROUND
def test_an_order_and_a_withdrawal_at_once_cannot_both_spend_the_same_margin(make_user, staff, round_):
    user = make_user(balance=str(HOLDS + 1000))
    trader, desk = auth_api(user), auth_api(staff)
    url = f"/api/account/{user.pk}/adjust"
    placed, withdrawn = race(
        lambda: trader.post("/api/orders", ORDER, format="json"),
        lambda: desk.post(url, {"kind": "withdrawal", "amount": "1500"}, format="json"),
    )
    assert accepted(placed) != (withdrawn.status_code == 201)
    settled(user)


@ROUND
def test_a_modification_and_an_order_at_once_cannot_both_spend_the_same_margin(make_user, round_):
    user = make_user(balance=str(HOLDS * D("2.5")))
    trader, other = auth_api(user), auth_api(user)
    working = trader.post("/api/orders", ORDER, format="json").json()
    modified, placed = race(
        lambda: trader.patch(f"/api/orders/{working['orderId']}", {"quantity": "2"}, format="json"),
        lambda: other.post("/api/orders", ORDER, format="json"),
    )
    assert modified.status_code in (200, 409), modified.content
    assert (modified.status_code == 200) != accepted(placed)
    settled(user)


@ROUND
def test_two_closes_of_one_position_at_once_place_one_close_order(make_user, trade, round_):
    """Both answered 202 with a close order each: the second waited for the position's lock, then
    read the close order joined from its statement's snapshot, where there was none."""
    user = make_user(balance=100_000)
    trade(user, "BUY", "0.1", 40000)
    (position,) = user.positions.filter(status="open")
    a, b = auth_api(user), auth_api(user)
    url = f"/api/positions/{position.public_id}/close"
    results = race(lambda: a.post(url), lambda: b.post(url))
    assert sorted(r.status_code for r in results) == [202, 409]
    assert {r.json().get("code") for r in results if r.status_code == 409} == {"close_pending"}
    assert Order.objects.filter(user=user, reduce_only=True, order_status__in=LIVE).count() == 1
    settled(user)


@ROUND
def test_a_fill_that_closes_a_position_while_its_close_is_placed_leaves_no_close_order_working(
    make_user, trade, round_
):
    """The user's own SELL closes the position while POST /close places its close order: whichever
    commits first, no close order is left working on the closed position (a fill that waited for the
    close's lock read the close order joined from its snapshot, none, and left it working)."""
    user = make_user(balance=100_000)
    trade(user, "BUY", "0.1", 40000)
    (position,) = user.positions.filter(status="open")
    sell = place(user, symbol="BTC_USD", order_type="MARKET", side="SELL", quantity="0.1", price=None, leverage=10)

    def close() -> object:
        try:
            return position_close(position=position)
        except Conflict as exc:  # the fill closed the position first: position_closed
            return exc

    race(lambda: execute(sell, "fill", quantity="0.1", price="40000"), close)
    position.refresh_from_db()
    assert position.status == "closed"
    assert not Order.objects.filter(user=user, order_status__in=LIVE).exists()
    settled(user)
