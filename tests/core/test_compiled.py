"""core.compiled: the ORM's get() (CompiledGet) and filter() (CompiledRows) with their statements
compiled once. The account lock reads through the first: FOR UPDATE, refused outside a
transaction at every call as Django refuses it; a placement's book through the second. A read
either cannot take is refused when it compiles."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import F
from django.db.models.sql.compiler import SQLCompiler
from django.db.transaction import TransactionManagementError
from django.test.utils import CaptureQueriesContext

from core.compiled import CompiledGet, CompiledRows
from ledger.models import Account
from ledger.services import account_lock
from market.models import Instrument

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_account_lock_is_the_orms_locking_read_and_needs_a_transaction_every_time(make_user, monkeypatch):
    user = make_user(balance=100)
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        locked = account_lock(user.pk)
    with transaction.atomic(), CaptureQueriesContext(connection) as orm:
        expected = Account.objects.select_for_update().get(user_id=user.pk)
    fields = [f.attname for f in Account._meta.concrete_fields]
    assert [getattr(locked, f) for f in fields] == [getattr(expected, f) for f in fields]
    assert [q["sql"] for q in queries.captured_queries if q["sql"].startswith("SELECT")] == [
        q["sql"].replace(" LIMIT 21", "") for q in orm.captured_queries if q["sql"].startswith("SELECT")
    ]  # the ORM's locking read (FOR UPDATE), but for get()'s LIMIT
    compiles = []
    original = SQLCompiler.as_sql
    monkeypatch.setattr(SQLCompiler, "as_sql", lambda self, *a, **k: compiles.append(1) or original(self, *a, **k))
    with transaction.atomic():
        assert account_lock(user.pk).balance == expected.balance
    assert compiles == []  # compiled once, the first time
    with pytest.raises(TransactionManagementError):  # compiled already: still refused
        account_lock(user.pk)


def test_a_missing_row_is_made_once_and_locked():
    from accounts.models import User

    user = User.objects.create(username="fresh")
    with transaction.atomic():
        assert account_lock(user.pk).balance == 0
    assert Account.objects.filter(user_id=user.pk).count() == 1


def test_a_read_of_more_than_the_models_own_columns_is_refused_when_it_compiles(instruments):
    for rows in (
        lambda: Instrument.objects.annotate(double=F("tick_size") * 2),  # an annotation from_db would drop
        lambda: Instrument.objects.values(),  # dicts, not instances
    ):
        with pytest.raises(RuntimeError, match="not its own columns"):
            CompiledGet(rows, "symbol").get("BTC_USD")
    assert CompiledGet(lambda: Instrument.objects.all(), "symbol").get("BTC_USD").symbol == "BTC_USD"
    with pytest.raises(Instrument.DoesNotExist):
        CompiledGet(lambda: Instrument.objects.all(), "symbol").get("NOPE")


def test_a_value_that_cannot_be_prepared_raises_as_the_orm_does_unless_lenient(instruments):
    with pytest.raises(ValidationError):
        CompiledGet(lambda: Instrument.objects.all(), "id").get("not-a-number")
    with pytest.raises(Instrument.DoesNotExist):  # a token's claim: no such row
        CompiledGet(lambda: Instrument.objects.all(), "id", lenient=True).get("not-a-number")
    with pytest.raises(Instrument.DoesNotExist):  # out of the column's range, as the ORM: no row
        CompiledGet(lambda: Instrument.objects.all(), "id").get(2**70)


def test_rows_are_the_orms_rows_in_its_order_compiled_once(instruments, monkeypatch):
    names = ["id", "symbol", "tick_size", "max_leverage", "maintenance_margin_rate", "active"]
    instances = CompiledRows(lambda: Instrument.objects.filter(active=True).order_by("-symbol"), "exchange")
    tuples = CompiledRows(lambda: Instrument.objects.order_by("symbol").values_list(*names), "exchange")
    exchange = Instrument.objects.values_list("exchange", flat=True).first()
    expected = list(Instrument.objects.filter(active=True, exchange=exchange).order_by("-symbol"))
    assert len(expected) > 1
    fields = [f.attname for f in Instrument._meta.concrete_fields]
    got = instances.all(exchange)
    assert [[getattr(i, f) for f in fields] for i in got] == [[getattr(i, f) for f in fields] for i in expected]
    assert tuples.all(exchange) == list(
        Instrument.objects.filter(exchange=exchange).order_by("symbol").values_list(*names)
    )
    assert instances.all("NO-SUCH-EXCHANGE") == []
    joined = CompiledRows(lambda: Instrument.objects.select_related("state").order_by("symbol"), "exchange")
    with CaptureQueriesContext(connection) as queries:
        states = [(i.symbol, getattr(i, "state", None)) for i in joined.all(exchange)]
    assert len(queries.captured_queries) == 1  # each state built from the one read, none read after
    orm = Instrument.objects.select_related("state").filter(exchange=exchange).order_by("symbol")
    assert [(symbol, state and state.price) for symbol, state in states] == [
        (i.symbol, getattr(i, "state", None) and i.state.price) for i in orm
    ]
    compiles = []
    original = SQLCompiler.as_sql
    monkeypatch.setattr(SQLCompiler, "as_sql", lambda self, *a, **k: compiles.append(1) or original(self, *a, **k))
    assert len(instances.all(exchange)) == len(expected) and tuples.all(exchange)
    assert compiles == []


def test_a_read_with_select_related_builds_what_the_orm_builds(instruments):
    from margin.ticks import ticks_ingest
    from market.models import MarketState

    ticks_ingest([{"symbol": "BTC_USD", "price": "43210.5", "volume": "1"}])
    read = CompiledGet(lambda: Instrument.objects.select_related("state").filter(active=True), "symbol")
    with CaptureQueriesContext(connection) as queries:
        got = read.get("BTC_USD")
        state = got.state  # cached by the read: no second query
    expected = Instrument.objects.select_related("state").get(symbol="BTC_USD", active=True)
    assert len(queries.captured_queries) == 1 and "JOIN" in queries.captured_queries[0]["sql"]
    for model, mine, orms in ((Instrument, got, expected), (MarketState, state, expected.state)):
        fields = [f.attname for f in model._meta.concrete_fields]
        assert [getattr(mine, f) for f in fields] == [getattr(orms, f) for f in fields]
    assert state.price == Decimal("43210.5") and state.instrument is got  # both ways, as the ORM caches
    no_ticks = Instrument.objects.exclude(symbol="BTC_USD").filter(active=True).first()
    MarketState.objects.filter(instrument=no_ticks).delete()
    with CaptureQueriesContext(connection) as queries, pytest.raises(Instrument.state.RelatedObjectDoesNotExist):
        _ = read.get(no_ticks.symbol).state  # no state yet: known missing, as the ORM's LEFT JOIN says
    assert len(queries.captured_queries) == 1
    Instrument.objects.filter(symbol="BTC_USD").update(active=False)
    with pytest.raises(Instrument.DoesNotExist):  # the queryset's own filter, kept from the compile
        read.get("BTC_USD")


def test_rows_refuse_what_they_cannot_build(instruments):
    for rows in (
        lambda: Instrument.objects.values_list("symbol", flat=True),  # bare values, not tuples
        lambda: Instrument.objects.values_list("symbol", named=True),  # named tuples
        lambda: Instrument.objects.values_list("symbol", "state__price"),  # another model's column
        lambda: Instrument.objects.annotate(double=F("tick_size") * 2).values_list("symbol", "double"),
        # a column selected only to order by, which the ORM trims from each row
        lambda: Instrument.objects.values_list("symbol").order_by("tick_size").distinct(),
    ):
        with pytest.raises(RuntimeError, match="not its own columns"):
            CompiledRows(rows, "exchange").all("X")


def test_a_related_managers_rows_and_none_are_refused(make_user):
    user = make_user("owner")
    with pytest.raises(RuntimeError, match="related manager"):  # its row would be fixed at the first call
        CompiledRows(lambda: user.logentry_set.all(), "action_flag").all(1)
    with pytest.raises(ValueError, match="None"):  # the ORM reads IS NULL; "= NULL" would match nothing
        CompiledRows(lambda: Instrument.objects.all(), "exchange").all(None)
    with pytest.raises(Instrument.DoesNotExist):
        CompiledGet(lambda: Instrument.objects.all(), "id", lenient=True).get(None)


SQLITE_CHECK = """
import django
django.setup()
from django.db import connection, transaction
from django.utils import timezone
from accounts.authentication import UserById
from accounts.models import User
from ledger.models import Account
from ledger.services import account_lock
from core.compiled import CompiledRows
with connection.schema_editor() as editor:
    editor.create_model(User)
    editor.create_model(Account)
