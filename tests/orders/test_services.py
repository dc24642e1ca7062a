"""The order state machine through the services, and what each change broadcasts."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from broadcast.models import EventLog
from core.errors import Conflict
from orders.models import Order, OrderStatus, Trade
from orders.services import TRANSITIONS, order_accept, order_cancel, order_modify, order_reject
from tests.orders.factories import execute, place

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("instruments")]


@pytest.fixture
def user(make_user):
    return make_user("trader")


def updates(order):
    return list(order.updates.order_by("version").values_list("update_type", flat=True))


def test_two_fills_emit_placed_trade_partial_trade_executed(user, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as sent:
        order = place(user, quantity="10", price="625.50")
        execute(order, "fill", 4, "625.50")
        order, applied = execute(order, "fill", 6, "625.40")
    assert applied and order.order_status == OrderStatus.COMPLETE
    assert updates(order) == ["ORDER_PLACED", "TRADE_UPDATE", "ORDER_PARTIAL", "TRADE_UPDATE", "ORDER_EXECUTED"]
    assert order.version == 5 and order.pending_quantity == 0 and order.filled_quantity == 10
    assert order.average_price == Decimal("625.44")  # (4×625.50 + 6×625.40) / 10
    # five order updates, the "Order executed" notification, and the position's values after each fill
    assert len(sent) == 8
    events = list(EventLog.objects.filter(user=user, type="order_update").order_by("seq"))
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    note = EventLog.objects.get(user=user, type="in_app_notification")
    assert note.seq == 6 and note.payload["data"]["category"] == "orders"
    assert note.payload["data"]["data"] == {"orderId": order.order_id, "orderStatus": "COMPLETE"}
    trade_event = events[1].payload
    assert trade_event["type"] == "order_update" and trade_event["channel"] == "orders"
    assert trade_event["data"]["tradeQuantity"] == 4 and trade_event["data"]["tradePrice"] == 625.5
    assert trade_event["data"]["execId"] and trade_event["data"]["tradeId"]
    assert events[-1].payload["data"]["averagePrice"] == 625.44


def test_replayed_exec_id_changes_nothing_and_sends_nothing(user):
    order = place(user)
    execute(order, "fill", 4, "625.50", exec_id="venue-1")
    before = EventLog.objects.count()
    order, applied = execute(order, "fill", 4, "625.50", exec_id="venue-1")
    assert not applied and order.filled_quantity == 4 and Trade.objects.count() == 1
    assert EventLog.objects.count() == before
    with pytest.raises(Conflict):
        execute(order, "cancel", exec_id="venue-1")


def test_accept_paths(user):
    limit = place(user)
    assert order_accept(order=limit).order_status == OrderStatus.OPEN
    stop = place(user, order_type="SL-M", price=None, trigger="600")
    assert order_accept(order=stop).order_status == OrderStatus.TRIGGER_PENDING
    assert order_accept(order=stop).order_status == OrderStatus.OPEN
    amo = place(user, amo=True)
    assert order_accept(order=amo).order_status == "AFTER_MARKET_ORDER_REQ_RECEIVED"
    assert updates(limit) == ["ORDER_PLACED", "ORDER_STATUS"]


def test_terminal_states_never_change(user):
    order = place(user)
    order_accept(order=order)
    order_cancel(order=order)
    for action in (
        lambda: order_cancel(order=order),
        lambda: order_accept(order=order),
        lambda: order_reject(order=order, reason="late"),
        lambda: execute(order, "fill", 1, "625"),
    ):
        with pytest.raises(Conflict):
            action()
    with pytest.raises(Conflict):
        order_modify(order=order, price=Decimal("600"))
    order.refresh_from_db()
    assert order.order_status == OrderStatus.CANCELLED and order.pending_quantity == 0


def test_pending_can_be_cancelled_or_rejected_once(user):
    withdrawn = order_cancel(order=place(user))
    assert withdrawn.order_status == OrderStatus.CANCELLED and updates(withdrawn)[-1] == "ORDER_CANCELLED"
    with pytest.raises(Conflict):
        order_reject(order=withdrawn, reason="too late")
    rejected = order_reject(order=place(user), reason="Insufficient funds")
    assert rejected.order_status == OrderStatus.REJECTED and rejected.rejection_reason == "Insufficient funds"
    assert updates(rejected)[-1] == "ORDER_REJECTED"
    with pytest.raises(Conflict):
        order_cancel(order=rejected)


def test_modify_rules(user):
    order = place(user, quantity="10")
    order_accept(order=order)
    execute(order, "fill", 4, "625.50")
    with pytest.raises(ValidationError) as err:
        order_modify(order=order, quantity=Decimal("4"))
    assert "quantity" in err.value.message_dict
    modified = order_modify(order=order, quantity=Decimal("20"), price=Decimal("624"))
    assert modified.pending_quantity == 16 and modified.price == Decimal("624")
    with pytest.raises(ValidationError):
        order_modify(order=order, trigger_price=Decimal("600"))  # a LIMIT has no trigger
    with pytest.raises(ValidationError):
        order_modify(order=order, price=Decimal("624.03"))  # off tick
    assert updates(modified)[-1] == "ORDER_MODIFIED"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"symbol": "NOPE"}, "tradingSymbol"),
        ({"quantity": "0"}, "quantity"),
        ({"quantity": "1.5"}, "quantity"),
        ({"order_type": "LIMIT", "price": None}, "price"),
        ({"order_type": "MARKET", "price": "600"}, "price"),
        ({"order_type": "SL", "price": "600", "trigger": None}, "triggerPrice"),
        ({"order_type": "SL", "side": "BUY", "price": "590", "trigger": "600"}, "price"),
        ({"price": "625.51"}, "price"),
        ({"leverage": 6}, "leverage"),
    ],
)
def test_bad_orders_are_refused_and_write_nothing(user, kwargs, field):
    with pytest.raises(ValidationError) as err:
        place(user, **kwargs)
    assert field in err.value.message_dict
    assert Order.objects.count() == 0 and EventLog.objects.count() == 0


def test_overfill_is_a_conflict(user):
    order = place(user, quantity="10")
    with pytest.raises(Conflict):
        execute(order, "fill", 11, "625")
    order.refresh_from_db()
    assert order.filled_quantity == 0 and order.order_status == OrderStatus.PENDING


def test_transition_table_is_the_issue_table():
    S = OrderStatus
    assert TRANSITIONS == {
        S.PENDING: {S.OPEN, S.CANCELLED, S.REJECTED, S.TRIGGER_PENDING, S.AMO},  # withdrawn: CANCELLED
        S.TRIGGER_PENDING: {S.OPEN, S.CANCELLED, S.REJECTED},
        S.AMO: {S.OPEN, S.CANCELLED, S.REJECTED},
        S.OPEN: {S.COMPLETE, S.CANCELLED},
    }


@pytest.mark.django_db
def test_pending_quantity_constraint_refuses_one_unit_off(make_user, instruments):
    """The live-order constraint allows half a unit of the last decimal place (SQLite sums in
    floating point), not one unit: an order whose pending is off by 0.00000001 cannot be stored."""
    from django.db import IntegrityError, transaction

    from orders.models import Order
    from tests.orders.factories import place

    order = place(make_user("units"))
    with pytest.raises(IntegrityError), transaction.atomic():
        Order.objects.filter(pk=order.pk).update(pending_quantity=order.quantity + Decimal("0.00000001"))
