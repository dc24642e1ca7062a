"""Helpers to place and drive orders in tests."""

from __future__ import annotations

import itertools
from decimal import Decimal

from margin.executions import execution_apply
from orders import services

_exec = itertools.count(1)

# The body of POST /api/orders for a plain limit order (SBIN-EQ, 10 at 625.5).
LIMIT = {
    "tradingSymbol": "SBIN-EQ",
    "exchange": "NSE",
    "orderType": "LIMIT",
    "transactionType": "BUY",
    "quantity": 10,
    "price": 625.5,
}


def place(user, *, symbol="SBIN-EQ", order_type="LIMIT", side="BUY", quantity="10", price="625.50", trigger=None, **kw):
    return services.order_place(
        user=user,
        trading_symbol=symbol,
        exchange=None,
        order_type=order_type,
        transaction_type=side,
        quantity=Decimal(quantity),
        price=None if price is None else Decimal(price),
        trigger_price=None if trigger is None else Decimal(trigger),
        **kw,
    )


def execute(order, kind, quantity=None, price=None, reason="", exec_id=None):
    return execution_apply(
        order_id=order.order_id,
        exec_id=exec_id or f"ex-{next(_exec)}",
        kind=kind,
        quantity=None if quantity is None else Decimal(str(quantity)),
        price=None if price is None else Decimal(str(price)),
        reason=reason,
    )
