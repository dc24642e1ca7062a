"""Positions from fills: open, add, reduce, flip, close; pnl and liquidation price follow."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from django.core.exceptions import ValidationError

from margin.models import Position
from tests.orders.factories import place

pytestmark = pytest.mark.django_db


def open_position(user, symbol="BTC_USD"):
    return Position.objects.get(user=user, instrument__symbol=symbol, status="open")


def test_open_add_reduce_close(make_user, trade):
    user = make_user()
    trade(user, "BUY", "1", "100", leverage=10)
    p = open_position(user)
    assert (p.side, p.quantity, p.entry_price, p.leverage) == ("long", 1, 100, 10)
    assert p.liquidation_price == D("90.5")  # BTC_USD m = 0.005
    assert p.size == 100 and p.margin == 10

    trade(user, "BUY", "1", "110", leverage=10)  # add: average entry, same leverage
    p = open_position(user)
    assert (p.quantity, p.entry_price, p.leverage) == (2, 105, 10)
    assert p.liquidation_price == D("95.025")  # 105 × 0.905

    trade(user, "SELL", "0.5", "115")  # reduce: realize 0.5 × (115 − 105)
    p = open_position(user)
    assert (p.quantity, p.entry_price, p.realized_pnl) == (D("1.5"), 105, 5)

    trade(user, "SELL", "1.5", "100")  # close: realize 1.5 × (100 − 105)
    p.refresh_from_db()
    assert p.status == "closed" and p.closed_at is not None and p.close_reason == "order"
    assert p.realized_pnl == D("-2.5") and p.quantity == D("1.5")
    assert not Position.objects.filter(user=user, status="open").exists()


def test_adding_with_other_leverage_weights_the_margin(make_user, trade):
    user = make_user()
    trade(user, "BUY", "1", "100", leverage=10)  # margin 10
    trade(user, "BUY", "1", "100", leverage=2)  # margin 50
    p = open_position(user)
    assert p.leverage == D("3.33")  # size 200 / margin 60
    assert p.liquidation_price == (100 * (1 - 1 / D("3.33") + D("0.005"))).quantize(D("1e-8"))


def test_flip_closes_the_row_and_opens_the_other_side(make_user, trade):
    user = make_user()
    trade(user, "SELL", "1", "100", leverage=5)
    short = open_position(user)
    assert short.side == "short" and short.liquidation_price == D("119.5")  # 100 × (1 + 0.2 − 0.005)
    trade(user, "BUY", "3", "90", leverage=20)
    short.refresh_from_db()
    assert short.status == "closed" and short.realized_pnl == 10 and short.close_reason == "flipped"
    long = open_position(user)
    assert (long.side, long.quantity, long.entry_price, long.leverage, long.realized_pnl) == ("long", 2, 90, 20, 0)


def test_positions_are_per_user_and_instrument(make_user, trade):
    a, b = make_user(), make_user()
    trade(a, "BUY", "1", "100")
    trade(a, "SELL", "2", "2000", symbol="ETH_USD")
    trade(b, "SELL", "1", "100")
    assert open_position(a).side == "long" and open_position(a, "ETH_USD").side == "short"
    assert open_position(b).side == "short"


def test_partial_fills_build_the_position_step_by_step(make_user, instruments):
    from tests.orders.factories import execute

    user = make_user()
    order = place(user, symbol="ETH_USD", order_type="MARKET", quantity="2", price=None, leverage=4)
    execute(order, "fill", quantity="1", price="2000")
    assert open_position(user, "ETH_USD").quantity == 1
    execute(order, "fill", quantity="1", price="2100")
    p = open_position(user, "ETH_USD")
    assert (p.quantity, p.entry_price, p.leverage) == (2, 2050, 4)


def test_leverage_at_or_beyond_the_maintenance_margin_is_refused(make_user, instruments):
    from market.models import Instrument

    Instrument.objects.filter(symbol="ETH_USD").update(maintenance_margin_rate=D("0.05"), max_leverage=50)
    user = make_user()
    with pytest.raises(ValidationError) as err:
        place(user, symbol="ETH_USD", order_type="MARKET", quantity="1", price=None, leverage=20)
    assert "leverage" in err.value.message_dict
    place(user, symbol="ETH_USD", order_type="MARKET", quantity="1", price=None, leverage=19)
