"""Orders, their append-only update history, trades, execution reports, order-socket sessions and
idempotency keys. Row invariants are database constraints too; transitions live in services.py."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import F, Q, Value
from django.utils import timezone


class OrderStatus(models.TextChoices):
    PENDING = "PENDING"
    OPEN = "OPEN"
    COMPLETE = "COMPLETE"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"
    TRIGGER_PENDING = "TRIGGER_PENDING"
    AMO = "AFTER_MARKET_ORDER_REQ_RECEIVED"


TERMINAL = frozenset({OrderStatus.COMPLETE, OrderStatus.CANCELLED, OrderStatus.REJECTED})
LIVE = frozenset(set(OrderStatus) - TERMINAL)


class OrderType(models.TextChoices):
    MARKET = "MARKET"
    LIMIT = "LIMIT"
    SL = "SL"
    SL_M = "SL-M"


PRICED = frozenset({OrderType.LIMIT, OrderType.SL})
TRIGGERED = frozenset({OrderType.SL, OrderType.SL_M})


class Validity(models.TextChoices):
    DAY = "DAY"  # until the end of the session (around the clock: the next midnight UTC)
    IOC = "IOC"  # fill what can be filled at once, cancel the rest
    GTC = "GTC"  # until filled or cancelled


class Side(models.TextChoices):
    BUY = "BUY"
    SELL = "SELL"


class UpdateType(models.TextChoices):
    ORDER_PLACED = "ORDER_PLACED"
    ORDER_STATUS = "ORDER_STATUS"  # accepted by the venue / stop triggered (the seed's example type)
    ORDER_MODIFIED = "ORDER_MODIFIED"
    ORDER_CANCELLED = "ORDER_CANCELLED"
    ORDER_REJECTED = "ORDER_REJECTED"
    ORDER_EXECUTED = "ORDER_EXECUTED"
    ORDER_PARTIAL = "ORDER_PARTIAL"
    TRADE_UPDATE = "TRADE_UPDATE"


QTY: dict[str, Any] = {"max_digits": 24, "decimal_places": 8}
HALF_UNIT = Value(Decimal("0.000000005"))  # half of QTY's last decimal place


class Order(models.Model):
    order_id = models.CharField(max_length=20, unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="orders")
    instrument = models.ForeignKey("market.Instrument", on_delete=models.PROTECT, related_name="orders")
    order_type = models.CharField(max_length=8, choices=OrderType.choices)
    transaction_type = models.CharField(max_length=4, choices=Side.choices)
    quantity = models.DecimalField(**QTY)
    filled_quantity = models.DecimalField(default=0, **QTY)
    pending_quantity = models.DecimalField(**QTY)
    price = models.DecimalField(null=True, blank=True, **QTY)
    trigger_price = models.DecimalField(null=True, blank=True, **QTY)
    # Sum of fill quantity × fill price; averagePrice = filled_notional / filled_quantity.
    filled_notional = models.DecimalField(default=0, max_digits=36, decimal_places=16)
    average_price = models.DecimalField(default=0, **QTY)
    order_status = models.CharField(max_length=40, choices=OrderStatus.choices, default=OrderStatus.PENDING)
    rejection_reason = models.CharField(max_length=255, blank=True, default="")
    leverage = models.PositiveSmallIntegerField(default=1)
    amo = models.BooleanField(default=False, help_text="after-market order")
    # Only ever reduces the position: each fill is clamped to it, the rest cancelled (margin.executions).
    reduce_only = models.BooleanField(default=False)
    # The client's own id for the order (unique per user when given), echoed on every update.
    client_order_id = models.CharField(max_length=64, blank=True, default="")
    validity = models.CharField(max_length=3, choices=Validity.choices, default=Validity.GTC)
    expires_at = models.DateTimeField(null=True, blank=True)  # DAY orders: when the venue cancels them
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["user", "order_status"]), models.Index(fields=["order_status", "id"])]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "client_order_id"],
                condition=~Q(client_order_id=""),
                name="order_client_order_id_unique_per_user",
            ),
            models.CheckConstraint(condition=Q(quantity__gt=0), name="order_quantity_positive"),
            models.CheckConstraint(
                condition=Q(filled_quantity__gte=0, filled_quantity__lte=F("quantity")), name="order_filled_in_range"
            ),
            models.CheckConstraint(
                condition=(
                    Q(
                        order_status__in=sorted(s.value for s in LIVE),
                        # Within half a unit of the last decimal place: exact on PostgreSQL's
                        # numeric, and it lets SQLite (the embedded demo), which does this sum in
                        # binary floating point, accept 1 - 0.15 = 0.85.
                        pending_quantity__gte=F("quantity") - F("filled_quantity") - HALF_UNIT,
                        pending_quantity__lte=F("quantity") - F("filled_quantity") + HALF_UNIT,
                    )
                    | Q(order_status__in=sorted(s.value for s in TERMINAL), pending_quantity=0)
                ),
                name="order_pending_is_unfilled_while_live",
            ),
            models.CheckConstraint(
                condition=~Q(order_status=OrderStatus.COMPLETE) | Q(filled_quantity=F("quantity")),
                name="order_complete_is_filled",
            ),
            models.CheckConstraint(
                condition=Q(filled_quantity=0, filled_notional=0, average_price=0)
                | Q(filled_quantity__gt=0, average_price__gt=0),
                name="order_average_iff_filled",
            ),
            models.CheckConstraint(
                condition=Q(order_type__in=sorted(t.value for t in PRICED), price__gt=0)
                | ~Q(order_type__in=sorted(t.value for t in PRICED)) & Q(price__isnull=True),
                name="order_price_matches_type",
            ),
            models.CheckConstraint(
                condition=Q(order_type__in=sorted(t.value for t in TRIGGERED), trigger_price__gt=0)
                | ~Q(order_type__in=sorted(t.value for t in TRIGGERED)) & Q(trigger_price__isnull=True),
                name="order_trigger_matches_type",
            ),
            models.CheckConstraint(condition=Q(leverage__gte=1), name="order_leverage_min"),
            models.CheckConstraint(condition=Q(version__gte=1), name="order_version_min"),
        ]

    def __str__(self) -> str:
        return f"{self.order_id} {self.transaction_type} {self.quantity} {self.instrument_id} {self.order_status}"

    @property
    def is_terminal(self) -> bool:
        return self.order_status in TERMINAL


class OrderUpdate(models.Model):
    """Append-only: one row per update sent, with the full order snapshot as sent."""

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="updates")
    update_type = models.CharField(max_length=16, choices=UpdateType.choices)
    version = models.PositiveIntegerField()
    snapshot = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["order", "version"], name="order_update_version_unique")]

    def __str__(self) -> str:
        return f"{self.order_id} v{self.version} {self.update_type}"


class ExecutionReport(models.Model):
    """A venue's report, kept by execId so a replay changes nothing."""

    class Kind(models.TextChoices):
        ACCEPT = "accept"
        FILL = "fill"
        REJECT = "reject"
        CANCEL = "cancel"

    exec_id = models.CharField(max_length=64, unique=True)
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="executions")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    quantity = models.DecimalField(null=True, blank=True, **QTY)
    price = models.DecimalField(null=True, blank=True, **QTY)
    reason = models.CharField(max_length=255, blank=True, default="")
    received_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.exec_id} {self.kind} {self.order_id}"


