"""Reads of market state shared by the API and the consumers."""

from __future__ import annotations

import time
from datetime import datetime
from decimal import Decimal

from channels.db import database_sync_to_async

from wire import dumps

from .events import market_data_update
from .models import Candle, Instrument, MarketState

_SYMBOLS_TTL = 5.0
_symbols: tuple[float, frozenset[str]] = (0.0, frozenset())


def instrument_symbols() -> frozenset[str]:
    """Symbols of active instruments, cached for a few seconds per process."""
    global _symbols
    stamp, symbols = _symbols
    if time.monotonic() - stamp > _SYMBOLS_TTL:
        symbols = frozenset(Instrument.objects.filter(active=True).values_list("symbol", flat=True))
        _symbols = (time.monotonic(), symbols)
    return symbols


async def instrument_symbols_async() -> frozenset[str]:
    stamp, symbols = _symbols
    if time.monotonic() - stamp <= _SYMBOLS_TTL:
        return symbols
    return await database_sync_to_async(instrument_symbols)()


def instrument_symbols_forget() -> None:
    global _symbols
    _symbols = (0.0, frozenset())


def snapshot_get(*, symbol: str) -> MarketState | None:
    return MarketState.objects.select_related("instrument").filter(instrument__symbol=symbol).first()


async def snapshot_text_async(symbol: str) -> tuple[str, float | None] | None:
    """The current ``market_data_update`` for a symbol, ready to send, with its version (when the
    state was written, by the database's clock; None if written before versions were kept), or
    None before any tick."""

    state = await database_sync_to_async(snapshot_get)(symbol=symbol)
    return None if state is None else (dumps(market_data_update(state)), state.version)


def last_traded_price(instrument: Instrument) -> Decimal | None:
    """The instrument's last traded price, or None before its first trade: its market state as read
    with it (``select_related("state")``), else read now."""
    try:
        return instrument.state.price
    except MarketState.DoesNotExist:
        return None


def latest_prices() -> dict:
    """Latest price per active symbol: the last tick, or the reference price before any."""

    prices = {i.symbol: i.reference_price for i in Instrument.objects.filter(active=True)}
    for symbol, price in MarketState.objects.filter(instrument__active=True).values_list("instrument__symbol", "price"):
        prices[symbol] = price
    return prices


def latest_times() -> dict[str, datetime]:
    """The time of the live price per symbol (the latest tick that was not backfill)."""
    return dict(MarketState.objects.filter(instrument__active=True).values_list("instrument__symbol", "timestamp"))


def candles_list(
    *, symbol: str, timeframe: str, since: datetime | None = None, until: datetime | None = None, limit: int = 500
) -> list[Candle]:
    qs = Candle.objects.filter(instrument__symbol=symbol, timeframe=timeframe)
    if since:
        qs = qs.filter(start__gte=since)
    if until:
        qs = qs.filter(start__lt=until)
    return list(reversed(qs.order_by("-start")[:limit]))
