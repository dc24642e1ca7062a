"""Every write to money. The account row is locked for each entry, so a user's entries are
serialised and ``balance_after`` runs without gaps; it is locked after any position row and before
the user's event sequence (the order of locks everywhere)."""

from __future__ import annotations

from decimal import Decimal

from django.db import transaction

from core.compiled import CompiledGet

from .models import MONEY_QUANT, Account, EntryKind, LedgerEntry

# Every placement and ledger entry locks the account: its statement compiled once (core.compiled).
_locked = CompiledGet(lambda: Account.objects.select_for_update(), "user_id")


def account_lock(user_id: int) -> Account:
    """The user's account, created at a zero balance if missing, locked to the end of the
    transaction (call inside one)."""
    try:
        return _locked.get(user_id)
    except Account.DoesNotExist:  # the first entry: create it (or meet the one a concurrent first created)
        Account.objects.bulk_create([Account(user_id=user_id)], ignore_conflicts=True)
        return _locked.get(user_id)


@transaction.atomic
def ledger_post(
    *,
    user_id: int,
    kind: str,
    amount: Decimal,
    reference: str = "",
    note: str = "",
    actor_id: int | None = None,
) -> LedgerEntry:
    """Book ``amount`` (signed; rounded to 8 decimals) to the user's balance. Zero books nothing
    and returns an unsaved entry."""
    if kind not in EntryKind.values:
        raise ValueError(f"unknown ledger entry kind {kind!r}")
    amount = Decimal(amount).quantize(MONEY_QUANT)
    account = account_lock(user_id)
    if amount == 0:
        return LedgerEntry(user_id=user_id, kind=kind, amount=amount, balance_after=account.balance)
    account.balance += amount
    account.save(update_fields=["balance", "updated_at"])
    return LedgerEntry.objects.create(
        user_id=user_id,
        kind=kind,
        amount=amount,
        balance_after=account.balance,
        reference=reference[:64],
        note=note[:200],
        actor_id=actor_id,
    )
