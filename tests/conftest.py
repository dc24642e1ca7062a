"""Shared fixtures. The suite runs on the real PostgreSQL and Redis named by DATABASE_URL and
REDIS_URL (scripts/test sets them for this machine); without them it stops at once, loudly."""

from __future__ import annotations

import os

import pytest
from channels.testing import WebsocketCommunicator
from rest_framework.test import APIClient

from accounts.tokens import AccessToken
from axisor.asgi import application
from tests.integration.conftest import daphne, subprocess_database_url  # noqa: F401 - shared fixtures


def pytest_configure(config):
    from django.conf import settings

    problems = []
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        problems.append("DATABASE_URL must point at PostgreSQL (e.g. postgres://postgres@127.0.0.1:5432/test)")
    if not settings.REDIS_URL:
        problems.append("REDIS_URL must point at Redis (e.g. redis://127.0.0.1:6379/0)")
    # Hashing passwords at full strength makes user factories dominate the run time.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    if problems:
        pytest.exit("the test suite runs against the real services: " + "; ".join(problems), returncode=3)


@pytest.fixture
def instruments(db):
    """The default instruments (a transactional test's flush removes the migration's rows)."""
    from market.defaults import load_default_instruments
    from market.models import Instrument
    from market.selectors import instrument_symbols_forget

    load_default_instruments(Instrument)
    instrument_symbols_forget()
    yield
    instrument_symbols_forget()


# Test users start funded, so a test that is not about money is never refused for it; a test about
# money passes its own ``balance`` (0: an empty account).
TEST_BALANCE = 1_000_000_000


def fund(user_id: int, amount: int | str) -> None:
    from decimal import Decimal

    from ledger.models import EntryKind
    from ledger.services import ledger_post

    ledger_post(user_id=user_id, kind=EntryKind.DEPOSIT, amount=Decimal(amount), note="test funds")


@pytest.fixture
def make_user(db):
    from accounts.models import User

    counter = iter(range(1, 10_000))

    def make(
        username: str | None = None,
        *,
        tier: str = "basic",
        staff: bool = False,
        superuser: bool = False,
        password: str = "pw-secret-123",
        balance: int | str | None = TEST_BALANCE,
    ):
        user = User(
            username=username or f"user{next(counter)}", tier=tier, is_staff=staff or superuser, is_superuser=superuser
        )
        user.set_password(password)
        user.save()
        if balance:
            fund(user.pk, balance)
        return user

    return make


def jwt_for(user, **claims) -> str:
    token = AccessToken.for_user(user)
    for key, value in claims.items():
        token[key] = value
    return str(token)


@pytest.fixture
def api(db):
    return APIClient()


def auth_api(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {jwt_for(user)}")
    return client


def ws(path: str = "/ws", *, token: str | None = None, origin: str | None = None) -> WebsocketCommunicator:
    headers = [(b"host", b"testserver")]  # as every HTTP client sends one (gateway.origin.host_allowed)
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    return WebsocketCommunicator(application, path, headers=headers)


async def connected(token: str, path: str = "/ws", **kwargs) -> tuple[WebsocketCommunicator, dict]:
    """Open /ws with a bearer token and return the communicator and its `connection` message."""
    comm = ws(path, token=token, **kwargs)
    ok, _ = await comm.connect()
    assert ok
    hello = await comm.receive_json_from(timeout=5)
    assert hello["type"] == "connection", hello
    return comm, hello


async def closed_with(comm: WebsocketCommunicator, timeout: float = 5) -> int:
    out = await comm.receive_output(timeout=timeout)
    assert out["type"] == "websocket.close", out
    return out.get("code")


def redis_url() -> str:
    return os.environ["REDIS_URL"]


@pytest.fixture(autouse=True)
def _sessions_off(settings):
    """Exchange sessions off, whatever the environment says: a test's result must not depend on the
    hour it runs at. tests/market/test_sessions.py turns them on with a clock of its own."""
    settings.AXISOR_MARKET = {**settings.AXISOR_MARKET, "SESSIONS": False}


@pytest.fixture(autouse=True)
def _conflater_cleared():
    """The conflater is one per process: what one test left waiting for its slot is not the next
    test's to receive, and its keys' last sends do not hold back the next test's first."""
    yield
    from broadcast import conflation

    conflation.conflater.clear()


@pytest.fixture(scope="session", autouse=True)
def _close_worker_thread_connections(django_db_setup):
    """Consumers reach the ORM on asgiref's shared sync thread: its connection goes back to the
    pool, and the pool's idle connections are closed, or they would keep the test database from
    being dropped. So is the connection the /ws connect read keeps per event loop."""
    yield
    from asgiref.sync import SyncToAsync
    from django.db import connections

    from gateway import connect_read

    connect_read.close_all()  # the /ws connect read's own connection, one per event loop that used it
    SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=10)
    connections.close_all()
    for conn in connections.all():
        if getattr(conn, "pool", None) is not None:
            conn.close_pool()
