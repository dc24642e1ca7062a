"""Fills reported from outside the paper venue (``POST /api/internal/executions``) of a MARKET or
stop-market order: a price further than ``RISK_FILL_BAND`` from the instrument's last price (its
reference price before the first tick) is refused with 400 ``fill_price_out_of_band``, and nothing
is booked. Before, any price booked: a limit had a bound (its limit), a market order had none."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from ledger.models import Account, LedgerEntry
from margin.models import Position
from orders.models import ExecutionReport, Order, Trade
from tests.conftest import auth_api
from tests.margin.conftest import tick

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("instruments")]
URL = "/api/internal/executions"


@pytest.fixture
def user(make_user):
    return make_user(balance=100_000)


@pytest.fixture
def venue(make_user):
    return auth_api(make_user("venue", superuser=True))


def placed(user, **body) -> str:
    order = {"tradingSymbol": "BTC_USD", "orderType": "MARKET", "transactionType": "BUY", "quantity": "0.1",
             "leverage": 10, **body}  # fmt: skip
    answer = auth_api(user).post("/api/orders", order, format="json")
    assert answer.status_code == 201 and answer.json()["orderStatus"] == "PENDING", answer.json()
    return answer.json()["orderId"]


def nothing_booked(user, order_id: str, balance: D) -> None:
    assert not Trade.objects.filter(order__order_id=order_id).exists()
    assert not ExecutionReport.objects.filter(order__order_id=order_id, kind="fill").exists()
    assert not Position.objects.filter(user=user).exists()
    assert Account.objects.get(user=user).balance == balance
    assert not LedgerEntry.objects.filter(user=user, kind="fee").exists()
    order = Order.objects.get(order_id=order_id)
    assert (order.filled_quantity, order.order_status) == (0, "PENDING")


@pytest.mark.parametrize("price", ["1", "35999.5", "44000.5", "999999999999"])
def test_a_market_fill_far_from_the_last_price_is_refused_and_books_nothing(user, venue, price):
    tick("BTC_USD", 40000)
    order_id = placed(user)
    report = {"orderId": order_id, "execId": f"far-{price}", "type": "fill", "quantity": "0.1", "price": price}
    answer = venue.post(URL, report, format="json")
    assert answer.status_code == 400, answer.json()
    assert answer.json()["code"] == "fill_price_out_of_band"
    assert answer.json()["detail"] == (
        "a MARKET fill must be within 10 % of BTC_USD's last price 40,000.0 (36,000.0 to 44,000.0)"
    )
    nothing_booked(user, order_id, D(100_000))


def test_the_band_is_inclusive_and_a_fill_inside_it_books(user, venue):
    tick("BTC_USD", 40000)
    for n, price in enumerate(["36000", "44000", "40123.5"]):
        order_id = placed(user)
        report = {"orderId": order_id, "execId": f"in-{n}", "type": "fill", "quantity": "0.1", "price": price}
        answer = venue.post(URL, report, format="json")
        assert answer.status_code == 200 and answer.json()["order"]["orderStatus"] == "COMPLETE", answer.json()


def test_a_refused_fill_can_be_sent_again_with_its_exec_id_once_priced_right(user, venue):
    tick("BTC_USD", 40000)
    order_id = placed(user)
    report = {"orderId": order_id, "execId": "again-1", "type": "fill", "quantity": "0.1", "price": "50000"}
    assert venue.post(URL, report, format="json").status_code == 400
    tick("BTC_USD", 42000, 44000, 46000, 48000)  # the feed catches up: the market is at 48,000
    answer = venue.post(URL, report, format="json")
    assert answer.status_code == 200 and answer.json()["applied"] is True
    assert answer.json()["order"]["averagePrice"] == 50000


def test_a_stop_market_fill_is_banded_too(user, venue):
    tick("BTC_USD", 40000)
    order_id = placed(user, orderType="SL-M", triggerPrice="41000")
    report = {"orderId": order_id, "execId": "slm-1", "type": "fill", "quantity": "0.1", "price": "30000"}
    answer = venue.post(URL, report, format="json")
    assert answer.status_code == 400 and answer.json()["code"] == "fill_price_out_of_band"
    assert answer.json()["detail"].startswith("a SL-M fill must be within 10 %")
    ok = venue.post(URL, {**report, "execId": "slm-2", "price": "41000"}, format="json")
    assert ok.status_code == 200 and ok.json()["order"]["orderStatus"] == "COMPLETE"


def test_before_the_first_tick_the_band_is_around_the_reference_price(user, venue):
    # BTC_USD's reference price, 43,250.50: the price the pre-trade check held the order at.
    order_id = placed(user)
    report = {"orderId": order_id, "execId": "ref-1", "type": "fill", "quantity": "0.1", "price": "100"}
    answer = venue.post(URL, report, format="json")
    assert answer.status_code == 400 and answer.json()["detail"] == (
        "a MARKET fill must be within 10 % of BTC_USD's reference price 43,250.5 (no trade yet) (38,925.5 to 47,575.5)"
    )
    ok = venue.post(URL, {**report, "execId": "ref-2", "price": "43000"}, format="json")
    assert ok.status_code == 200


def test_the_band_is_a_setting(user, venue, settings):
    settings.AXISOR_RISK = {**settings.AXISOR_RISK, "FILL_BAND": 0.01}
    tick("BTC_USD", 40000)
    order_id = placed(user)
    report = {"orderId": order_id, "execId": "set-1", "type": "fill", "quantity": "0.1", "price": "40500"}
    answer = venue.post(URL, report, format="json")
    assert answer.status_code == 400 and "within 1 %" in answer.json()["detail"]


def test_a_limit_fill_keeps_its_own_bound_and_the_paper_venue_and_liquidations_are_not_banded(user, venue):
    """The band is for reports from outside: a limit is bounded by its limit (an outside venue may
    give it a better price than the market band would allow), the paper venue fills at the market
    it reads, and a liquidation at the worse of the market and the liquidation price."""
    from tests.orders.factories import execute

    tick("BTC_USD", 40000)
    body = {"tradingSymbol": "BTC_USD", "orderType": "LIMIT", "transactionType": "BUY", "quantity": "0.1",
            "price": "40000", "leverage": 10}  # fmt: skip
    limit = auth_api(user).post("/api/orders", body, format="json")
    report = {"orderId": limit.json()["orderId"], "execId": "lim-1", "type": "fill", "quantity": "0.1"}
    assert venue.post(URL, {**report, "price": "30000"}, format="json").status_code == 200  # a better price
    other = placed(user, transactionType="SELL", quantity="0.1")
    execute(Order.objects.get(order_id=other), "fill", quantity="0.1", price="30000")  # a service's own report
    assert Order.objects.get(order_id=other).order_status == "COMPLETE"
