"""One row by one column's value, as ``queryset.get(<field>=value)`` reads it, or every row with
that value, as ``queryset.filter(<field>=value)`` does, with the statement built and compiled once
per database instead of at every call.

Inside a request, building and compiling a simple ``get()`` cost about as much as running it
(a placement's user read took ~1.2 ms there, 0.35–0.4 ms in a hot loop; docs/benchmarks.md). For
the few reads every request or placement makes, ``CompiledGet`` and ``CompiledRows`` keep the ORM's
own SQL and run it with the value prepared as the ORM prepares a lookup's, convert each row with
the backend's and the fields' converters, and build each instance with ``from_db``, as the ORM
does (or, for ``values_list()``, return the converted tuple). They take only a read of the model's
own columns (no ``select_related``, no annotation) in which the value is one parameter, the
others fixed by the queryset, and check that when they compile."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connections
from django.db.models import Field, QuerySet
from django.db.models.expressions import Col
from django.db.models.query import ModelIterable, ValuesListIterable
from django.db.transaction import TransactionManagementError

# The values the statement is compiled with (in every integer column's range): the one parameter
# that differs between the two is the value's.
SAMPLES = (12_345, 12_346)


class _Compiled:
    """``rows().filter(<field>=value)``, compiled once per database alias. ``rows``: a function
    returning the queryset (so that models resolve once the apps are ready), e.g.
    ``lambda: Account.objects.select_for_update()``; it must build the same query at every call
    (the SQL and its other parameters are kept from the first). ``lenient``: a value that cannot
    be prepared for the column (a claim from a token) finds nothing, where the ORM raises
    TypeError, ValueError or ValidationError."""

    iterables: tuple[type, ...] = (ModelIterable,)  # what rows() may yield: instances (and tuples for CompiledRows)
    ordered = False  # get(): no ORDER BY (the model's default ordering costs a sort, for one row)

    def __init__(self, rows: Callable[[], QuerySet], field: str, *, lenient: bool = False) -> None:
        self.rows = rows
        self.field = field
        self.lenient = lenient
        self._compiled: dict[str, tuple[str, list, int, list[Col], bool]] = {}

    def _statement(self, queryset: QuerySet, alias: str) -> tuple[str, list, int, list[Col], bool]:
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
            table = queryset.model._meta.db_table
            plain = (
                all(isinstance(c, Col) and c.target.model is queryset.model and c.alias == table for c in columns)
                and not (compiler.klass_info or {}).get("related_klass_infos")
                and not query.annotation_select
                # values_list() names its own columns in annotation_col_map (SELECT ... AS "pk")
                and (queryset._iterable_class is not ModelIterable or not compiler.annotation_col_map)
                and not query.extra_select
                and not compiler.has_extra_select  # columns selected only to order by (distinct())
                and queryset._iterable_class in self.iterables
                and not getattr(queryset, "_prefetch_related_lookups", ())
            )
            at = [i for i, (a, b) in enumerate(zip(params, other_params, strict=True)) if a != b]
            if sql != other_sql or len(at) != 1 or not plain:
                raise RuntimeError(
                    f"{queryset.model.__name__} by {self.field}: not its own columns with the value once"
                )
            self._compiled[alias] = (sql, list(params), at[0], columns, locking)
        return self._compiled[alias]

    def _rows(self, value: Any, limit: int | None) -> tuple[QuerySet, str, list[Col], list]:
        """The queryset read, its alias, the columns and up to ``limit`` converted rows (lists)."""
        queryset = self.rows()
        model: Any = queryset.model  # its DoesNotExist and MultipleObjectsReturned are per model
        alias = queryset.db  # as the ORM picks it (select_for_update reads from where it writes)
        connection = connections[alias]
        field = model._meta.get_field(self.field)
        if not isinstance(field, Field):
            raise TypeError(f"{model.__name__}.{self.field} is not a column of its own")
        sql, params, at, columns, locking = self._statement(queryset, alias)
        if locking and connection.get_autocommit() and connection.features.supports_transactions:
            raise TransactionManagementError("select_for_update cannot be used outside of a transaction.")
        if value is None:  # the ORM would write IS NULL, not "= NULL" (which matches nothing)
            if self.lenient:
                return queryset, alias, columns, []
            raise ValueError(f"{model.__name__}.{self.field}: None is not a value to look up here")
        try:
            value = field.get_db_prep_value(field.to_python(value), connection)
        except (ValidationError, TypeError, ValueError):
            if self.lenient:
                return queryset, alias, columns, []
            raise
        ranged = getattr(field, "target_field", field).get_internal_type()
        low, high = connection.ops.integer_field_ranges.get(ranged, (None, None))
        if isinstance(value, int) and ((low is not None and value < low) or (high is not None and value > high)):
            return queryset, alias, columns, []  # as the ORM: a value out of the column's range matches no row
        params = params.copy()
        params[at] = value
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchmany(limit) if limit else cursor.fetchall()
        # as SQLCompiler.apply_converters, with this thread's connection
        converters = [
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
        return queryset, alias, columns, out


class CompiledGet(_Compiled):
    """``rows().get(<field>=value)``, compiled once per database alias (see ``_Compiled``)."""

    def get(self, value: Any) -> Any:
        """The one row, as ``get()`` builds it; ``model.DoesNotExist`` when there is none, also for
        a value out of the column's range (as the ORM), and, when ``lenient``, for one that cannot
        be prepared for the column."""
        queryset, alias, columns, rows = self._rows(value, 2)
        model: Any = queryset.model  # its DoesNotExist and MultipleObjectsReturned are per model
        if not rows:
            raise model.DoesNotExist
        if len(rows) > 1:
            raise model.MultipleObjectsReturned(f"more than one {model.__name__} with {self.field} = {value!r}")
        return model.from_db(alias, [column.target.attname for column in columns], rows[0])


class CompiledRows(_Compiled):
    """``list(rows().filter(<field>=value))``, compiled once per database alias (see
    ``_Compiled``): model instances, or for a ``values_list()`` queryset (not flat, not named)
    its tuples, in the order ``rows()`` gives (``order_by()`` in it for none)."""

    iterables = (ModelIterable, ValuesListIterable)
    ordered = True

    def all(self, value: Any) -> list:
        queryset, alias, columns, rows = self._rows(value, None)
        if queryset._iterable_class is ValuesListIterable:
            return [tuple(row) for row in rows]
        names = [column.target.attname for column in columns]
        return [queryset.model.from_db(alias, names, row) for row in rows]
