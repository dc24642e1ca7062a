"""Market domain signals; receivers only broadcast (market/receivers.py)."""

from django.dispatch import Signal

# state=MarketState after a tick, candles=[Candle] it changed
market_changed = Signal()
# alerts=[PriceAlert] that fired on one tick, symbol
alerts_fired = Signal()
