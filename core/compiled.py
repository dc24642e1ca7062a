"""One row by one column's value, as ``queryset.get(<field>=value)`` reads it, or every row with
that value, as ``queryset.filter(<field>=value)`` does, with the statement built and compiled once
per database instead of at every call.

Inside a request, building and compiling a simple ``get()`` cost about as much as running it
(a placement's user read took ~1.2 ms there, 0.35–0.4 ms in a hot loop; docs/benchmarks.md). For
the few reads every request or placement makes, ``CompiledGet`` and ``CompiledRows`` keep the ORM's
own SQL and run it with the value prepared as the ORM prepares a lookup's, convert each row with
the backend's and the fields' converters, and build each instance with ``from_db`` (and its
``select_related()`` instances with Django's own populators), as the ORM does; for
``values_list()``, they return the converted tuple. They take only a read of model columns (no
annotation, no extra select) in which the value is one parameter, the others fixed by the
queryset, and check that when they compile."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

from django.core.exceptions import ValidationError
from django.db import connections
from django.db.models import Field, QuerySet
from django.db.models.expressions import Col
from django.db.models.query import (  # type: ignore[attr-defined]  # get_related_populators: internal, not in django-stubs
    ModelIterable,
    ValuesListIterable,
    get_related_populators,
)
from django.db.transaction import TransactionManagementError

# The values the statement is compiled with (in every integer column's range): the one parameter
# that differs between the two is the value's.
SAMPLES = (12_345, 12_346)


@dataclass(frozen=True, slots=True)
class _Statement:
    sql: str
    params: list  # the queryset's, the value's at ``at``
    at: int
    columns: list[Col]
    locking: bool
    own: slice  # the model's own columns in a row (the rest: select_related's)
    names: list[str]  # their attnames, for from_db
    related: list  # select_related's populators (Django's, as ModelIterable builds them)


class _Compiled:
    """``rows().filter(<field>=value)``, compiled once per database alias. ``rows``: a function
    returning the queryset (so that models resolve once the apps are ready), e.g.
    ``lambda: Account.objects.select_for_update()``, called once: the queryset is kept, never
    evaluated, for its model and, at each call, its database; its SQL and other parameters are
    kept from the first compile. ``lenient``: a value that cannot
    be prepared for the column (a claim from a token) finds nothing, where the ORM raises
    TypeError, ValueError or ValidationError."""

    iterables: tuple[type, ...] = (ModelIterable,)  # what rows() may yield: instances (and tuples for CompiledRows)
    ordered = False  # get(): no ORDER BY (the model's default ordering costs a sort, for one row)

    def __init__(self, rows: Callable[[], QuerySet], field: str, *, lenient: bool = False) -> None:
        self.rows = rows
        self.field = field
        self.lenient = lenient
        self._compiled: dict[str, _Statement] = {}
        # rows() once (building a queryset's filters costs what compiling them does); never
        # evaluated, only asked its model and, at each call, its database (routers decide it)
        self._queryset: QuerySet | None = None
        # the columns' converters, per connection (a thread's, of one database: one statement)
        self._converters: WeakKeyDictionary[Any, list] = WeakKeyDictionary()

    def _statement(self, queryset: QuerySet, alias: str) -> _Statement:
        if alias not in self._compiled:
            # a related manager's rows: its row would be a parameter fixed at the first call
            if getattr(queryset, "_hints", {}).get("instance") is not None:
                raise RuntimeError(f"{queryset.model.__name__} by {self.field}: a related manager's rows")
            compiled = []
            for sample in SAMPLES:  # twice: the one parameter that changes is the value's
                filtered = queryset.filter(**{self.field: sample})
                query = (filtered if self.ordered else filtered.order_by()).query
                compiler = query.get_compiler(alias)
                compiled.append(compiler.as_sql())  # FOR UPDATE: Django checks the transaction (here,
                # once), and it is checked again at each call below, as Django checks it at each compile
            (sql, params), (other_sql, other_params) = compiled
            locking = query.select_for_update and compiler.connection.features.has_select_for_update
            columns = [column for column, _, _ in compiler.select]
            instances = queryset._iterable_class is ModelIterable
            klass_info = compiler.klass_info or {}
            # select_related(): other models' columns, built as ModelIterable builds them
            joined = bool(klass_info.get("related_klass_infos")) and instances
            table = queryset.model._meta.db_table
            plain = (
                all(
                    isinstance(c, Col) and (joined or (c.target.model is queryset.model and c.alias == table))
                    for c in columns
                )
                and not query.annotation_select
                # values_list() names its own columns in annotation_col_map (SELECT ... AS "pk")
                and (not instances or not compiler.annotation_col_map)
                and not query.extra_select
                and not compiler.has_extra_select  # columns selected only to order by (distinct())
                and queryset._iterable_class in self.iterables
                and not getattr(queryset, "_prefetch_related_lookups", ())
                and not getattr(queryset, "_known_related_objects", None)  # ModelIterable would set them
            )
            at = [i for i, (a, b) in enumerate(zip(params, other_params, strict=True)) if a != b]
            if sql != other_sql or len(at) != 1 or not plain:
                raise RuntimeError(
                    f"{queryset.model.__name__} by {self.field}: not its own columns with the value once"
                )
            own = slice(0, len(columns))
            if klass_info.get("select_fields"):
                own = slice(klass_info["select_fields"][0], klass_info["select_fields"][-1] + 1)
            self._compiled[alias] = _Statement(
                sql=sql,
                params=list(params),
                at=at[0],
                columns=columns,
                locking=locking,
                own=own,
                names=[column.target.attname for column in columns[own]],
                # Django's own builder of select_related() instances (internal: its arguments
                # change in Django 6, which tests/core/test_compiled.py would show at once)
                related=get_related_populators(klass_info, compiler.select, alias) if joined else [],
            )
        return self._compiled[alias]

    def _rows(self, value: Any, limit: int | None) -> tuple[QuerySet, str, _Statement, list]:
        """The queryset read, its alias, its statement and up to ``limit`` converted rows (lists)."""
        queryset = self._queryset
        if queryset is None:
            queryset = self._queryset = self.rows()
        model: Any = queryset.model  # its DoesNotExist and MultipleObjectsReturned are per model
        alias = queryset.db  # as the ORM picks it (select_for_update reads from where it writes)
        connection = connections[alias]
        field = model._meta.get_field(self.field)
        if not isinstance(field, Field):
            raise TypeError(f"{model.__name__}.{self.field} is not a column of its own")
        statement = self._statement(queryset, alias)
        if statement.locking and connection.get_autocommit() and connection.features.supports_transactions:
            raise TransactionManagementError("select_for_update cannot be used outside of a transaction.")
        if value is None:  # the ORM would write IS NULL, not "= NULL" (which matches nothing)
            if self.lenient:
                return queryset, alias, statement, []
            raise ValueError(f"{model.__name__}.{self.field}: None is not a value to look up here")
        try:
            value = field.get_db_prep_value(field.to_python(value), connection)
        except (ValidationError, TypeError, ValueError):
            if self.lenient:
                return queryset, alias, statement, []
            raise
        ranged = getattr(field, "target_field", field).get_internal_type()
        low, high = connection.ops.integer_field_ranges.get(ranged, (None, None))
        if isinstance(value, int) and ((low is not None and value < low) or (high is not None and value > high)):
            return queryset, alias, statement, []  # as the ORM: a value out of the column's range matches no row
        params = statement.params.copy()
        params[statement.at] = value
        with connection.cursor() as cursor:
            cursor.execute(statement.sql, params)
            rows = cursor.fetchmany(limit) if limit else cursor.fetchall()
        # as SQLCompiler.apply_converters, with this thread's connection
        columns = statement.columns
        converters = self._converters.get(connection)
        if converters is None:
            converters = self._converters[connection] = [
                (i, convert)
                for i, column in enumerate(columns)
                for convert in connection.ops.get_db_converters(column) + column.get_db_converters(connection)
            ]
        out = []
        for raw in rows:
            row = list(raw)
            for i, convert in converters:
                row[i] = convert(row[i], columns[i], connection)
            out.append(row)
        return queryset, alias, statement, out

    @staticmethod
    def _instance(queryset: QuerySet, alias: str, statement: _Statement, row: list) -> Any:
        """A row's instance, with its select_related() instances cached on it, as ModelIterable builds them."""
        instance = queryset.model.from_db(alias, statement.names, row[statement.own])
        for related in statement.related:
            related.populate(row, instance)
        return instance


