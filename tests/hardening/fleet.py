"""A fleet of real clients (the axisor_client library, reconnecting and resuming as any client
would) that record every personal event they get, for the hardening suite's fault and soak cases."""

from __future__ import annotations

import asyncio
import time

from channels.db import database_sync_to_async

from axisor_client import AxisorClient
from broadcast.models import EventLog
from tests.conftest import jwt_for
from tests.hardening.conftest import rest

FAST = {"initial_delay": 0.2, "max_delay": 1.0, "read_timeout": 30.0}


class Fleet:
    """Clients of many users; each records the seqs of the personal events it got (and when)."""

    def __init__(self) -> None:
        self.clients: list[tuple[AxisorClient, object, list[tuple[int, float]]]] = []
        self.views: list[dict[str, dict]] = []  # per client: orderId → the latest update it got
        self.urls: list[list[str]] = []

    def add(self, urls: list[str], user, **kwargs) -> None:
        got: list[tuple[int, float]] = []
        views: dict[str, dict] = {}
        self.clients.append((self._client(urls, user, got, views, **kwargs), user, got))
        self.views.append(views)
        self.urls.append(urls)

    def _client(self, urls, user, got: list, views: dict, **kwargs) -> AxisorClient:
        client = AxisorClient(urls, jwt_for(user), **{**FAST, **kwargs})

        def record(event: dict) -> None:
            if "seq" not in event:
                return
            got.append((event["seq"], time.monotonic()))
            data = event.get("data") or {}
            if event.get("channel") == "orders" and "orderId" in data:
                known = views.get(data["orderId"])
                if known is None or data.get("version", 0) >= known.get("version", 0):
                    views[data["orderId"]] = data

        client.on_event("*", record)
        return client

    async def reopen(self, index: int) -> None:
        """A client that goes away (its process ends) and comes back resuming from its last seq."""
        client, user, got = self.clients[index]
        await client.stop()
        last = got[-1][0] if got else 0
        fresh = self._client(self.urls[index], user, got, self.views[index], last_seq=last)
        self.clients[index] = (fresh, user, got)
        await fresh.start()

    async def __aenter__(self):
        await asyncio.gather(*(c.start() for c, _, _ in self.clients))
        ok = await asyncio.gather(*(c.wait_connected(60) for c, _, _ in self.clients))
        assert all(ok), f"{ok.count(False)} clients did not connect"
        return self

    async def __aexit__(self, *exc) -> None:
        await asyncio.gather(*(c.stop() for c, _, _ in self.clients), return_exceptions=True)

    def last(self) -> list[int]:
        return [got[-1][0] if got else 0 for _, _, got in self.clients]

    async def wait_all_beyond(self, marks: list[int], timeout: float) -> float:
        """Until every client got a seq beyond its mark; seconds it took."""
        start = time.monotonic()
        while any(last <= mark for last, mark in zip(self.last(), marks, strict=True)):
            late = sum(last <= mark for last, mark in zip(self.last(), marks, strict=True))
            assert time.monotonic() - start < timeout, f"{late} of {len(marks)} clients not served after {timeout} s"
            await asyncio.sleep(0.1)  # many clients' progress: polled, each has its own stream
        return time.monotonic() - start

    async def check_exactly_once(self, timeout: float = 60) -> int:
        """Every client ends with its user's events 1..latest, each once, in order. Background
        delivery adds status events for a while, so wait until the log stops growing."""
        ids = [u.pk for _, u, _ in self.clients]
        deadline = time.monotonic() + timeout
        want: dict[int, int] = {}
        while True:
            latest = await database_sync_to_async(latest_seqs)(ids)
            caught_up = all(last >= latest[u.pk] for (_, u, _), last in zip(self.clients, self.last(), strict=True))
            if caught_up and latest == want:
                break
            want = latest if caught_up else want
            behind = sum(last < latest[u.pk] for (_, u, _), last in zip(self.clients, self.last(), strict=True))
            assert time.monotonic() < deadline, f"{behind} clients behind the event log after {timeout} s"
            await asyncio.sleep(0.5)  # many clients' progress against the log: polled
        total = 0
        for _, user, got in self.clients:
            seqs = [s for s, _ in got]
            assert seqs == list(range(1, want[user.pk] + 1)), (user.pk, seqs[:20], want[user.pk])
            total += len(seqs)
        return total


def latest_seqs(user_ids: list[int]) -> dict[int, int]:
    from django.db.models import Max

    rows = EventLog.objects.filter(user_id__in=user_ids).values("user_id").annotate(m=Max("seq"))
    found = {r["user_id"]: r["m"] for r in rows}
    return {uid: found.get(uid, 0) for uid in user_ids}


async def broadcast(server, staff_token: str, tag: str) -> int:
    body = {"audience": "all", "title": tag, "message": tag, "type": "info", "category": "system"}
    status, _ = await rest("POST", f"{server.http}/api/notifications", body, token=staff_token)
    return status


async def users(make_user, prefix: str, n: int) -> list:
    return [await database_sync_to_async(make_user)(f"{prefix}{i}") for i in range(n)]
