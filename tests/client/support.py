"""Helpers of the client-library tests: bounded waits, event recorders, users that can log in over
REST, and publishing personal events from the test process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from channels.db import database_sync_to_async
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from broadcast.models import EventLog
from broadcast.outbox import publish_personal_many
from tests.polling import until
from wire import envelope

# No paper venue and no background loops in the servers: the test alone produces events.
QUIET = {"AXISOR_SIMULATE": "", "AXISOR_BACKGROUND": "0"}
PASSWORD = "client-pass-123"


async def start_server(daphne, **env: str):
    return await asyncio.to_thread(daphne, **{**QUIET, **env})


async def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    """Poll ``predicate`` (client-side state) until it holds; fail after ``timeout`` seconds."""
    await until(predicate, timeout=timeout, what=what, interval=0.02)


class Recorder:
    """A callback that keeps what it is given, with a bounded wait for the next one."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.queue: asyncio.Queue = asyncio.Queue()

    def __call__(self, item: Any) -> None:
        self.items.append(item)
        self.queue.put_nowait(item)

    async def get(self, timeout: float = 15.0) -> Any:
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def take(self, n: int, timeout: float = 15.0) -> list[Any]:
        return [await self.get(timeout) for _ in range(n)]

    def empty(self) -> bool:
        return self.queue.empty()


def set_login_password(user, password: str = PASSWORD) -> None:
    """A password the daphne processes can check: the test settings hash with MD5, which the servers'
    default hashers do not know, so store a (cheap) PBKDF2 hash instead."""
    hasher = PBKDF2PasswordHasher()
    user.password = hasher.encode(password, hasher.salt(), iterations=1000)
    user.save(update_fields=["password"])


def notify(user_id: int, n: int, *, tag: str = "n") -> list[int]:
    """Publish ``n`` personal notifications; returns their seqs."""
    return [
        publish_personal_many(
            [
                (
                    user_id,
                    envelope(
                        "in_app_notification",
                        "notifications",
                        {"id": f"{tag}-{i}", "title": f"{tag} {i}", "message": "test", "type": "info"},
                    ),
                )
            ]
        )[0].seq
        for i in range(n)
    ]


def logged(user_id: int, channel: str | None = None) -> list[dict]:
    """The user's event log, in seq order, as sent."""
    rows = EventLog.objects.filter(user_id=user_id).order_by("seq")
    if channel is not None:
        rows = rows.filter(channel=channel)
    return [row.payload for row in rows]


db = database_sync_to_async
