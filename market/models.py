"""Tradable instruments."""

from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q


class Instrument(models.Model):
    symbol = models.CharField(max_length=32, unique=True)
    exchange = models.CharField(max_length=16)
    tick_size = models.DecimalField(max_digits=20, decimal_places=8)
    lot_size = models.DecimalField(max_digits=20, decimal_places=8)
    max_leverage = models.PositiveSmallIntegerField(default=1)
    maintenance_margin_rate = models.DecimalField(max_digits=6, decimal_places=5)
    # Starting price for the simulated feed and the paper venue before any tick arrives.
    reference_price = models.DecimalField(max_digits=20, decimal_places=8)
    # Relative standard deviation of one simulated tick (the built-in random-walk feed).
    volatility = models.DecimalField(max_digits=8, decimal_places=6, default=Decimal("0.0005"))
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

    def price_text(self, value) -> str:
        """A price for people to read: to the tick size's decimals, with thousands separators
        ("43,320.50", never "4.332E+4")."""
        exponent = self.tick_size.normalize().as_tuple().exponent
        assert isinstance(exponent, int)  # tick_size > 0 (a check constraint): finite, not NaN or infinite
        return decimal_text(value, places=max(0, -exponent))


def decimal_text(value, *, places: int = 2) -> str:
    """A number for people to read, rounded to ``places`` decimals, with thousands separators."""
    return f"{Decimal(str(value)).quantize(Decimal(1).scaleb(-places)):,.{places}f}"


class Timeframe(models.TextChoices):
    M1 = "1m"
    M5 = "5m"
    M15 = "15m"
    H1 = "1h"
    H4 = "4h"
    D1 = "1d"


TIMEFRAME_SECONDS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "4h": 14400, "1d": 86400}

PRICE: dict[str, Any] = {"max_digits": 24, "decimal_places": 8}


class Candle(models.Model):
    instrument = models.ForeignKey(Instrument, on_delete=models.CASCADE, related_name="candles")
    timeframe = models.CharField(max_length=4, choices=Timeframe.choices)
    start = models.DateTimeField()
    open = models.DecimalField(**PRICE)
    high = models.DecimalField(**PRICE)
    low = models.DecimalField(**PRICE)
    close = models.DecimalField(**PRICE)
    volume = models.DecimalField(max_digits=30, decimal_places=8, default=0)
    # The times of the ticks that set open and close: a late tick (backfill) becomes the open only if
    # it is earlier, the close only if it is later (null on candles from before these were kept).
    open_at = models.DateTimeField(null=True, blank=True)
    close_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["start"]
        constraints = [
            models.UniqueConstraint(fields=["instrument", "timeframe", "start"], name="candle_unique_bucket"),
            models.CheckConstraint(condition=Q(low__lte=models.F("high")), name="candle_low_le_high"),
        ]

    def __str__(self) -> str:
        return f"{self.instrument_id} {self.timeframe} {self.start:%Y-%m-%d %H:%M}"


class Tick(models.Model):
    """Raw ticks, kept for MARKET_TICK_RETENTION_HOURS (candles and the snapshot are kept)."""

    instrument = models.ForeignKey(Instrument, on_delete=models.CASCADE, related_name="ticks")
    price = models.DecimalField(**PRICE)
    volume = models.DecimalField(max_digits=30, decimal_places=8)
    timestamp = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.instrument_id} {self.price} @ {self.timestamp}"


class MarketState(models.Model):
    """The latest snapshot of an instrument, with its rolling 24 h figures."""

    instrument = models.OneToOneField(Instrument, on_delete=models.CASCADE, primary_key=True, related_name="state")
    price = models.DecimalField(**PRICE)
    change = models.DecimalField(**PRICE)
    change_percent = models.DecimalField(max_digits=12, decimal_places=4)
    volume = models.DecimalField(max_digits=30, decimal_places=8)
    high24h = models.DecimalField(**PRICE)
    low24h = models.DecimalField(**PRICE)
    timestamp = models.DateTimeField()
    # The mark price risk is judged at (market.services.ticks_record): the last trade, moving at most
    # RISK_MARK_BAND per tick, so one bad print cannot liquidate anyone.
    mark = models.DecimalField(null=True, blank=True, **PRICE)
    # When this state was written, by the database's clock (epoch seconds): the version its live
    # update carried (market.services.ticks_record), so a socket's snapshot on subscribe can be
    # ordered against the live updates it already got (gateway.hub.HubMember.watch, .floor). Null: written
    # before versions were kept.
    version = models.FloatField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.instrument_id} {self.price}"


class AlertCondition(models.TextChoices):
    ABOVE = "above"
    BELOW = "below"
    CROSSES = "crosses"


class PriceAlert(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="price_alerts")
    instrument = models.ForeignKey(Instrument, on_delete=models.CASCADE, related_name="alerts")
    condition = models.CharField(max_length=8, choices=AlertCondition.choices)
    price = models.DecimalField(**PRICE)
    active = models.BooleanField(default=True)
    note = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    triggered_at = models.DateTimeField(null=True, blank=True)
    triggered_price = models.DecimalField(null=True, blank=True, **PRICE)

    class Meta:
        ordering = ["-id"]
        # Active alerts per symbol, ordered by threshold: a tick reads only the alerts it fires.
        indexes = [
            models.Index(
                fields=["instrument", "condition", "price"], name="alert_active_threshold", condition=Q(active=True)
            )
        ]
        constraints = [
            models.CheckConstraint(condition=Q(price__gt=0), name="alert_price_positive"),
            models.CheckConstraint(
                condition=Q(active=True, triggered_at__isnull=True) | Q(active=False), name="alert_active_not_triggered"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} {self.instrument_id} {self.condition} {self.price}"
