"""The paper-trading venue: accepts live orders and fills them against the latest prices, through
the same execution service the executions API uses (so replays and races behave the same).

MARKET fills at once; LIMIT when the price crosses (at the better of limit and market); SL/SL-M
wait in TRIGGER_PENDING until the price crosses the trigger, then behave as LIMIT/MARKET; AMO
orders are queued, then opened on the next step. An order larger than the liquidity per step is
filled in parts.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.db.models import Q

from core.errors import Conflict
from margin.executions import execution_apply
from orders.models import Order, OrderStatus, OrderType, Side

LIQUIDITY_LOTS_PER_STEP = 50  # fill at most this many lots of an order per step


def _exec_id() -> str:
    return f"sim-{uuid.uuid4().hex}"


def _crossed(order: Order, price: Decimal, level: Decimal | None) -> bool:
    assert level is not None  # the order's limit: LIMIT and SL orders have one (a check constraint)
    return price <= level if order.transaction_type == Side.BUY else price >= level


def _stop_triggered(order: Order, price: Decimal) -> bool:
    trigger = order.trigger_price
    assert trigger is not None  # only stop orders wait for a trigger, and they have one (a check constraint)
    return price >= trigger if order.transaction_type == Side.BUY else price <= trigger


class PaperVenue:
    def __init__(self, prices) -> None:
        self.prices = prices

    def step(self) -> int:
        """Process every live order once against the latest prices. Returns reports applied."""
        applied = 0
        live = (
            Order.objects.filter(
                Q(
                    order_status__in=[
                        OrderStatus.PENDING,
                        OrderStatus.OPEN,
                        OrderStatus.TRIGGER_PENDING,
                        OrderStatus.AMO,
                    ]
                )
            )
            .select_related("instrument")
            .order_by("id")
        )
        for order in live:
            price = self.prices.latest(order.instrument.symbol)
            if price is None:
                continue
            try:
                applied += self._work(order, price)
            except Conflict:
                continue  # the user cancelled or modified it meanwhile: next step sees the new state
        return applied

    def _report(self, order: Order, kind: str, **kw) -> int:
        _, done = execution_apply(order_id=order.order_id, exec_id=_exec_id(), kind=kind, **kw)
        return int(done)

    def _work(self, order: Order, price: Decimal) -> int:
        status, kind = order.order_status, order.order_type
        if status == OrderStatus.AMO:
            return self._report(order, "accept")
        if status == OrderStatus.TRIGGER_PENDING:
            return self._report(order, "accept") if _stop_triggered(order, price) else 0
        marketable = kind in (OrderType.MARKET, OrderType.SL_M) or _crossed(order, price, order.price)
        if status == OrderStatus.PENDING and (order.amo or kind in (OrderType.SL, OrderType.SL_M) or not marketable):
            return self._report(order, "accept")
        if not marketable:
            return 0
        fill_price = price
        if order.price is not None:  # a limit never fills worse than its limit
            fill_price = min(price, order.price) if order.transaction_type == Side.BUY else max(price, order.price)
        quantity = min(order.pending_quantity, order.instrument.lot_size * LIQUIDITY_LOTS_PER_STEP)
        return self._report(order, "fill", quantity=quantity, price=fill_price)
