"""Reads of money."""

from __future__ import annotations

from decimal import Decimal

from django.db.models import QuerySet

from .models import Account, LedgerEntry


def account_balance(*, user_id: int) -> tuple[Decimal, str]:
    """The balance and its currency (zero before the first entry)."""
    account = Account.objects.filter(user_id=user_id).first()
    return (account.balance, account.currency) if account else (Decimal(0), "USD")


def ledger_entries(*, user_id: int) -> QuerySet[LedgerEntry]:
    """The user's entries, newest first."""
    return LedgerEntry.objects.filter(user_id=user_id).order_by("-id")
