"""Double spends, tried for real: requests sent at the same moment from threads (each its own
PostgreSQL connection) through the REST API, two orders, two withdrawals, an order and a withdrawal,
a modification and an order, all spending the same available margin. Whatever the interleaving,
at most one of them may spend it, and available never goes below zero."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from django.contrib.auth.models import Permission

from ledger.models import Account, LedgerEntry
from margin.account import account_figures
from tests.conftest import auth_api
from tests.orders.test_concurrency import race

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("instruments")]


ROUNDS = 4
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


def test_two_orders_at_once_cannot_both_spend_the_same_margin(make_user):
    for _ in range(ROUNDS):
        user = make_user(balance=str(HOLDS * D("1.5")))
        first, second = auth_api(user), auth_api(user)
        results = race(
            lambda: first.post("/api/orders", ORDER, format="json"),
            lambda: second.post("/api/orders", ORDER, format="json"),
        )
        assert sorted(accepted(r) for r in results) == [False, True]
        settled(user)


def test_two_withdrawals_at_once_cannot_both_take_the_same_money(make_user, staff):
    for _ in range(ROUNDS):
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


def test_an_order_and_a_withdrawal_at_once_cannot_both_spend_the_same_margin(make_user, staff):
    for _ in range(ROUNDS):
        user = make_user(balance=str(HOLDS + 1000))
        trader, desk = auth_api(user), auth_api(staff)
        placed, withdrawn = race(
            lambda: trader.post("/api/orders", ORDER, format="json"),
            lambda: desk.post(f"/api/account/{user.pk}/adjust", {"kind": "withdrawal", "amount": "1500"}, format="json"),
        )
        assert accepted(placed) != (withdrawn.status_code == 201)
        settled(user)


def test_a_modification_and_an_order_at_once_cannot_both_spend_the_same_margin(make_user):
    for _ in range(ROUNDS):
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


def test_two_closes_of_one_position_at_once_place_one_close_order(make_user, trade):
    for _ in range(ROUNDS):
        user = make_user(balance=100_000)
        trade(user, "BUY", "0.1", 40000)
        (position,) = user.positions.filter(status="open")
        a, b = auth_api(user), auth_api(user)
        results = race(
            lambda: a.post(f"/api/positions/{position.public_id}/close"),
            lambda: b.post(f"/api/positions/{position.public_id}/close"),
        )
        assert sorted(r.status_code for r in results) == [202, 409]
        assert {r.json().get("code") for r in results if r.status_code == 409} == {"close_pending"}
        settled(user)


def test_a_fill_that_closes_a_position_while_its_close_is_placed_leaves_no_close_order_working(make_user, trade):
    """The user's own SELL closes the position while POST /close places its close order:
    whichever commits first, no close order is left working on a closed position (a fill that waited
    for the close's lock read the close order joined from its snapshot, none, and left it working)."""
    from margin.services import position_close
    from orders.models import LIVE, Order
    from tests.orders.factories import execute, place

    for _ in range(ROUNDS):
        user = make_user(balance=100_000)
        trade(user, "BUY", "0.1", 40000)
        (position,) = user.positions.filter(status="open")
        sell = place(user, symbol="BTC_USD", order_type="MARKET", side="SELL", quantity="0.1", price=None, leverage=10)

        def close():
            try:
                return position_close(position=position)
            except Exception as exc:  # noqa: BLE001 - the position closed first: 409
                return exc

        race(lambda: execute(sell, "fill", quantity="0.1", price="40000"), close)
        position.refresh_from_db()
        assert position.status == "closed"
        assert not Order.objects.filter(user=user, order_status__in=LIVE).exists()
        settled(user)
