"""Tradable instruments."""

from django.db import models


class Instrument(models.Model):
    symbol = models.CharField(max_length=32, unique=True)
    exchange = models.CharField(max_length=16)
    tick_size = models.DecimalField(max_digits=20, decimal_places=8)
    lot_size = models.DecimalField(max_digits=20, decimal_places=8)
    max_leverage = models.PositiveSmallIntegerField(default=1)
    maintenance_margin_rate = models.DecimalField(max_digits=6, decimal_places=5)
    # Starting price for the simulated feed and the paper venue before any tick arrives.
    reference_price = models.DecimalField(max_digits=20, decimal_places=8)
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["symbol"]
        constraints = [
            models.UniqueConstraint(fields=["symbol", "exchange"], name="market_instrument_symbol_exchange"),
            models.CheckConstraint(condition=models.Q(tick_size__gt=0), name="market_instrument_tick_positive"),
            models.CheckConstraint(condition=models.Q(lot_size__gt=0), name="market_instrument_lot_positive"),
            models.CheckConstraint(condition=models.Q(max_leverage__gte=1), name="market_instrument_leverage_min"),
            models.CheckConstraint(
                condition=models.Q(maintenance_margin_rate__gte=0, maintenance_margin_rate__lt=1),
                name="market_instrument_mmr_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.symbol} ({self.exchange})"
