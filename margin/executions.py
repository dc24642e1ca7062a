"""Executions: a venue's reports applied once, and a fill carried through the order and the
position in one transaction. Above both orders and positions; the margin guard sits above this."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from core.errors import Conflict
from orders.models import LIVE, ExecutionReport, Order, Side, Trade
from orders.services import order_accept, order_cancel, order_fill_record, order_lock, order_reject, order_trade_add

from .models import Position, PositionStatus
from .positions import position_apply_fill


@transaction.atomic
def execution_fill(
    *,
    order: Order | str,
    exec_id: str,
    quantity: Decimal | None,
    price: Decimal | None,
    executed_at: datetime | None = None,
    liquidation: bool = False,
    banded: bool = False,
) -> Trade | None:
    """One execution leg: the order's side, then the position (its row is locked before the user's
    event sequence, as everywhere: margin/positions.py), then the order's updates.

    A reduce-only order never opens or flips a position: its fill is clamped to the position it
    reduces and whatever it could not fill is cancelled (no trade at all when nothing is left)."""
    order = order_lock(order)
    clamped = False
    if order.reduce_only and quantity is not None:
        reducible = _reducible(order)
        if quantity > reducible:
            quantity, clamped = reducible, True
        if quantity <= 0:
            order_cancel(order=order)
            return None
    order, trade = order_trade_add(
        order=order,
        exec_id=exec_id,
        quantity=quantity,
        price=price,
        executed_at=executed_at,
        liquidation=liquidation,
        banded=banded,
    )
    assert quantity is not None and price is not None  # order_trade_add refuses a fill without them
    position_apply_fill(order=order, quantity=quantity, price=price)
    order_fill_record(order=order, trade=trade)
    if clamped and order.order_status in LIVE:
        order_cancel(order=order)
    return trade


def _reducible(order: Order) -> Decimal:
    """How much of the user's position in the order's instrument the order can reduce (locks it)."""
    position = (
        Position.objects.select_for_update(of=("self",))
        .filter(user_id=order.user_id, instrument_id=order.instrument_id, status=PositionStatus.OPEN)
        .first()
    )
    if position is None or (position.side == "long") == (order.transaction_type == Side.BUY):
        return Decimal(0)
    return position.quantity


@transaction.atomic
def execution_apply(
    *,
    order_id: str,
    exec_id: str,
    kind: str,
    quantity: Decimal | None = None,
    price: Decimal | None = None,
    reason: str = "",
    executed_at: datetime | None = None,
    liquidation: bool = False,
    outside: bool = False,
) -> tuple[Order, bool]:
    """Apply a venue's execution report once. Returns (order, applied); a replayed execId
    changes nothing, sends nothing and returns applied=False. ``outside``: the report comes from
    outside the paper venue (``POST /api/internal/executions``): a MARKET or SL-M fill must be
    priced within ``AXISOR_RISK["FILL_BAND"]`` of the last price (``orders.services.order_trade_add``);
    the paper venue fills at the market it reads, a liquidation at the worse of the market and the
    liquidation price."""
    if kind not in ExecutionReport.Kind.values:
        raise ValidationError({"type": "must be accept, fill, reject or cancel"})
    reason = (reason or "")[:255]
    order = order_lock(order_id)  # serialises reports for one order, replays included
    existing = ExecutionReport.objects.filter(exec_id=exec_id).first()
    if existing is None:
        try:
            with transaction.atomic():
                ExecutionReport.objects.create(
                    exec_id=exec_id, order=order, kind=kind, quantity=quantity, price=price, reason=reason
                )
        except IntegrityError:
            # The same execId committed meanwhile for another order (the order lock covers only ours).
            existing = ExecutionReport.objects.get(exec_id=exec_id)
    if existing is not None:
        if existing.order_id != order.pk or existing.kind != kind:
            raise Conflict(f"execId {exec_id} was already used for another report", code="exec_id_reused")
        return order, False
    if kind == ExecutionReport.Kind.ACCEPT:
        order_accept(order=order)
    elif kind == ExecutionReport.Kind.FILL:
        execution_fill(
            order=order,
            exec_id=exec_id,
            quantity=quantity,
            price=price,
            executed_at=executed_at,
            liquidation=liquidation,
            banded=outside,
        )
    elif kind == ExecutionReport.Kind.REJECT:
        order_reject(order=order, reason=reason or "rejected by venue")
    else:
        order_cancel(order=order)
    order.refresh_from_db()
    return order, True