user = User.objects.create(username="sq", is_staff=True, last_login=timezone.now())
Account.objects.create(user=user, balance="12.34567891")
with transaction.atomic():
    locked = account_lock(user.pk)
differ = []
for read, orm in ((UserById().get(id=user.pk), User.objects.get(id=user.pk)), (locked, Account.objects.get(user=user))):
    for name in (f.attname for f in type(orm)._meta.concrete_fields):
        if repr(getattr(read, name)) != repr(getattr(orm, name)):
            differ.append((name, repr(getattr(read, name)), repr(getattr(orm, name))))
names = [f.attname for f in Account._meta.concrete_fields]
rows = CompiledRows(lambda: Account.objects.values_list(*names), "user_id").all(user.pk)
if rows != list(Account.objects.filter(user_id=user.pk).values_list(*names)):
    differ.append(("values_list", rows))
print(differ)
"""


def test_on_sqlite_the_rows_are_converted_as_the_orm_converts_them(tmp_path):
    """SQLite hands back datetimes as text, booleans as integers and decimals as floats; the
    backend's converters make them what the ORM's instances hold (the embedded default, which the
    run command uses): the user read and the account lock."""
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "REDIS_URL": "",
        "DJANGO_SETTINGS_MODULE": "axisor.settings",
    }
    done = subprocess.run(
        [sys.executable, "-c", SQLITE_CHECK],
        cwd=Path(__file__).resolve().parents[2], env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]", done.stdout  # no field differs
