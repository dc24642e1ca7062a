"""System closes leave the position flat and nothing behind (issue 18's reproduced races): the
guard's auto-close and a liquidation first cancel the user's working orders on the instrument, and
close with a reduce-only order whose fills are clamped to the position. Users may place
reduce-only orders too."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from broadcast.models import EventLog
from core.errors import Conflict
from margin.models import Position
from margin.services import margin_guard_config_set
from orders.models import Order, Trade
from tests.conftest import auth_api
from tests.margin.conftest import tick
from tests.orders.factories import execute, place
from tests.polling import until_sync

pytestmark = pytest.mark.django_db


def events(user, type_):
    return [e.payload["data"] for e in EventLog.objects.filter(user=user, type=type_).order_by("seq")]


def test_auto_close_while_the_opening_order_is_still_filling_ends_flat(make_user, instruments):
    user = make_user()
    margin_guard_config_set(user=user, threshold=D("0.85"), action="close_position", cooldown_seconds=300)
    opening = place(user, symbol="BTC_USD", order_type="MARKET", side="BUY", quantity="0.1", price=None, leverage=10)
    execute(opening, "fill", "0.05", "100")  # the venue fills part per step; the rest still works
    tick("BTC_USD", 98)  # the guard fires and closes
    opening.refresh_from_db()
    position = Position.objects.get(user=user, status="open")
    close = position.close_order
    assert opening.order_status == "CANCELLED"  # the rest of the opening order can never fill now
    assert close.reduce_only and close.quantity == D("0.05")
    with pytest.raises(Conflict):
        execute(opening, "fill", "0.05", "98")
    execute(close, "fill", "0.05", "98")
    position.refresh_from_db()
    assert position.status == "closed" and position.close_reason == "margin_guard_auto_close"
    assert not Position.objects.filter(user=user, status="open").exists()
    (reported,) = events(user, "auto_close_execution")
    assert reported["position"]["id"] == position.public_id and reported["position"]["pnl"] == -0.1


def test_liquidation_cancels_a_working_stop_so_it_never_opens_the_other_side(make_user, trade, instruments):
    user = make_user()
    trade(user, "BUY", "1", "100", leverage=10)  # liquidation at ~90.5
    stop = place(user, symbol="BTC_USD", order_type="SL-M", side="SELL", quantity="1", price=None, trigger="95")
    execute(stop, "accept")
    tick("BTC_USD", 85)  # gaps through the liquidation price
    stop.refresh_from_db()
    assert Position.objects.get(user=user).close_reason == "liquidation"
    assert stop.order_status == "CANCELLED"
    with pytest.raises(Conflict):
        execute(stop, "fill", "1", "85")  # the venue cannot trigger it any more
    assert not Position.objects.filter(user=user, status="open").exists()


def test_a_take_profit_left_after_an_auto_close_is_cancelled(make_user, trade, instruments):
    user = make_user()
    margin_guard_config_set(user=user, threshold=D("0.85"), action="close_position", cooldown_seconds=300)
    trade(user, "BUY", "1", "100", leverage=10)
    take_profit = place(user, symbol="BTC_USD", order_type="LIMIT", side="SELL", quantity="1", price="120")
    execute(take_profit, "accept")
    tick("BTC_USD", 98)
    take_profit.refresh_from_db()
    assert take_profit.order_status == "CANCELLED"


def test_a_reduce_only_fill_after_the_position_is_gone_opens_nothing(make_user, trade, instruments):
    """A stale close the venue held while the position closed otherwise: its late fill is clamped
    to nothing, the order cancelled, no short opened."""
    user = make_user()
    trade(user, "BUY", "1", "100", leverage=10)
    stale = place(user, symbol="BTC_USD", order_type="MARKET", side="SELL", quantity="1", price=None, reduce_only=True)
    trade(user, "SELL", "1", "101")  # the position closes through another order
    execute(stale, "fill", "1", "100.5")
    stale.refresh_from_db()
    assert stale.order_status == "CANCELLED" and stale.filled_quantity == 0
    assert not Trade.objects.filter(order=stale).exists()
    assert not Position.objects.filter(user=user, status="open").exists()


def test_a_users_reduce_only_order_is_clamped_to_the_position(make_user, trade, instruments):
    user = make_user()
    trade(user, "BUY", "1", "100", leverage=10)
    api = auth_api(user)
    body = {"tradingSymbol": "BTC_USD", "orderType": "LIMIT", "transactionType": "SELL", "quantity": 3,
            "price": 101, "leverage": 10, "reduceOnly": True}  # fmt: skip
    placed = api.post("/api/orders", body, format="json").json()
    assert placed["orderStatus"] == "PENDING" and placed["reduceOnly"] is True
    assert api.get("/api/account").json()["orderMargin"] == "0.00000000"  # it adds no exposure
    order = Order.objects.get(order_id=placed["orderId"])
    execute(order, "fill", "3", "101")
    order.refresh_from_db()
    assert (order.filled_quantity, order.order_status) == (D(1), "CANCELLED")
    assert not Position.objects.filter(user=user, status="open").exists()


def test_a_reduce_only_order_without_a_position_to_reduce_is_refused(make_user, trade, instruments):
    user = make_user()
    api = auth_api(user)
    body = {"tradingSymbol": "BTC_USD", "orderType": "LIMIT", "transactionType": "SELL", "quantity": 1,
            "price": 101, "leverage": 10, "reduceOnly": True}  # fmt: skip
    refused = api.post("/api/orders", body, format="json")
    assert refused.status_code == 400 and "reduceOnly" in refused.json()["fields"], refused.json()
    trade(user, "SELL", "1", "100")  # a short: a reduce-only SELL would add to it
    assert api.post("/api/orders", body, format="json").status_code == 400
    assert not Order.objects.filter(user=user, reduce_only=True).exists()


def test_close_all_closes_every_open_position_with_reduce_only_orders(make_user, trade, instruments):
    user = make_user()
    trade(user, "BUY", "1", "40000")
    trade(user, "SELL", "2", "626", symbol="SBIN-EQ", leverage=2)
    api = auth_api(user)
    answer = api.post("/api/positions/close-all")
    assert answer.status_code == 202
    closing = answer.json()["closing"]
    assert len(closing) == 2 and all(c["order"]["reduceOnly"] for c in closing)
    again = api.post("/api/positions/close-all").json()  # the closes are still working
    assert again["closing"] == [] and {f["code"] for f in again["failed"]} == {"close_pending"}
    for c in closing:
        execute(Order.objects.get(order_id=c["order"]["orderId"]), "fill", c["order"]["quantity"], "100")
    assert not Position.objects.filter(user=user, status="open").exists()
    assert D(0) not in {p.quantity for p in Position.objects.filter(user=user)}


@pytest.mark.django_db(transaction=True)
def test_a_stop_the_venue_holds_during_a_liquidation_is_cancelled_once_it_is_let_go(make_user, trade, instruments):
    import threading

    from django.db import connection, transaction

    from orders.services import order_lock

    user = make_user()
    trade(user, "BUY", "1", "100", leverage=10)
    stop = place(user, symbol="BTC_USD", order_type="SL-M", side="SELL", quantity="1", price=None, trigger="95")
    held, done = threading.Event(), threading.Event()

    def venue_holds_it() -> None:  # the venue's step, holding the stop's row lock until the close committed
        try:
            with transaction.atomic():
                order_lock(stop.order_id)
                held.set()
                until_sync(lambda: Position.objects.filter(user=user, status="closed").exists(), what="the close")
        finally:
            connection.close()
            done.set()

    threading.Thread(target=venue_holds_it, daemon=True).start()
    assert held.wait(30)
    tick("BTC_USD", 85)  # gaps through the liquidation price: liquidated; the stop is skipped, then withdrawn
    assert done.wait(30)
    stop.refresh_from_db()
    assert stop.order_status == "CANCELLED"
    assert not Position.objects.filter(user=user, status="open").exists()
