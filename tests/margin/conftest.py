from __future__ import annotations

from decimal import Decimal

import pytest

from tests.orders.factories import execute, place


@pytest.fixture
def trade(instruments):
    """``trade(user, side, quantity, price, symbol=..., leverage=...)``: a MARKET order filled at once."""

    def run(user, side: str, quantity, price, *, symbol: str = "BTC_USD", leverage: int = 10):
        order = place(
            user, symbol=symbol, order_type="MARKET", side=side, quantity=str(quantity), price=None, leverage=leverage
        )
        execute(order, "fill", quantity=quantity, price=price)
        order.refresh_from_db()
        return order

    return run


def tick(symbol: str, *prices) -> None:
    from margin.ticks import ticks_ingest

    ticks_ingest([{"symbol": symbol, "price": str(Decimal(str(p))), "volume": "1"} for p in prices])
