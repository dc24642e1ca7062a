"""The default instrument set, loaded by a data migration (and by tests after a flush)."""

from decimal import Decimal

DEFAULT_INSTRUMENTS = [
    # symbol, exchange, tick, lot, max leverage, maintenance margin rate, reference price, volatility
    ("BTC_USD", "AXISOR", "0.5", "0.001", 100, "0.005", "43250.50", "0.0008"),
    ("ETH_USD", "AXISOR", "0.05", "0.01", 50, "0.01", "2300.00", "0.0010"),
    ("SBIN-EQ", "NSE", "0.05", "1", 5, "0.1", "625.50", "0.0004"),
    ("RELIANCE-EQ", "NSE", "0.05", "1", 5, "0.1", "2450.00", "0.0003"),
]


def load_default_instruments(instrument_model) -> None:
    fields = {f.name for f in instrument_model._meta.get_fields()}
    for symbol, exchange, tick, lot, lev, mmr, ref, vol in DEFAULT_INSTRUMENTS:
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
                # the 0002 migration runs before the field exists
                **({"volatility": Decimal(vol)} if "volatility" in fields else {}),
            },
        )
