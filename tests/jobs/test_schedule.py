"""The simulator's price source: the last price, and the path traded since the previous step."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from jobs.schedule import LatestPrices
from tests.margin.conftest import tick

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("instruments")]


def test_the_venue_sees_the_low_and_high_traded_since_its_last_step():
    prices = LatestPrices()
    tick("BTC_USD", 100)
    prices.refresh()
    assert prices.latest("BTC_USD") == D(100) and prices.path("BTC_USD") == (D(100), D(100))
    tick("BTC_USD", 95, 104, 101)
    prices.refresh()
    assert prices.latest("BTC_USD") == D(101) and prices.path("BTC_USD") == (D(95), D(104))
    prices.refresh()  # nothing traded since: the last price alone
    assert prices.path("BTC_USD") == (D(101), D(101))


def test_backfill_is_not_a_price_the_venue_sees_the_market_move_through():
    from datetime import UTC, datetime, timedelta

    from margin.ticks import ticks_ingest

    prices = LatestPrices()
    tick("BTC_USD", 100)
    prices.refresh()
    old = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    ticks_ingest([{"symbol": "BTC_USD", "price": "50", "volume": "1", "timestamp": old}])  # backfill
    tick("BTC_USD", 101)
    prices.refresh()
    assert prices.path("BTC_USD") == (D(101), D(101))
