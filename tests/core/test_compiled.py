"""core.compiled.CompiledGet: the ORM's get() with its statement compiled once. The account lock
reads through it: FOR UPDATE, refused outside a transaction at every call as Django refuses it,
and a read it cannot take is refused when it compiles."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.db.transaction import TransactionManagementError
from django.test.utils import CaptureQueriesContext

from core.compiled import CompiledGet
from ledger.models import Account
from ledger.services import account_lock
from market.models import Instrument

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_account_lock_is_the_orms_locking_read_and_needs_a_transaction_every_time(make_user):
    user = make_user(balance=100)
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        locked = account_lock(user.pk)
    expected = Account.objects.get(user_id=user.pk)
    assert (locked.user_id, locked.balance, locked.currency, locked.updated_at) == (
        expected.user_id, expected.balance, expected.currency, expected.updated_at,
    )  # fmt: skip
    reads = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("SELECT")]
    assert len(reads) == 1 and reads[0].endswith("FOR UPDATE"), reads
    with pytest.raises(TransactionManagementError):  # compiled already: still refused
        account_lock(user.pk)


def test_a_missing_row_is_made_once_and_locked():
    from accounts.models import User

    user = User.objects.create(username="fresh")
    with transaction.atomic():
        assert account_lock(user.pk).balance == 0
    assert Account.objects.filter(user_id=user.pk).count() == 1


def test_a_read_of_more_than_the_models_own_columns_is_refused_when_it_compiles(instruments):
    joined = CompiledGet(lambda: Instrument.objects.select_related("state"), "symbol")
    with pytest.raises(RuntimeError, match="not its own columns"):
        joined.get("BTC_USD")
    assert CompiledGet(lambda: Instrument.objects.all(), "symbol").get("BTC_USD").symbol == "BTC_USD"
    with pytest.raises(Instrument.DoesNotExist):
        CompiledGet(lambda: Instrument.objects.all(), "symbol").get("NOPE")
