"""Issue 23, item 4: a network partition, not a crash. One daphne process reaches Redis through a TCP
proxy that black-holes the link (no FIN, no RST: nothing answers, so only timeouts can tell) while
its clients stay connected, then heals. Its clients are told to reconnect (4013) and resume on the
other process; after the heal every personal event reached every client exactly once (by seq,
checked against the event log), and the cut-off process serves again."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from channels.db import database_sync_to_async

from axisor_client import AxisorClient
from tests.conftest import jwt_for
from tests.hardening.conftest import readiness, server_is_clean
from tests.hardening.fleet import FAST, Fleet, broadcast, latest_seqs, users
from tests.polling import until

GRACE = 2.0  # CHANNEL_LAYER_GRACE_SECONDS
# While the link is black-holed, the cut-off process's own Redis calls (presence, leases) time out;
# what redis-py and our code log about that carries no traceback of ours.
PARTITIONED = ("presence", "Redis", "redis", "Timeout")


def env_for(redis_url: str) -> dict[str, str]:
    return {
        "REDIS_URL": redis_url,
        "REDIS_SOCKET_TIMEOUT": "2",
        "REDIS_CONNECT_TIMEOUT": "1",
        "CHANNEL_LAYER_GRACE_SECONDS": str(GRACE),
        "AXISOR_BACKGROUND": "0",
        "AXISOR_SIMULATE": "",
    }


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_a_process_partitioned_from_redis_tells_its_clients_to_reconnect_and_loses_nothing(
    private_redis, tcp_proxy, daphne, make_user
):
    proxy = tcp_proxy(private_redis.port)
    # a reaches Redis only through the proxy (its layer, presence, leases, cache); b directly
    a = await asyncio.to_thread(daphne, **env_for(f"redis://127.0.0.1:{proxy.port}/0"))
    b = await asyncio.to_thread(daphne, **env_for(private_redis.url))
    staff = await database_sync_to_async(make_user)("ops-part", superuser=True)
    token = jwt_for(staff)
    people = await users(make_user, "pt-", 20)
    fleet = Fleet()
    for user in people:  # every client starts on a, the process that will be cut off
        fleet.add([a.ws, b.ws], user)
    closes: list[list[tuple[float, int | None]]] = []  # per client: (when, close code) of each loss
    for client, _, _ in fleet.clients:
        closes.append(got := [])
        client.on_status("reconnecting", lambda s, got=got: got.append((time.monotonic(), getattr(s, "code", None))))

    published = itertools.count()

    async def keep_publishing() -> None:
        """A notification to everyone every 0.5 s, through b (the process that reaches Redis)."""
        while True:
            assert await broadcast(b, token, f"stream {next(published)}") == 201
            await asyncio.sleep(0.5)

    async with fleet:
        assert await broadcast(b, token, "before") == 201
        await fleet.wait_all_beyond([0] * len(fleet.clients), 30)
        assert all(c.url.startswith(a.ws) for c, _, _ in fleet.clients)  # all held by a
        assert await readiness(a) == 200
        publishing = asyncio.ensure_future(keep_publishing())
        try:
            marks = await database_sync_to_async(latest_seqs)([u.pk for u in people])
            proxy.blackhole()
            cut = time.monotonic()
            # every client is served again: told to reconnect (4013), it resumes on b
            await fleet.wait_all_beyond([marks[u.pk] for _, u, _ in fleet.clients], 30)
            served_again = time.monotonic() - cut
            codes = [code for got in closes for _, code in got]
            assert codes and set(codes) == {4013}, codes  # told, never dropped or timed out
            assert all(got for got in closes)  # each was told
            told = max(t for got in closes for t, _ in got) - cut
            assert all(c.url.startswith(b.ws) for c, _, _ in fleet.clients)
            assert await readiness(a) == 503  # a load balancer stops sending sockets to a
            partitioned = time.monotonic() - cut

            proxy.restore()
            healed = time.monotonic()
            # a serves again: a new socket there gets the live stream
            probe = AxisorClient(a.ws, jwt_for(people[0]), max_tries=1, **FAST)
            got: list[int] = []
            probe.on_event("*", lambda e: got.append(e["seq"]) if "seq" in e else None)
            mark = (await database_sync_to_async(latest_seqs)([people[0].pk]))[people[0].pk]
            async with probe:
                await until(lambda: any(s > mark for s in got), timeout=20, what="a live event on a after the heal")
            a_again = time.monotonic() - healed

            async def ready() -> bool:
                return await readiness(a) == 200

            await until(ready, timeout=20, what="a ready again")
        finally:
            publishing.cancel()
            await asyncio.gather(publishing, return_exceptions=True)
        assert await broadcast(a, token, "final") == 201  # through the healed process
        total = await fleet.check_exactly_once(timeout=60)

    print(
        f"\npartition: daphne a black-holed from Redis for {partitioned:.1f} s under {len(fleet.clients)} clients "
        f"and a notification to all every 0.5 s through b; every client told to reconnect (4013) by "
        f"{told:.1f} s and served again (resumed on b) {served_again:.1f} s after the cut; after the heal a new "
        f"socket on a had the live stream in {a_again:.1f} s; {total} personal events checked against the log: "
        "events lost = 0, duplicates = 0"
    )
    server_is_clean(a, expected=PARTITIONED)
    server_is_clean(b)