class CompiledGet(_Compiled):
    """``rows().get(<field>=value)``, compiled once per database alias (see ``_Compiled``); it may
    ``select_related()``."""

    def get(self, value: Any) -> Any:
        """The one row, as ``get()`` builds it; ``model.DoesNotExist`` when there is none, also for
        a value out of the column's range (as the ORM), and, when ``lenient``, for one that cannot
        be prepared for the column."""
        queryset, alias, statement, rows = self._rows(value, 2)
        model: Any = queryset.model  # its DoesNotExist and MultipleObjectsReturned are per model
        if not rows:
            raise model.DoesNotExist
        if len(rows) > 1:
            raise model.MultipleObjectsReturned(f"more than one {model.__name__} with {self.field} = {value!r}")
        return self._instance(queryset, alias, statement, rows[0])


class CompiledRows(_Compiled):
    """``list(rows().filter(<field>=value))``, compiled once per database alias (see
    ``_Compiled``): model instances (which may ``select_related()``), or for a ``values_list()``
    queryset (not flat, not named) its tuples, in the order ``rows()`` gives (``order_by()`` in it
    for none)."""

    iterables = (ModelIterable, ValuesListIterable)
    ordered = True

    def all(self, value: Any) -> list:
        queryset, alias, statement, rows = self._rows(value, None)
        if queryset._iterable_class is ValuesListIterable:
            return [tuple(row) for row in rows]
        return [self._instance(queryset, alias, statement, row) for row in rows]
