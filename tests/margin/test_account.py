"""Money and the pre-trade check: margin held for positions and working orders, "Insufficient
funds" for an order the account cannot carry (and never for one that only reduces), realised PnL
and liquidation losses booked in the ledger, and the account API."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from ledger.models import Account, EntryKind, LedgerEntry
from margin.account import INSUFFICIENT_FUNDS, account_figures, order_submit
from margin.models import Position
from market.models import Instrument
from orders.models import Order, OrderUpdate
from tests.conftest import auth_api, fund
from tests.margin.conftest import tick

pytestmark = pytest.mark.django_db

ORDER = {"exchange": None, "order_type": "LIMIT", "price": D("40000"), "trigger_price": None}


def submit(user, side: str, quantity: str, *, leverage: int = 10, **kw):
    return order_submit(
        user=user,
        trading_symbol="BTC_USD",
        transaction_type=side,
        quantity=D(quantity),
        leverage=leverage,
        **{**ORDER, **kw},
    )


def test_an_unfunded_order_is_rejected_for_insufficient_funds(make_user, instruments):
    user = make_user(balance=0)
    order = submit(user, "BUY", "1")
    assert order.order_status == "REJECTED"
    # 1 × 40,000 ÷ 10 margin + 0.05 % of 40,000 fee
    assert order.rejection_reason.startswith("Insufficient funds: the order needs 4020.00 USD of margin and fees")
    assert [u.update_type for u in OrderUpdate.objects.filter(order=order).order_by("version")] == [
        "ORDER_PLACED",
        "ORDER_REJECTED",
    ]
    assert account_figures(user_id=user.pk).order_margin == 0  # a rejected order holds nothing


def test_an_order_the_balance_covers_works_and_holds_its_margin(make_user, instruments):
    user = make_user(balance=4020)
    order = submit(user, "BUY", "1")  # 1 × 40,000 ÷ 10 = 4,000 and a 20 fee: exactly covered
    assert order.order_status == "PENDING"
    figures = account_figures(user_id=user.pk)
    assert (figures.order_margin, figures.available) == (D(4020), D(0))
    assert submit(user, "BUY", "0.001").order_status == "REJECTED"  # nothing left for a second


def test_a_reducing_order_needs_no_margin_even_on_an_empty_account(make_user, trade, instruments):
    user = make_user(balance=5000)
    trade(user, "BUY", "1", "40000")  # a 1 BTC long at 10x holds 4,000
    Account.objects.filter(user=user).update(balance=D(4000))  # everything is held now
    closing = submit(user, "SELL", "1", price=D("41000"))
    assert closing.order_status == "PENDING"  # closing is always possible
    assert submit(user, "SELL", "2", price=D("41000")).order_status == "REJECTED"  # flipping to short is not


def test_working_orders_on_both_sides_hold_the_larger_side(make_user, instruments):
    user = make_user(balance=100_000)
    submit(user, "BUY", "1")  # 4,000
    submit(user, "SELL", "2", price=D("50000"))  # 2 × 50,000 ÷ 10 = 10,000, and 50 of fees
    assert account_figures(user_id=user.pk).order_margin == D(10050)


def test_a_market_order_holds_the_last_price_plus_the_buffer(make_user, instruments, settings):
    user = make_user(balance=100_000)
    tick("BTC_USD", 40000)
    submit(user, "BUY", "1", order_type="MARKET", price=None)
    # 1 % buffer for slippage: 40,400 ÷ 10, and the fee on 40,400
    assert account_figures(user_id=user.pk).order_margin == D("4060.2")


def test_realised_pnl_is_booked_on_each_reduce_and_close(make_user, trade, instruments):
    user = make_user(balance=10_000)
    trade(user, "BUY", "2", "40000")
    trade(user, "SELL", "1", "41000")  # +1,000
    trade(user, "SELL", "1", "39500")  # -500
    entries = list(LedgerEntry.objects.filter(user=user, kind=EntryKind.REALIZED_PNL).order_by("id"))
    assert [e.amount for e in entries] == [D(1000), D(-500)]
    assert entries[0].reference == entries[1].reference == Position.objects.get(user=user).public_id
    # 0.05 % of each fill's notional: 80,000, 41,000 and 39,500
    fees = [e.amount for e in LedgerEntry.objects.filter(user=user, kind=EntryKind.FEE).order_by("id")]
    assert fees == [D(-40), D("-20.5"), D("-19.75")]
    figures = account_figures(user_id=user.pk)
    assert (figures.balance, figures.position_margin, figures.available) == (D("10419.75"), D(0), D("10419.75"))


def test_a_liquidation_books_its_loss_as_a_liquidation(make_user, trade, instruments):
    user = make_user(balance=10_000)
    trade(user, "BUY", "1", "40000", leverage=20)  # margin 2,000
    position = Position.objects.get(user=user)
    tick("BTC_USD", position.liquidation_price - 1)
    position.refresh_from_db()
    assert position.status == "closed" and position.close_reason == "liquidation"
    (loss,) = LedgerEntry.objects.filter(user=user, kind=EntryKind.LIQUIDATION)
    assert loss.amount == position.realized_pnl < 0 and position.uncovered_loss == 0
    notes = [e.note.split(",")[0] for e in LedgerEntry.objects.filter(user=user, kind=EntryKind.FEE).order_by("id")]
    assert notes == ["trading fee", "trading fee", "liquidation fee"]
    # the opening fee, then the whole margin: the loss, the closing fee and the liquidation fee out of
    # what the margin had left (isolated: never more)
    assert Account.objects.get(user=user).balance == D(10_000) - 20 - 2000


def test_the_balance_is_the_sum_of_the_ledger_after_trading(make_user, trade, instruments):
    user = make_user(balance=50_000)
    for side, quantity, price in [("BUY", 2, 40000), ("SELL", 3, 40100), ("BUY", 1, 39900), ("BUY", 1, 40050)]:
        trade(user, side, str(quantity), str(price))
    total = sum(e.amount for e in LedgerEntry.objects.filter(user=user))
    assert Account.objects.get(user=user).balance == total


# ---- REST ----------------------------------------------------------------------------------------


def test_rest_order_placement_answers_the_rejection_for_insufficient_funds(make_user, instruments):
    user = make_user(balance=0)
    body = {"tradingSymbol": "BTC_USD", "orderType": "LIMIT", "transactionType": "BUY", "quantity": 1,
            "price": 40000, "leverage": 10}  # fmt: skip
    placed = auth_api(user).post("/api/orders", body, format="json")
    assert placed.status_code == 201
    assert placed.json()["orderStatus"] == "REJECTED"
    assert placed.json()["rejectionReason"].startswith("Insufficient funds")
    fund(user.pk, 4020)  # the margin and the fee
    again = auth_api(user).post("/api/orders", body, format="json")
    assert again.json()["orderStatus"] == "PENDING"


def test_account_figures_over_rest(make_user, trade, instruments):
    user = make_user(balance=10_000)
    trade(user, "BUY", "1", "40000")
    tick("BTC_USD", 40500)
    got = auth_api(user).get("/api/account").json()
    assert got == {
        "userId": str(user.pk),
        "currency": "USD",
        "balance": "9980.00000000",  # the 20 fee of the opening fill
        "positionMargin": "4000.00000000",
        "orderMargin": "0.00000000",
        "reserved": "4000.00000000",
        "available": "5980.00000000",
        "unrealizedPnl": "500.00000000",
        "equity": "10480.00000000",
    }


def test_the_ledger_over_rest_is_the_callers_own_newest_first_and_bounded(make_user, instruments):
    user, other = make_user(balance=0), make_user(balance=0)
    for n in range(1, 4):
        fund(user.pk, n)
    fund(other.pk, 99)
    page = auth_api(user).get("/api/account/ledger?limit=2").json()
    assert page["count"] == 3 and [e["amount"] for e in page["results"]] == ["3.00000000", "2.00000000"]
    assert page["results"][0]["kind"] == "deposit" and page["results"][0]["balanceAfter"] == "6.00000000"
    assert auth_api(user).get("/api/account/ledger?limit=100000").json()["count"] == 3  # capped, own rows only


def test_adjustments_by_staff_and_their_refusals(make_user, instruments):
    staff, user = make_user(staff=True), make_user(balance=0)
    staff.user_permissions.add(Permission.objects.get(codename="add_ledgerentry"))
    api = auth_api(staff)
    url = f"/api/account/{user.pk}/adjust"
    deposit = api.post(url, {"kind": "deposit", "amount": "2500.5", "note": "wire in"}, format="json")
    assert deposit.status_code == 201 and deposit.json()["balance"] == "2500.50000000"
    submit(user, "BUY", "0.5")  # holds 2,000 and its 10 fee
    over = api.post(url, {"kind": "withdrawal", "amount": "491"}, format="json")
    assert over.status_code == 409 and over.json()["code"] == "insufficient_funds"
    ok = api.post(url, {"kind": "withdrawal", "amount": "490.5"}, format="json")
    assert ok.status_code == 201 and ok.json()["available"] == "0.00000000"
    entry = LedgerEntry.objects.filter(user=user).latest("id")
    assert (entry.kind, entry.amount, entry.actor_id) == ("withdrawal", D("-490.5"), staff.pk)


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "deposit", "amount": "-5"},
        {"kind": "deposit", "amount": "0"},
        {"kind": "withdrawal", "amount": "-1"},
        {"kind": "adjustment", "amount": "0"},
        {"kind": "gift", "amount": "5"},
        {"kind": "deposit", "amount": "1e13"},
        {"kind": "deposit", "amount": "0.000000001"},
        {"kind": "deposit", "amount": "NaN"},
        {"kind": "deposit"},
        {"kind": "deposit", "amount": "5", "note": "x" * 201},
    ],
)
def test_bad_adjustments_are_refused_and_change_nothing(make_user, instruments, body):
    staff, user = make_user(superuser=True), make_user(balance=0)
    answer = auth_api(staff).post(f"/api/account/{user.pk}/adjust", body, format="json")
    assert answer.status_code == 400, answer.json()
    assert not LedgerEntry.objects.filter(user=user).exists()


def test_only_staff_adjust_and_only_existing_users(make_user, instruments):
    user, other = make_user(balance=0), make_user(balance=0)
    mine = auth_api(user).post(f"/api/account/{user.pk}/adjust", {"kind": "deposit", "amount": "5"}, format="json")
    theirs = auth_api(user).post(f"/api/account/{other.pk}/adjust", {"kind": "deposit", "amount": "5"}, format="json")
    assert mine.status_code == theirs.status_code == 403
    staff = make_user(superuser=True)
    missing = auth_api(staff).post("/api/account/99999999/adjust", {"kind": "deposit", "amount": "5"}, format="json")
    assert missing.status_code == 404
    assert not LedgerEntry.objects.filter(user__in=[user, other]).exists()


def test_create_account_sets_the_balance(db, capsys):
    call_command("create_account", "funded", "--password", "a-long-pass-1", "--balance", "1234.5")
    assert "balance 1234.5 USD" in capsys.readouterr().out
    call_command("create_account", "funded", "--password", "a-long-pass-1", "--balance", "1000")
    kinds = list(LedgerEntry.objects.filter(user__username="funded").values_list("kind", "amount"))
    assert kinds == [("adjustment", D("1234.5")), ("adjustment", D("-234.5"))]
    call_command("create_account", "empty", "--password", "a-long-pass-1")
    assert not Account.objects.filter(user__username="empty", balance__gt=0).exists()


@pytest.mark.parametrize("value", ["-1", "abc", "1e13", "0.000000001", "NaN"])
def test_create_account_refuses_a_bad_balance(db, value):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="--balance"):
        call_command("create_account", "bad", "--password", "a-long-pass-1", "--balance", value)
    assert not Order.objects.exists() and not LedgerEntry.objects.exists()


def test_a_modification_the_account_cannot_carry_is_refused_and_changes_nothing(make_user, instruments):
    user = make_user(balance=5000)
    order = submit(user, "BUY", "1")  # holds 4,000
    api = auth_api(user)
    bigger = api.patch(f"/api/orders/{order.order_id}", {"quantity": 2}, format="json")
    assert bigger.status_code == 409 and bigger.json()["code"] == "insufficient_funds", bigger.json()
    order.refresh_from_db()
    assert (order.quantity, order.version) == (D(1), 1)
    cheaper = api.patch(f"/api/orders/{order.order_id}", {"price": 39000}, format="json")
    assert cheaper.status_code == 200 and cheaper.json()["price"] == 39000


def test_ledger_notes_and_times_read_plainly(make_user, trade, instruments):
    user = make_user(balance=10_000, tier="enterprise")  # 100x
    trade(user, "BUY", "10", "41000", leverage=100)
    trade(user, "SELL", "10", "41000.5", leverage=100)
    (entry,) = auth_api(user).get("/api/account/ledger?limit=1").json()["results"]
    assert entry["note"].endswith(": 10 at 41000.5") and entry["createdAt"].endswith("Z")
    assert len(entry["createdAt"]) == len("2026-12-03T08:44:12.123Z")


# ---- fees, the loss cap and the check at the fill ---------------------------------------------------


def test_a_gap_through_the_bankruptcy_price_costs_the_user_the_margin_and_no_more(make_user, trade, instruments):
    user = make_user(balance=10_000)
    tick("BTC_USD", 40000)
    trade(user, "BUY", "1", "40000", leverage=20)  # margin 2,000, bankrupt at 38,000
    tick("BTC_USD", 36000)  # the mark moves 5 % to 38,000 and crosses; the fill is at the market
    position = Position.objects.get(user=user)
    assert position.status == "closed" and position.close_reason == "liquidation"
    (loss,) = LedgerEntry.objects.filter(user=user, kind=EntryKind.LIQUIDATION)
    assert loss.amount == position.realized_pnl == D(-2000)  # 4,000 lost at the market; 2,000 was held
    assert position.uncovered_loss == D(2000) + D(18)  # the rest, and the closing fee, are the broker's
    assert "not charged" in loss.note
    assert Account.objects.get(user=user).balance == D(10_000) - 20 - 2000
    assert account_figures(user_id=user.pk).available == D(7980)


def test_the_venue_fills_only_what_the_margin_carries_and_cancels_the_rest(make_user, instruments):
    from jobs.schedule import LatestPrices
    from margin.venue import PaperVenue
    from orders.models import Trade

    user = make_user(balance=205)
    tick("BTC_USD", 40000)
    order = submit(user, "BUY", "0.05", order_type="MARKET", price=None)  # holds 203.01 at 40,400
    assert order.order_status == "PENDING"
    tick("BTC_USD", 41000, 44000)  # slips 10 % before the venue's step
    prices = LatestPrices()
    prices.refresh()
    PaperVenue(prices).step()  # fills at 44,000: 4,422 a BTC of margin and fee
    order.refresh_from_db()
    (fill,) = Trade.objects.filter(order=order)
    assert (fill.price, fill.quantity) == (D(44000), D("0.046"))  # 0.046 × 4,422 = 203.41; a lot more is 207.83
    assert order.order_status == "CANCELLED" and order.rejection_reason.startswith("Insufficient funds")
    figures = account_figures(user_id=user.pk)
    assert D(0) <= figures.available < D(5) and figures.order_margin == 0


def test_a_sell_limit_below_the_market_holds_the_margin_of_its_fill_at_the_market(make_user, instruments):
    """A risk review: a SELL limit held margin at its limit, but it fills at its limit or higher (at
    the market when marketable), and a short's margin and fee grow with its fill price. Placed at
    39,000 with the market at 40,000 on 196 USD, it was accepted, filled 0.048 and cancelled."""
    from margin.venue import PaperVenue
    from tests.orders.test_venue import Prices

    user = make_user(balance=196)
    tick("BTC_USD", 40000)
    order = submit(user, "SELL", "0.05", price=D("39000"))  # 0.05 × (4,000 + 20) = 201 at the market
    assert order.order_status == "REJECTED"
    assert order.rejection_reason == (
        f"{INSUFFICIENT_FUNDS}: the order needs 201.00 USD of margin and fees, 196.00 USD is available"
    )
    fund(user.pk, 5)  # 201: the fill at the market is carried in full
    order = submit(user, "SELL", "0.05", price=D("39000"))
    PaperVenue(Prices(BTC_USD="40000")).step()
    order.refresh_from_db()
    assert (order.order_status, order.average_price) == ("COMPLETE", D(40000))
    assert account_figures(user_id=user.pk).available == 0
    other = make_user(balance=100_000)
    submit(other, "SELL", "1", price=D("42000"))  # above the market: it fills at its limit, held there
    assert account_figures(user_id=other.pk).order_margin == D("4221")


def test_what_a_side_adds_is_held_at_its_costliest_orders(make_user, instruments):
    """A risk review: against a short of 0.05, a BUY 0.05 at 100x (it only closes) and a BUY 0.05 at
    2x (it opens a long of 0.05 once the other closed the short: 1,001 of margin and fee) held the
    two orders' average cost, 511. The 2x buy was accepted on 549 available; at the fill the venue
    held back the 100x buy, which only reduced, to 0.034 and cancelled it for funds."""
    from margin.venue import PaperVenue
    from tests.orders.test_venue import Prices

    user = make_user(balance=750, tier="enterprise")  # 100x
    tick("BTC_USD", 40000)
    venue = PaperVenue(Prices(BTC_USD="40000"))
    submit(user, "SELL", "0.05", order_type="MARKET", price=None)
    venue.step()  # short 0.05 at 40,000: 200 held, a fee of 1; 549 available
    closing = submit(user, "BUY", "0.05", leverage=100)
    opening = submit(user, "BUY", "0.05", leverage=2)
    assert closing.order_status == "PENDING" and opening.order_status == "REJECTED"
    assert opening.rejection_reason == (
        f"{INSUFFICIENT_FUNDS}: the order needs 1001.00 USD of margin and fees, 549.00 USD is available"
    )
    venue.step()
    closing.refresh_from_db()
    assert (closing.order_status, closing.filled_quantity) == ("COMPLETE", D("0.05"))
    assert not Position.objects.filter(user=user, status="open").exists()


def test_working_orders_are_capped_per_tier(make_user, instruments, settings):
    settings.AXISOR_CAPS = {**settings.AXISOR_CAPS, "WORKING_ORDERS": {"basic": 3, "premium": 5, "enterprise": 0}}
    user = make_user(balance=100_000)
    for _ in range(3):
        assert submit(user, "BUY", "0.1").order_status == "PENDING"
    body = {"tradingSymbol": "BTC_USD", "orderType": "LIMIT", "transactionType": "BUY", "quantity": 0.1,
            "price": 40000, "leverage": 10}  # fmt: skip
    refused = auth_api(user).post("/api/orders", body, format="json")
    assert refused.status_code == 409 and refused.json()["code"] == "limit_exceeded"
    assert "at most 3 working orders" in refused.json()["detail"]
    assert Order.objects.filter(user=user).count() == 3  # nothing recorded
    order = Order.objects.filter(user=user).first()
    auth_api(user).post(f"/api/orders/{order.order_id}/cancel")
    assert auth_api(user).post("/api/orders", body, format="json").status_code == 201  # a place again


def test_a_placement_reads_the_working_orders_once_however_many_there_are(make_user, instruments):
    """The pre-trade check reads the user's working orders in one statement per placement (it once
    read them twice, as model instances, and counted them for the tier's cap in a third), and the
    statements do not grow with them: the figures after the placement are the book's with the new
    order added, and the cap is counted in the book."""
    user = make_user(balance=1_000_000)

    def placing() -> list[str]:
        with CaptureQueriesContext(connection) as queries:
            assert submit(user, "BUY", "0.001").order_status == "PENDING"
        return [q["sql"] for q in queries.captured_queries]

    first = placing()  # no working order yet: the book prices nothing, the new order's price came with it
    few = placing()
    for _ in range(40):
        submit(user, "BUY", "0.001")
    many = placing()
    assert len(many) == len(few)
    # a book of the placed instrument alone reads no prices: the placement's read of its
    # instrument brought the last one
    assert len(first) == len(few), first
    assert not [sql for sql in many if 'LEFT OUTER JOIN "market_marketstate"' in sql and " IN (" in sql], many
    working_reads = [sql for sql in many if sql.startswith("SELECT") and 'FROM "orders_order"' in sql]
    assert len(working_reads) == 1, working_reads
    # no read sorts: the account lock, the book and the instrument are read unordered (a model's
    # default ordering costs each placement a sort to compile and to run)
    assert not [sql for sql in many if sql.startswith("SELECT") and "ORDER BY" in sql], many
    # and the figures are what a fresh read of every working order gives: 43 × (40 ÷ 10 + fee 0.02)
    assert account_figures(user_id=user.pk).order_margin == 43 * (D(40) / 10 + D(40) * D("0.0005"))


def test_a_book_of_other_instruments_is_priced_in_one_read_at_their_last_prices(make_user, instruments):
    """The placement's instrument is priced from its own read; the book's other instruments in one
    read of their last prices, and the check holds their orders at them. A market buy of 1 ETH_USD
    holds its cost at the last 2,200 (not the reference 2,300, and not nothing) plus the buffer;
    the balance leaves room for one BTC_USD order of 0.001 and not two, which only that price does:
    at 2,300 the first would be refused, unpriced the second would pass."""
    from margin.positions import fee_rate

    eth = Instrument.objects.get(symbol="ETH_USD")
    tick("ETH_USD", 2200)
    fee, buffer = fee_rate(), D(str(settings.AXISOR_RISK["MARKET_ORDER_BUFFER"]))
    eth_cost = D(2200) * (1 + buffer)
    eth_held = eth_cost / 10 + eth_cost * fee
    btc_held = D(40) / 10 + D(40) * fee  # 0.001 at 40,000, leverage 10
    user = make_user(balance=str((eth_held + btc_held * D("1.5")).quantize(D("0.01"))))
    held = order_submit(
        user=user, trading_symbol="ETH_USD", transaction_type="BUY", quantity=D("1"), leverage=10,
        exchange=None, order_type="MARKET", price=None, trigger_price=None,
    )  # fmt: skip
    assert held.order_status == "PENDING"
    with CaptureQueriesContext(connection) as queries:
        assert submit(user, "BUY", "0.001").order_status == "PENDING"
    priced = [q["sql"] for q in queries.captured_queries if 'LEFT OUTER JOIN "market_marketstate"' in q["sql"]]
    assert len(priced) == 2, priced  # the placement's instrument, and the book's others in one read
    assert f"IN ({eth.pk})" in priced[-1], priced
    second = submit(user, "BUY", "0.001")
    assert second.order_status == "REJECTED", second.rejection_reason
    assert INSUFFICIENT_FUNDS in second.rejection_reason


def test_a_book_without_its_prices_gives_no_figures(make_user, instruments):
    """Unpriced, a book would hold market orders at nothing: its figures are refused until it is
    priced."""
    from margin.account import _book, _figures

    user = make_user(balance=1_000_000)
    submit(user, "BUY", "0.001")
    book = _book(user.pk, priced=False)
    with pytest.raises(ValueError, match="no prices"):
        _figures(book)
    assert _figures(book.priced()).order_margin > 0


def test_a_placement_is_checked_with_the_orders_it_adds_to(make_user, instruments):
    """An order the balance covers alone is rejected once the working orders already hold the rest:
    the check after a placement counts every working order, the new one included."""
    user = make_user(balance=4020 * 2)
    assert submit(user, "BUY", "1").order_status == "PENDING"
    assert submit(user, "SELL", "1", price=D("40000")).order_status == "PENDING"  # the larger side: still 4,020
    assert submit(user, "BUY", "1").order_status == "PENDING"  # 8,040 held
    assert submit(user, "BUY", "0.001").order_status == "REJECTED"
