"""The market app's wire events (seed 000): market data and candles on market rooms (conflated value
streams, not logged), price alerts on the owner's stream (logged)."""

from __future__ import annotations

from wire import envelope, iso, num

MARKET_DATA_UPDATE = "market_data_update"
HISTORICAL_DATA_UPDATE = "historical_data_update"
PRICE_ALERT = "price_alert"


def snapshot_data(state) -> dict:
    return {
        "symbol": state.instrument.symbol if hasattr(state, "instrument") else state.instrument_id,
        "price": num(state.price),
        "change": num(state.change),
        "changePercent": num(state.change_percent),
        "volume": num(state.volume),
        "high24h": num(state.high24h),
        "low24h": num(state.low24h),
        "timestamp": iso(state.timestamp),
    }


def market_data_key(symbol: str) -> str:
    """The conflation key of a symbol's ``market_data_update``: a newer one replaces an older one."""
    return f"md:{symbol}"


def market_data_update(state) -> dict:
    return envelope(MARKET_DATA_UPDATE, "market_data", snapshot_data(state))


def candle_data(candle) -> dict:
    return {
        "time": int(candle.start.timestamp()),
        "open": num(candle.open),
        "high": num(candle.high),
        "low": num(candle.low),
        "close": num(candle.close),
        "volume": num(candle.volume),
    }


def historical_data_update(symbol: str, timeframe: str, candles: list, timestamp) -> dict:
    return envelope(
        HISTORICAL_DATA_UPDATE,
        "historical_data",
        {
            "symbol": symbol,
            "timeframe": timeframe,
            "candles": [candle_data(c) for c in candles],
            "timestamp": iso(timestamp),
        },
    )


def price_alert_data(alert, symbol: str) -> dict:
    return {
        "id": str(alert.pk),
        "symbol": symbol,
        "condition": alert.condition,
        "price": num(alert.price),
        "currentPrice": num(alert.triggered_price),
        "triggeredAt": iso(alert.triggered_at),
        "note": alert.note,
    }


def price_alert_event(alert, symbol: str) -> dict:
    return envelope(PRICE_ALERT, "alerts", price_alert_data(alert, symbol))
