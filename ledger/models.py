"""A user's cash account and its ledger entries."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import models

MONEY: dict[str, Any] = {"max_digits": 30, "decimal_places": 8}
MONEY_QUANT = Decimal("1e-8")


class Account(models.Model):
    """The cash balance in the account currency: the sum of the user's ledger entries."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="cash_account"
    )
    currency = models.CharField(max_length=8, default="USD")
    balance = models.DecimalField(default=0, **MONEY)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.user_id}: {self.balance} {self.currency}"


class EntryKind(models.TextChoices):
    DEPOSIT = "deposit"
    WITHDRAWAL = "withdrawal"
    ADJUSTMENT = "adjustment"
    REALIZED_PNL = "realized_pnl"
    LIQUIDATION = "liquidation"
    FEE = "fee"


class LedgerEntry(models.Model):
    """One money movement; never changed or deleted. ``balance_after`` is the balance it left."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="ledger_entries")
    kind = models.CharField(max_length=16, choices=EntryKind.choices)
    amount = models.DecimalField(**MONEY)
    balance_after = models.DecimalField(**MONEY)
    # what caused it: a position (pos_12), an order id, or empty for staff adjustments
    reference = models.CharField(max_length=64, blank=True, default="")
    note = models.CharField(max_length=200, blank=True, default="")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["user", "id"], name="ledger_entry_user_id")]
        constraints = [models.CheckConstraint(condition=~models.Q(amount=0), name="ledger_entry_amount_nonzero")]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount} → {self.balance_after} (user {self.user_id})"