class Trade(models.Model):
    trade_id = models.CharField(max_length=24, unique=True)
    exec_id = models.CharField(max_length=64, unique=True)
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="trades")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="trades")
    quantity = models.DecimalField(**QTY)
    price = models.DecimalField(**QTY)
    # when the venue executed it (its report's executedAt), else when we recorded it
    time = models.DateTimeField(default=timezone.now, db_index=True)
    # the venue took over a position at its liquidation (margin.services.position_liquidate)
    liquidation = models.BooleanField(default=False)

    class Meta:
        ordering = ["-time", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(quantity__gt=0), name="trade_quantity_positive"),
            models.CheckConstraint(condition=Q(price__gt=0), name="trade_price_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.trade_id} {self.quantity}@{self.price}"


class OrderSession(models.Model):
    """Credentials for the order-updates socket. Only a hash of the token is stored."""

    session = models.CharField(max_length=40, unique=True)
    token_hash = models.CharField(max_length=64)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="order_sessions")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.session} ({self.user_id})"


class IdempotencyKey(models.Model):
    """The first answer to a (user, Idempotency-Key) order placement, replayed for 24 h."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    response_status = models.PositiveSmallIntegerField(null=True)
    response_body = models.JSONField(null=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="idempotency_user_key_unique")]

    def __str__(self) -> str:
        return f"{self.user_id}:{self.key}"
