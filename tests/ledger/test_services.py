"""The ledger: every entry moves the balance by its amount, in order, and the balance is always the
sum of the entries, however many writers post at once."""

from __future__ import annotations

import threading
from decimal import Decimal as D

import pytest
from django.db import connection

from ledger.models import Account, EntryKind, LedgerEntry
from ledger.services import ledger_post

pytestmark = pytest.mark.django_db


def test_entries_move_the_balance_and_record_what_they_left(make_user):
    user = make_user(balance=0)
    first = ledger_post(user_id=user.pk, kind=EntryKind.DEPOSIT, amount=D("100.123456789"), note="in")
    second = ledger_post(user_id=user.pk, kind=EntryKind.REALIZED_PNL, amount=D("-40"), reference="pos_1")
    assert (first.amount, first.balance_after) == (D("100.12345679"), D("100.12345679"))  # 8 decimals
    assert (second.amount, second.balance_after, second.reference) == (D("-40"), D("60.12345679"), "pos_1")
    assert Account.objects.get(user=user).balance == D("60.12345679")


def test_a_zero_amount_books_nothing_and_an_unknown_kind_is_refused(make_user):
    user = make_user(balance=0)
    assert ledger_post(user_id=user.pk, kind=EntryKind.FEE, amount=D(0)).pk is None
    with pytest.raises(ValueError, match="unknown ledger entry kind"):
        ledger_post(user_id=user.pk, kind="gift", amount=D(1))
    assert not LedgerEntry.objects.filter(user=user).exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_posts_keep_the_balance_equal_to_the_sum_of_entries(make_user):
    user = make_user(balance=0)
    amounts = [D(n) * (1 if n % 3 else -1) for n in range(1, 41)]
    barrier = threading.Barrier(8)

    def post(chunk: list[D]) -> None:
        try:
            barrier.wait()
            for amount in chunk:
                ledger_post(user_id=user.pk, kind=EntryKind.ADJUSTMENT, amount=amount)
        finally:
            connection.close()

    threads = [threading.Thread(target=post, args=(amounts[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    entries = list(LedgerEntry.objects.filter(user=user).order_by("id"))
    assert len(entries) == 40
    running = D(0)
    for entry in entries:  # serialised: each entry's balance_after follows the previous one
        running += entry.amount
        assert entry.balance_after == running
    assert Account.objects.get(user=user).balance == sum(amounts) == running
