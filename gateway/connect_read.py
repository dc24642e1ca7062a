"""The one read a new ``/ws`` connection makes: its user row and its stream's latest seq, in one
statement, on the event loop.

Through the ORM this was two queries on Channels' single ORM thread, plus a pool check-out and
check-in around them: ~1 ms of the process's CPU per connect and a thread hop each way, which
capped a connect storm at ~220 sockets/s. Here each process keeps one asyncio psycopg connection
(autocommit, opened on first use, reopened after a failure). Reads asked for while one is under
way go together in the next statement (``WHERE id = ANY(...)``), so a connect storm costs one
round trip per batch, not one per socket. Without PostgreSQL (the embedded SQLite default) the
single-user statement runs through Django's cursor on the ORM thread.

``user_row`` returns a real ``User`` (built with ``from_db`` from every concrete column, as the ORM
builds it) or None, and the seq baseline (0 when the user never had an event).
"""

from __future__ import annotations

import asyncio
import functools
from typing import TYPE_CHECKING

import psycopg
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.db import DEFAULT_DB_ALIAS, connections
from django.db import Error as DjangoDatabaseError

from broadcast.models import UserSequence
from core.perloop import PerLoop

if TYPE_CHECKING:
    from django.db.models import Field

    from accounts.models import User

DB_UNAVAILABLE = "the server cannot reach its database right now; reconnect shortly"
# What a read raises when the database is away: the driver's own errors here (psycopg_pool's
# PoolTimeout is one), Django's wrapped ones on the ORM path.
DATABASE_ERRORS = (psycopg.Error, DjangoDatabaseError)


class DatabaseUnavailable(Exception):
    """The database cannot be reached: the socket cannot be served now (→ error SERVICE_UNAVAILABLE,
    close 4013, like an unreachable channel layer)."""


def _column(field: Field) -> str:
    assert field.column is not None  # a concrete field: it has one
    return field.column


@functools.cache
def _statement(many: bool) -> tuple[str, list[str]]:
    """SELECT every user column and the seq baseline, for one id (``= %s``) or many (``= ANY``)."""
    user = get_user_model()
    fields = user._meta.concrete_fields
    q = connections[DEFAULT_DB_ALIAS].ops.quote_name
    seq = UserSequence._meta
    pk = f"u.{q(_column(user._meta.pk))}"
    last_seq = q(_column(seq.get_field("last_seq")))
    sql = (
        f"SELECT {', '.join(f'u.{q(_column(f))}' for f in fields)}, COALESCE(s.{last_seq}, 0)"
        f" FROM {q(user._meta.db_table)} u"
        f" LEFT JOIN {q(seq.db_table)} s ON s.{q(seq.get_field('user').column)} = {pk}"
        f" WHERE {pk} = {'ANY(%s)' if many else '%s'}"
    )  # fmt: skip
    return sql, [f.attname for f in fields]


def _result(row) -> tuple[User | None, int]:
    if row is None:
        return None, 0
    names = _statement(False)[1]
    return get_user_model().from_db(DEFAULT_DB_ALIAS, names, list(row[: len(names)])), int(row[len(names)])


class LoopReader:
    """This event loop's connection for the connect read, and the reads waiting for it."""

    def __init__(self) -> None:
        self.conn: psycopg.AsyncConnection | None = None
        self.waiting: dict[int, list[asyncio.Future]] = {}
        self.task: asyncio.Task | None = None

    async def user_row(self, user_id: int) -> tuple[User | None, int]:
        found = asyncio.get_running_loop().create_future()
        self.waiting.setdefault(user_id, []).append(found)
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._run())
        return await found  # ours alone: a cancelled caller cancels it; the batch still reads, and leaves it unanswered

    async def _run(self) -> None:
        while self.waiting:
            batch, self.waiting = self.waiting, {}
            try:
                rows = await self._fetch(_statement(True)[0], [list(batch)])
            except Exception as exc:  # noqa: BLE001 - every waiting read gets it (DATABASE_ERRORS: 4013)
                for futures in batch.values():
                    for found in futures:
                        if not found.done():
                            found.set_exception(exc)
                continue
            at = _statement(True)[1].index(get_user_model()._meta.pk.attname)
            by_id = {row[at]: row for row in rows}
            for user_id, futures in batch.items():
                result = _result(by_id.get(user_id))
                for found in futures:
                    if not found.done():
                        found.set_result(result)

    async def _fetch(self, sql: str, params: list) -> list[tuple]:
        """A statement that fails on a connection that was open (the server restarted, the
        socket died) is retried once on a fresh one; the second failure is the caller's."""
        for attempt in (0, 1):
            conn = self.conn
            reused = conn is not None and not conn.closed
            if conn is None or not reused:
                conn = self.conn = await psycopg.AsyncConnection.connect(**_params(), autocommit=True)
            try:
                cursor = await conn.execute(sql, params)
                return await cursor.fetchall()
            except psycopg.OperationalError:
                self.close()
                if attempt or not reused:
                    raise
        return []  # unreachable: the loop returns or raises

    def close(self) -> None:
        """Synchronous, so it works with the loop gone (tests, shutdown)."""
        if self.conn is not None:
            self.conn.pgconn.finish()
            self.conn = None


def _params() -> dict:
    params = connections[DEFAULT_DB_ALIAS].get_connection_params()
    params.pop("cursor_factory", None)  # Django's sync cursor class; the async connection has its own
    params.setdefault("connect_timeout", 5)  # a host that does not answer fails these reads, not hangs them
    return params


_readers: PerLoop[LoopReader] = PerLoop(lambda loop: LoopReader(), drop=LoopReader.close)


def close_all() -> None:
    """Close every loop's connection (a test session's end: they would keep its database alive)."""
    for found in list(_readers.by_loop.values()):
        found.close()
    _readers.by_loop.clear()


def _user_row_sync(user_id: int) -> tuple[User | None, int]:
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute(_statement(False)[0], [user_id])
        return _result(cursor.fetchone())


_user_row_thread = database_sync_to_async(_user_row_sync)


@functools.cache
def _on_postgresql() -> bool:
    # Asked once: on the event loop, ``connections[...]`` builds a database wrapper per task.
    return connections[DEFAULT_DB_ALIAS].vendor == "postgresql"


async def user_row(user_id: int) -> tuple[User | None, int]:
    """The user (or None) and its stream's latest seq. Raises one of DATABASE_ERRORS when the
    database cannot answer."""
    if not _on_postgresql():
        return await _user_row_thread(user_id)
    return await _readers().user_row(user_id)
