"""Setting or adjusting a balance never leaves cash below what the account's open positions and
working orders hold: ``create_account --balance`` refuses (CommandError, nothing changed) as the
REST adjustment refuses (409 ``insufficient_funds``, nothing booked). Before, the command set any
balance from 0 up, and an account holding 4,020 of margin could be set to 100: available -3,920."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from ledger.models import Account, LedgerEntry
from margin.account import account_figures, order_submit
from tests.conftest import auth_api
from tests.margin.conftest import tick

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("instruments")]
PASSWORD = "a-long-pass-1"


def working_buy(user, quantity: str = "1"):
    """A BUY LIMIT at 40,000, 10x: quantity × 4,020 held (margin and fee)."""
    order = order_submit(
        user=user, trading_symbol="BTC_USD", exchange=None, order_type="LIMIT", transaction_type="BUY",
        quantity=D(quantity), price=D("40000"), trigger_price=None, leverage=10,
    )  # fmt: skip
    assert order.order_status == "PENDING", order.rejection_reason
    return order


def set_balance(user, amount: str) -> None:
    call_command("create_account", user.username, "--password", PASSWORD, "--balance", amount)


def test_create_account_refuses_a_balance_below_what_working_orders_hold(make_user):
    tick("BTC_USD", 40000)
    user = make_user(balance=10_000)
    working_buy(user)
    entries = LedgerEntry.objects.filter(user=user).count()
    with pytest.raises(CommandError) as refused:
        set_balance(user, "100")
    assert str(refused.value) == (
        f"--balance 100 is below the 4,020.00 USD {user.username}'s open positions and working orders hold"
        " (margin and fees): the lowest balance it can be set to now is 4,020.00 USD"
    )
    assert Account.objects.get(user=user).balance == D(10_000)
    assert LedgerEntry.objects.filter(user=user).count() == entries
    set_balance(user, "4020")  # exactly what is held: available 0
    figures = account_figures(user_id=user.pk)
    assert (figures.balance, figures.available) == (D(4020), D(0))


def test_create_account_refuses_a_balance_below_a_positions_margin(make_user, trade):
    tick("BTC_USD", 40000)
    user = make_user(balance=10_000)
    trade(user, "BUY", "1", "40000")  # a long holding 4,000; the fee took 20
    with pytest.raises(CommandError, match=r"below the 4,000\.00 USD"):
        set_balance(user, "3999.99")
    with pytest.raises(CommandError, match="--balance"):
        set_balance(user, "0")
    assert Account.objects.get(user=user).balance == D(9980)
    set_balance(user, "4000")
    assert account_figures(user_id=user.pk).available == D(0)


def test_create_account_may_raise_a_balance_that_does_not_cover_what_is_held(make_user, trade):
    """An account already below what it holds (a market order's margin follows the price) may be
    topped up, even short of covering it; it may not be lowered further."""
    tick("BTC_USD", 40000)
    user = make_user(balance=4100)
    working_buy(user)
    Account.objects.filter(user=user).update(balance=D(3000))  # as if losses had been booked
    with pytest.raises(CommandError, match=r"the lowest balance it can be set to now is 3,000\.00 USD"):
        set_balance(user, "2999")
    set_balance(user, "3500")
    assert Account.objects.get(user=user).balance == D(3500)


def test_the_rest_adjustment_never_takes_cash_below_what_is_held(make_user):
    """Verified, unchanged: a withdrawal or a negative adjustment beyond what is available is 409
    insufficient_funds and books nothing (margin.account.account_adjust)."""
    tick("BTC_USD", 40000)
    staff, user = make_user(superuser=True), make_user(balance=5000)
    working_buy(user)  # 4,020 held, 980 available
    url = f"/api/account/{user.pk}/adjust"
    entries = LedgerEntry.objects.filter(user=user).count()
    for body in ({"kind": "adjustment", "amount": "-981"}, {"kind": "withdrawal", "amount": "981"}):
        answer = auth_api(staff).post(url, body, format="json")
        assert answer.status_code == 409 and answer.json()["code"] == "insufficient_funds", answer.json()
    assert LedgerEntry.objects.filter(user=user).count() == entries
    ok = auth_api(staff).post(url, {"kind": "adjustment", "amount": "-980"}, format="json")
    assert ok.status_code == 201 and ok.json()["available"] == "0.00000000"
