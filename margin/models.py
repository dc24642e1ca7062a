"""Net positions per user and instrument (built from fills), Margin Guard settings per user, and
the record of every guard execution. Transitions live in services.py."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q

PRICE: dict[str, Any] = {"max_digits": 24, "decimal_places": 8}
PNL: dict[str, Any] = {"max_digits": 30, "decimal_places": 8}


class PositionSide(models.TextChoices):
    LONG = "long"
    SHORT = "short"


class PositionStatus(models.TextChoices):
    OPEN = "open"
    CLOSED = "closed"


class CloseKind(models.TextChoices):
    """Why a close order was placed by us (empty: the user's own orders closed it)."""

    MANUAL = "manual"  # POST /api/positions/{id}/close
    AUTO_CLOSE = "margin_guard_auto_close"
    LIQUIDATION = "liquidation"


class Position(models.Model):
    """One row per position lifetime: opened by a fill, closed (or flipped, which closes this row
    and opens another) by later fills. At most one open row per user and instrument."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="positions")
    instrument = models.ForeignKey("market.Instrument", on_delete=models.PROTECT, related_name="positions")
    side = models.CharField(max_length=5, choices=PositionSide.choices)
    # Open: the quantity held now; closed: the quantity held when it closed.
    quantity = models.DecimalField(**PRICE)
    entry_price = models.DecimalField(**PRICE)
    # Effective leverage: size / margin, where each increase brings size / its order's leverage.
    leverage = models.DecimalField(max_digits=8, decimal_places=2)
    realized_pnl = models.DecimalField(default=0, **PNL)
    # Loss and fees beyond the margin the closed part held, not charged to the user (isolated margin:
    # a gap through the bankruptcy price is the broker's loss, as an exchange's insurance fund takes it).
    uncovered_loss = models.DecimalField(default=0, **PNL)
    liquidation_price = models.DecimalField(**PRICE)
    # Margin Guard index (NULL when the owner's guard is off): the price where distance = threshold,
    # and the price where it recovers to threshold + REARM_BAND. Ticks read positions by these.
    guard_price = models.DecimalField(null=True, blank=True, **PRICE)
    rearm_price = models.DecimalField(null=True, blank=True, **PRICE)
    guard_armed = models.BooleanField(default=True)
    guard_rearm_at = models.DateTimeField(null=True, blank=True)
    guard_fired_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=6, choices=PositionStatus.choices, default=PositionStatus.OPEN)
    # A close order we placed (manual close, auto-close, liquidation) and why.
    close_order = models.ForeignKey("orders.Order", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    close_kind = models.CharField(max_length=32, choices=CloseKind.choices, blank=True, default="")
    guard_execution = models.ForeignKey(
        "MarginGuardExecution", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    close_reason = models.CharField(max_length=32, blank=True, default="")
    opened_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-opened_at", "-id"]
        open_ = Q(status="open")
        indexes = [
            models.Index(fields=["user", "status", "-opened_at"], name="pos_user_status"),
            models.Index(fields=["instrument", "user"], name="pos_open_holders", condition=open_),
            models.Index(fields=["instrument", "side", "liquidation_price"], name="pos_open_liq", condition=open_),
            models.Index(
                fields=["instrument", "side", "guard_price"],
                name="pos_guard_armed",
                condition=open_ & Q(guard_armed=True, guard_price__isnull=False),
            ),
            models.Index(
                fields=["instrument", "side", "rearm_price"],
                name="pos_guard_disarmed",
                condition=open_ & Q(guard_armed=False),
            ),
            models.Index(
                fields=["instrument", "guard_rearm_at"],
                name="pos_guard_cooldown",
                condition=open_ & Q(guard_armed=False),
            ),
        ]
        del open_
        constraints = [
            models.UniqueConstraint(fields=["user", "instrument"], condition=Q(status="open"), name="pos_one_open"),
            models.CheckConstraint(condition=Q(quantity__gt=0), name="pos_quantity_positive"),
            models.CheckConstraint(condition=Q(entry_price__gt=0), name="pos_entry_positive"),
            models.CheckConstraint(condition=Q(leverage__gte=1), name="pos_leverage_min"),
            models.CheckConstraint(
                condition=Q(status="open", closed_at__isnull=True) | Q(status="closed", closed_at__isnull=False),
                name="pos_closed_at_iff_closed",
            ),
        ]

    def __str__(self) -> str:
        return f"pos_{self.pk} {self.side} {self.quantity} {self.instrument_id} {self.status}"

    @property
    def public_id(self) -> str:
        return f"pos_{self.pk}"

    @property
    def size(self) -> Decimal:
        return self.quantity * self.entry_price

    @property
    def margin(self) -> Decimal:
        return self.size / self.leverage


class GuardAction(models.TextChoices):
    NOTIFY = "notify"
    CLOSE_POSITION = "close_position"


DEFAULT_THRESHOLD = Decimal("0.85")
DEFAULT_COOLDOWN_SECONDS = 300


class MarginGuardConfig(models.Model):
    """A user's Margin Guard. Users without a row get the defaults (enabled, notify, 0.85, 300 s)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="margin_guard"
    )
    enabled = models.BooleanField(default=True)
    threshold = models.DecimalField(max_digits=6, decimal_places=5, default=DEFAULT_THRESHOLD)
    action = models.CharField(max_length=16, choices=GuardAction.choices, default=GuardAction.NOTIFY)
    cooldown_seconds = models.PositiveIntegerField(default=DEFAULT_COOLDOWN_SECONDS)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(threshold__gt=0, threshold__lt=1), name="mg_threshold_range"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} {'on' if self.enabled else 'off'} {self.threshold} {self.action}"


class MarginGuardExecution(models.Model):
    """One run of a user's guard: the positions it checked, what it did. ``auto_closes`` grows as
    its close orders fill."""

    execution_id = models.CharField(max_length=32, unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="margin_executions")
    action = models.CharField(max_length=32)
    trigger = models.CharField(max_length=16, help_text="threshold (crossed into risk) or cooldown (still at risk)")
    threshold = models.DecimalField(max_digits=6, decimal_places=5)
    positions = models.JSONField()
    summary = models.JSONField()
    auto_closes = models.JSONField(default=list, blank=True)
    executed_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-executed_at", "-id"]
        indexes = [models.Index(fields=["user", "-executed_at"], name="mg_exec_user_time")]

    def __str__(self) -> str:
        return f"{self.execution_id} {self.user_id} {self.action}"
