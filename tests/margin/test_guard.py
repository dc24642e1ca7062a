"""The Margin Guard on ticks: fires once per crossing, re-arms after recovery or the cooldown,
auto-closes, and the venue liquidates at the liquidation price."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal as D

import pytest
from django.utils import timezone

from broadcast.models import EventLog
from margin.models import MarginGuardExecution, Position
from margin.services import margin_guard_config_set
from notifications.models import Notification
from orders.models import Order, Trade
from tests.margin.conftest import tick
from tests.orders.factories import execute

pytestmark = pytest.mark.django_db

# A long of 1 BTC_USD at 100, 10x, m 0.005: liquidation 90.5; threshold 0.85 → guard price 98.575;
# re-arm at distance 0.95 (band 0.1) → 99.525.


@pytest.fixture
def long_btc(make_user, trade):
    def make(**guard):
        user = make_user()
        margin_guard_config_set(user=user, **{"threshold": D("0.85"), "cooldown_seconds": 300, **guard})
        trade(user, "BUY", "1", "100", leverage=10)
        return user, Position.objects.get(user=user, status="open")

    return make


def executions(user):
    return list(MarginGuardExecution.objects.filter(user=user).order_by("id"))


def events(user, type_):
    return [e.payload for e in EventLog.objects.filter(user=user, type=type_).order_by("seq")]


def test_guard_fires_once_per_crossing_and_rearms_after_recovery(long_btc):
    user, position = long_btc()
    tick("BTC_USD", 99)
    assert executions(user) == []
    tick("BTC_USD", 98.5)  # distance 0.842 ≤ 0.85
    tick("BTC_USD", 98)
    tick("BTC_USD", 97, 96.5)
    tick("BTC_USD", 98.9)  # out of risk, not past the re-arm band: still disarmed
    tick("BTC_USD", 98.5)
    assert len(executions(user)) == 1
    sent = events(user, "margin_guard_execution")
    assert len(sent) == 1
    data = sent[0]["data"]
    assert sent[0]["channel"] == "margin_guard"
    assert data["action"] == "notification_sent" and data["userId"] == str(user.pk)
    assert data["summary"] == {"positionsChecked": 1, "positionsAtRisk": 1, "actionsExecuted": ["notification_sent"]}
    assert data["positions"][0]["id"] == position.public_id and data["positions"][0]["symbol"] == "BTC_USD"
    assert data["positions"][0]["isAtRisk"] is True and data["positions"][0]["recommendedAction"] == "close_position"
    assert data["positions"][0]["distanceToLiquidation"] == pytest.approx(0.8421, abs=1e-4)
    assert data["executionId"].startswith("mg_exec_") and data["executedAt"].endswith("Z")
    note = Notification.objects.get(user=user, category="margin_guard")
    assert note.title == "Margin Guard Alert" and note.message == "Position BTC_USD is at risk of liquidation"
    assert note.data["positionId"] == position.public_id and note.type == "warning"

    tick("BTC_USD", 99.5)  # distance 0.947: not yet recovered
    tick("BTC_USD", 98.4)
    assert len(executions(user)) == 1
    tick("BTC_USD", 99.6)  # recovered past 0.95: re-armed
    assert len(executions(user)) == 1
    tick("BTC_USD", 98.4)  # a new crossing
    assert len(executions(user)) == 2
    assert executions(user)[1].trigger == "threshold"


def test_guard_rearms_after_the_cooldown_while_still_at_risk(long_btc):
    user, position = long_btc(cooldown_seconds=60)
    tick("BTC_USD", 98)
    tick("BTC_USD", 97.9)
    assert len(executions(user)) == 1
    position.refresh_from_db()
    assert position.guard_rearm_at is not None and not position.guard_armed
    Position.objects.filter(pk=position.pk).update(guard_rearm_at=timezone.now() - timedelta(seconds=1))
    tick("BTC_USD", 97.8)  # cooldown over and still at risk: fires again
    tick("BTC_USD", 97.7)
    assert [e.trigger for e in executions(user)] == ["threshold", "cooldown"]


def test_a_dip_inside_one_call_fires(long_btc):
    user, _ = long_btc()
    tick("BTC_USD", 99, 98.2, 99.2)  # ends out of risk, but went through it
    assert len(executions(user)) == 1


def test_disabled_guard_does_nothing_and_enabling_while_at_risk_fires_on_the_next_tick(long_btc):
    user, _ = long_btc(enabled=False)
    tick("BTC_USD", 97)
    assert executions(user) == [] and not Notification.objects.filter(user=user).exclude(category="orders").exists()
    margin_guard_config_set(user=user, enabled=True)
    tick("BTC_USD", 97.1)
    assert len(executions(user)) == 1


def test_summary_counts_all_open_positions_of_the_user(long_btc, trade):
    user, _ = long_btc()
    trade(user, "SELL", "1", "2000", symbol="ETH_USD", leverage=5)
    tick("BTC_USD", 98)
    (execution,) = executions(user)
    assert execution.summary["positionsChecked"] == 2 and execution.summary["positionsAtRisk"] == 1
    by_symbol = {p["symbol"]: p for p in execution.positions}
    assert by_symbol["ETH_USD"]["isAtRisk"] is False and by_symbol["ETH_USD"]["recommendedAction"] == "none"


def test_auto_close_closes_the_position_with_realized_pnl(long_btc):
    user, position = long_btc(action="close_position")
    tick("BTC_USD", 98)
    (execution,) = executions(user)
    assert execution.action == "close_position"
    assert execution.summary["actionsExecuted"] == ["notification_sent", "close_order_placed"]
    position.refresh_from_db()
    order = position.close_order
    assert order.order_type == "MARKET" and order.transaction_type == "SELL" and order.quantity == 1
    assert position.status == "open" and position.close_kind == "margin_guard_auto_close"
    tick("BTC_USD", 97.5)  # no second close order while the first works
    assert Order.objects.filter(user=user, transaction_type="SELL").count() == 1

    execute(order, "fill", quantity="1", price="97.5")  # the venue fills it
    position.refresh_from_db()
    assert position.status == "closed" and position.close_reason == "margin_guard_auto_close"
    assert position.realized_pnl == D("-2.5")
    (sent,) = events(user, "auto_close_execution")
    assert sent["channel"] == "margin_guard"
    assert sent["data"]["position"] == {
        "id": position.public_id,
        "symbol": "BTC_USD",
        "closedAt": sent["data"]["position"]["closedAt"],
        "reason": "margin_guard_auto_close",
        "pnl": -2.5,
        "orderId": order.order_id,
    }
    assert sent["data"]["executionId"].startswith("auto_close_") and sent["data"]["userId"] == str(user.pk)
    execution.refresh_from_db()
    assert execution.auto_closes[0]["executionId"] == sent["data"]["executionId"]
    assert Notification.objects.filter(user=user, title="Position closed by Margin Guard").count() == 1


def test_liquidation_fills_at_the_worse_of_market_and_liquidation_price(long_btc):
    user, position = long_btc(enabled=False)
    tick("BTC_USD", 92)
    tick("BTC_USD", 90)  # gaps through 90.5: the venue takes over at 90, the gap is the position's loss
    position.refresh_from_db()
    assert position.status == "closed" and position.close_reason == "liquidation"
    assert position.realized_pnl == D("-10")
    order = position.close_order
    assert order.order_status == "COMPLETE" and order.average_price == D("90") and order.reduce_only
    trade = Trade.objects.get(order=order)
    assert trade.price == D("90") and trade.liquidation
    assert [u["data"].get("liquidation") for u in events(user, "order_update")][-2] is True  # the TRADE_UPDATE
    note = Notification.objects.get(user=user, category="margin_guard")
    assert note.title == "Position liquidated" and note.type == "error"
    assert [u["data"]["updateType"] for u in events(user, "order_update")][-3:] == [
        "ORDER_PLACED",
        "TRADE_UPDATE",
        "ORDER_EXECUTED",
    ]
    tick("BTC_USD", 89)
    assert Position.objects.filter(user=user).count() == 1  # nothing reopened


def test_liquidation_cancels_a_working_auto_close_order(long_btc):
    _, position = long_btc(action="close_position")
    tick("BTC_USD", 98)
    position.refresh_from_db()
    close_order = position.close_order
    tick("BTC_USD", 90, 90)  # 8 % in one print: the mark (5 % a tick at most) needs the second
    close_order.refresh_from_db()
    position.refresh_from_db()
    assert position.close_reason == "liquidation"
    # withdrawn, so cancelled: a client reads REJECTED as an error (issue 18)
    assert close_order.order_status == "CANCELLED" and close_order.rejection_reason == ""


def test_short_positions_fire_and_liquidate_on_rising_prices(make_user, trade):
    user = make_user()
    margin_guard_config_set(user=user, threshold=D("0.5"))
    trade(user, "SELL", "1", "100", leverage=10)  # liq 109.5, guard 104.75
    tick("BTC_USD", 104)
    assert executions(user) == []
    tick("BTC_USD", 105)
    assert len(executions(user)) == 1
    tick("BTC_USD", 110)  # through 109.5: taken over at 110
    assert Position.objects.get(user=user).close_reason == "liquidation"
    assert Position.objects.get(user=user).realized_pnl == D("-10")


def test_a_rolled_back_tick_leaves_no_execution_and_sends_nothing(long_btc, django_capture_on_commit_callbacks):
    from django.db import transaction

    user, position = long_btc()
    with django_capture_on_commit_callbacks(execute=False) as sent:
        with pytest.raises(RuntimeError), transaction.atomic():
            tick("BTC_USD", 97)
            raise RuntimeError("ingest failed after evaluation")
    assert sent == [] and executions(user) == [] and events(user, "margin_guard_execution") == []
    position.refresh_from_db()
    assert position.guard_armed  # still armed: the next tick at risk fires
    tick("BTC_USD", 97)
    assert len(executions(user)) == 1


@pytest.mark.django_db(transaction=True)
def test_a_position_locked_by_a_fill_is_seen_by_the_next_tick(make_user, trade):
    import threading

    from django.db import connection, transaction

    user = make_user()
    trade(user, "BUY", "1", "100", leverage=10)
    position = Position.objects.get(user=user)
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:  # a fill in progress elsewhere holds the position row
        with transaction.atomic():
            Position.objects.select_for_update().get(pk=position.pk)
            locked.set()
            release.wait(10)
        connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    assert locked.wait(10)
    tick("BTC_USD", 97)  # does not wait for the lock: skipped this time
    assert executions(user) == []
    release.set()
    holder.join(10)
    tick("BTC_USD", 97.1)  # still at risk: fires now
    assert len(executions(user)) == 1


def test_a_liquidation_the_orders_service_refuses_does_not_stop_the_ingest(long_btc):
    from market.models import Instrument, MarketState

    _, position = long_btc()
    Instrument.objects.filter(symbol="BTC_USD").update(lot_size=D("3"))  # 1 is no longer a lot
    tick("BTC_USD", 90)
    assert MarketState.objects.get(instrument__symbol="BTC_USD").price == 90  # the tick went in
    position.refresh_from_db()
    assert position.status == "open"  # refused, logged, retried on the next tick
    Instrument.objects.filter(symbol="BTC_USD").update(lot_size=D("0.001"))
    tick("BTC_USD", 89)
    position.refresh_from_db()
    assert position.status == "closed" and position.close_reason == "liquidation"


def test_liquidation_exactly_at_the_liquidation_price_fills_there(long_btc):
    _, position = long_btc(enabled=False)
    tick("BTC_USD", "90.5")
    position.refresh_from_db()
    assert position.close_reason == "liquidation" and position.realized_pnl == D("-9.5")


def test_one_bad_print_does_not_liquidate_but_a_real_move_does(long_btc):
    """Liquidation is judged at the mark price: the last trade, moving at most RISK_MARK_BAND (5 %) a
    tick. A print at half the price between two normal ones moves the mark by 5 %, not 50 %."""
    _, position = long_btc(enabled=False)  # 10x long at 100: liquidation at 90.5
    tick("BTC_USD", 100, 50, 100)
    position.refresh_from_db()
    assert position.status == "open"
    tick("BTC_USD", 91, 89, 89)  # a real move: the mark follows 95, 90.25 (through 90.5) ...
    position.refresh_from_db()
    assert position.close_reason == "liquidation"
    assert position.close_order.average_price == D("89")  # ... filled at the trade price of that tick
