"""Reads of market state shared by the API and the consumers."""

from __future__ import annotations

import time

from channels.db import database_sync_to_async

from .models import Instrument

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
