"""The default instrument set, loaded by a data migration (and by tests after a flush)."""

from decimal import Decimal

DEFAULT_INSTRUMENTS = [
    # symbol, exchange, tick, lot, max leverage, maintenance margin rate, reference price
    ("BTC_USD", "AXISOR", "0.5", "0.001", 100, "0.005", "43250.50"),
    ("ETH_USD", "AXISOR", "0.05", "0.01", 50, "0.01", "2300.00"),
    ("SBIN-EQ", "NSE", "0.05", "1", 5, "0.1", "625.50"),
    ("RELIANCE-EQ", "NSE", "0.05", "1", 5, "0.1", "2450.00"),
]


def load_default_instruments(instrument_model) -> None:
    for symbol, exchange, tick, lot, lev, mmr, ref in DEFAULT_INSTRUMENTS:
        instrument_model.objects.update_or_create(
            symbol=symbol,
            defaults={
                "exchange": exchange,
                "tick_size": Decimal(tick),
                "lot_size": Decimal(lot),
                "max_leverage": lev,
                "maintenance_margin_rate": Decimal(mmr),
                "reference_price": Decimal(ref),
                "active": True,
            },
        )
