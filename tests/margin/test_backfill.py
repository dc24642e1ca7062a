"""Late ticks are backfill: ticks in a call are applied in time order, and a tick older than the
live state updates the candles only (open, high, low, close and volume as if it had come in time),
never the live price, the alerts or the positions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest

from margin.models import Position
from margin.ticks import ticks_ingest
from market.models import Candle, MarketState, PriceAlert
from market.services import price_alert_create

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("instruments")]

BASE = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=10)


def at(seconds: int) -> str:
    return (BASE + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def ingest(*ticks: tuple[int, str]) -> None:
    ticks_ingest([{"symbol": "BTC_USD", "price": p, "volume": "1", "timestamp": at(s)} for s, p in ticks])


def minute() -> Candle:
    return Candle.objects.get(instrument__symbol="BTC_USD", timeframe="1m", start=BASE)


def test_a_late_tick_fixes_the_candle_and_leaves_the_live_state_alone(make_user, trade):
    ingest((10, "100"), (20, "110"))
    user = make_user()
    alert = price_alert_create(user=user, symbol="BTC_USD", condition="below", price=D("96"))
    trade(user, "BUY", "1", "105", leverage=10)  # liquidation at ~95
    ingest((5, "94"), (15, "105"))  # both older than the live 110 at :20
    candle = minute()
    assert (candle.open, candle.high, candle.low, candle.close, candle.volume) == (D(94), D(110), D(94), D(110), D(4))
    state = MarketState.objects.get(instrument__symbol="BTC_USD")
    assert state.price == D(110) and state.timestamp == BASE + timedelta(seconds=20)
    assert PriceAlert.objects.get(pk=alert.pk).active  # 94 is history, not a price that moved
    assert Position.objects.get(user=user).status == "open"  # nor a liquidation


def test_ticks_in_one_call_are_applied_in_time_order():
    ingest((30, "120"), (10, "100"), (20, "110"))
    candle = minute()
    assert (candle.open, candle.close) == (D(100), D(120))
    assert MarketState.objects.get(instrument__symbol="BTC_USD").price == D(120)


def test_a_late_tick_in_a_new_candle_makes_that_candle_only():
    ingest((70, "100"))  # the next minute is live
    ingest((10, "90"))  # backfill of the minute before
    assert (minute().open, minute().close) == (D(90), D(90))
    assert MarketState.objects.get(instrument__symbol="BTC_USD").price == D(100)
