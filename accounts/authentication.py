"""REST's JWT authentication: simplejwt's ``JWTAuthentication``, its rules unchanged (the user
exists, is active, has not changed its password since the token), with the one read it makes of
the user built and compiled once per process instead of once per request.

simplejwt reads the user with ``user_model.objects.get(<USER_ID_FIELD>=<claim>)`` and catches
``user_model.DoesNotExist``; ``UserById`` answers both. Its statement is the ORM's own for that
lookup, compiled the first time; each request runs it, converts the row with the backend's and
the fields' converters (SQLite's datetimes and booleans, for one) and builds the user with
``from_db``, as the ORM does. Profiled in-process, building and compiling that query was ~0.3–0.6 ms of each
authenticated request (docs/benchmarks.md)."""

from __future__ import annotations

import functools
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import connections, router
from django.db.models import Field
from django.db.models.expressions import Col
from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from rest_framework_simplejwt import authentication

SAMPLE = 987_654_321  # a value the compiled statement is checked to carry once, as its only parameter


class UserById:
    """``objects.get(<field>=value)`` and ``DoesNotExist`` of the user model, for simplejwt."""

    def __init__(self) -> None:
        self.model = get_user_model()
        self.DoesNotExist = self.model.DoesNotExist
        self.objects = self
        self._compiled: dict[tuple[str, str], tuple[str, list[Col]]] = {}

    def _statement(self, field: str, alias: str) -> tuple[str, list[Col]]:
        """The SQL of ``objects.filter(<field>=…)``, unordered as ``get()`` is, and its columns in
        order; only for a read of the user's own columns with the value as its one parameter."""
        key = (field, alias)
        if key not in self._compiled:
            compiler = self.model.objects.filter(**{field: SAMPLE}).order_by().query.get_compiler(alias)
            sql, params = compiler.as_sql()
            columns = [column for column, _, _ in compiler.select]
            plain = all(isinstance(c, Col) and c.target.model is self.model for c in columns)
            if len(params) != 1 or str(params[0]) != str(SAMPLE) or not plain:
                raise RuntimeError(f"the user read by {field} is not one of its own columns with one parameter")
            self._compiled[key] = (sql, columns)
        return self._compiled[key]

    def get(self, **lookup: Any):
        ((field, value),) = lookup.items()
        model_field = self.model._meta.get_field(field)
        if not isinstance(model_field, Field):  # not a column of the user's own: the ORM's way
            return self.model.objects.get(**lookup)
        alias = router.db_for_read(self.model)
        connection = connections[alias]
        try:  # as the ORM prepares a lookup's value; one it could match nothing with matches no one
            value = model_field.get_db_prep_value(model_field.to_python(value), connection)
            low, high = connection.ops.integer_field_ranges.get(model_field.get_internal_type(), (None, None))
        except (ValidationError, TypeError, ValueError):
            raise self.DoesNotExist from None
        if isinstance(value, int) and ((low is not None and value < low) or (high is not None and value > high)):
            raise self.DoesNotExist
        sql, columns = self._statement(field, alias)
        with connection.cursor() as cursor:
            cursor.execute(sql, [value])
            rows = cursor.fetchmany(2)
        if not rows:
            raise self.DoesNotExist
        if len(rows) > 1:
            raise self.model.MultipleObjectsReturned(f"more than one user with {field} = {value!r}")
        row = list(rows[0])
        for i, column in enumerate(columns):  # as SQLCompiler.apply_converters, with this thread's connection
            for convert in connection.ops.get_db_converters(column) + column.get_db_converters(connection):
                row[i] = convert(row[i], column, connection)
        return self.model.from_db(alias, [column.target.attname for column in columns], row)


@functools.cache
def user_by_id() -> UserById:
    """Built on first use: the user model is read once the apps are ready."""
    return UserById()


class JWTAuthentication(authentication.JWTAuthentication):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user_model = user_by_id()  # type: ignore[assignment]


class JWTScheme(SimpleJWTScheme):
    """The OpenAPI security scheme of simplejwt's class (``jwtAuth``), for this one too."""

    target_class = "accounts.authentication.JWTAuthentication"
