"""Presence: connection leases are renewed in bounded pipelines, one command per chunk of users, and
a connect storm's joins and leaves share them."""

from __future__ import annotations

import asyncio
import time

import pytest

from broadcast import presence


async def forget(users: list[int]) -> None:
    """No made-up user's leases linger in the shared test Redis for the rest of the run."""
    async with presence.redis_client().pipeline(transaction=False) as pipe:
        pipe.delete(*(presence._user_key(uid) for uid in users))
        pipe.zrem(presence._online_key(), *(str(uid) for uid in users))
        await pipe.execute()


@pytest.mark.django_db(transaction=True)
async def test_leases_are_written_in_chunks_one_command_per_chunk(monkeypatch):
    from django.conf import settings

    assert settings.REDIS_URL, "the tests run against the real Redis"
    monkeypatch.setattr(presence, "LEASE_CHUNK", 2)
    pipelines: list[int] = []
    real_pipeline = presence.redis_client().pipeline

    def counting_pipeline(*args, **kwargs):
        pipe = real_pipeline(*args, **kwargs)
        real_execute = pipe.execute

        async def execute(*a, **k):
            pipelines.append(len(pipe.command_stack))
            return await real_execute(*a, **k)

        pipe.execute = execute
        return pipe

    monkeypatch.setattr(presence.redis_client(), "pipeline", counting_pipeline)
    users = [910_001, 910_002, 910_003, 910_004, 910_005]
    conns = [(uid, f"/ws|test-proc|c{uid}-{i}") for uid in users for i in range(3)]
    conns.append((users[0], "/ws/orders|test-proc|o1"))
    try:
        await presence._write_leases(conns, time.time() + 30, process=("test-proc:1", {"process": "test-proc:1"}))
        await check_leases(users, pipelines)
    finally:  # no made-up process or user lingers for the rest of the run
        async with presence.redis_client().pipeline(transaction=False) as pipe:
            pipe.zrem(presence._procs_key(), "test-proc:1")
            pipe.delete(presence._proc_key("test-proc:1"), *(presence._user_key(uid) for uid in users))
            pipe.zrem(presence._online_key(), *(str(uid) for uid in users))
            await pipe.execute()


@pytest.mark.django_db(transaction=True)
async def test_connects_and_disconnects_of_a_storm_share_pipelines(monkeypatch):
    registry = presence.Registry()
    registry.stopping.set()  # no renewal loop: only the joins and leaves write
    pipelines: list[list[str]] = []
    real_pipeline = presence.redis_client().pipeline

    def counting_pipeline(*args, **kwargs):
        pipe = real_pipeline(*args, **kwargs)
        real_execute = pipe.execute

        async def execute(*a, **k):
            pipelines.append([str(command[0][0]) for command in pipe.command_stack])
            return await real_execute(*a, **k)

        pipe.execute = execute
        return pipe

    monkeypatch.setattr(presence.redis_client(), "pipeline", counting_pipeline)
    users = [920_001, 920_002, 920_003, 920_004, 920_005, 920_006]
    try:
        members = await asyncio.gather(*(registry.join(uid, "/ws", f"c{uid}") for uid in users))
        assert await asyncio.to_thread(presence.connections_by_user, users) == {
            uid: {"/ws": 1, "/ws/orders": 0} for uid in users
        }
        # the six leases: one pipeline, one command writing them (core.leases.RENEW) and one the users online
        assert pipelines == [["EVAL", "ZADD"]]

        await asyncio.gather(*(registry.leave(uid, member) for uid, member in zip(users, members, strict=True)))
        assert pipelines[1:] == [["ZREM"] * 6]  # the six removals: one pipeline, not six round trips
        assert await asyncio.to_thread(presence.connections_by_user, users) == {
            uid: {"/ws": 0, "/ws/orders": 0} for uid in users
        }
        assert registry.conns == {}
    finally:
        await forget(users)


async def check_leases(users: list[int], pipelines: list[int]) -> None:
    # 5 users in chunks of 2: three pipelines, each one command renewing its users' leases
    # (core.leases.RENEW) and one ZADD of the users online (the first also the process lease):
    # 4 + 2 + 2 commands, not 3 per connection nor 2 per user.
    assert pipelines == [1 + 1 + 2, 1 + 1, 1 + 1]
    counts = await asyncio.to_thread(presence.connections_by_user, users)
    assert counts[users[0]] == {"/ws": 3, "/ws/orders": 1}
    assert all(counts[uid] == {"/ws": 3, "/ws/orders": 0} for uid in users[1:])
    assert set(users) <= await presence.online_users()
    assert any(p["process"] == "test-proc:1" for p in await asyncio.to_thread(presence.processes))


@pytest.mark.django_db(transaction=True)
async def test_a_join_given_up_mid_storm_leaves_the_others_answered():
    """Each join waits on a future of its own in the batch: a socket gone while its lease is on its
    way cancels only that wait; the lease is written with the others (the socket's own cleanup
    removes it, as before), and every other join is answered."""
    registry = presence.Registry()
    registry.stopping.set()  # no renewal loop
    users = [930_001, 930_002, 930_003]
    joins = [asyncio.ensure_future(registry.join(uid, "/ws", f"c{uid}")) for uid in users]
    try:
        await asyncio.sleep(0)  # all three asked for: one batch
        joins[1].cancel()
        members = await asyncio.wait_for(asyncio.gather(joins[0], joins[2]), 10)
        assert joins[1].cancelled()
        assert members == [f"/ws|{registry.pid}|c{users[0]}", f"/ws|{registry.pid}|c{users[2]}"]
        assert await asyncio.to_thread(presence.connections_by_user, users) == {
            uid: {"/ws": 1, "/ws/orders": 0} for uid in users
        }
    finally:
        await forget(users)


async def test_the_stats_count_connections_kept_with_joins_and_leaves(settings):
    """``stats()`` reads counts kept at each join and leave (it runs every second: it walks no
    socket); a second join or leave of the same connection does not count twice."""
    settings.REDIS_ENABLED = False  # the in-memory bookkeeping: the counts are the registry's own
    registry = presence.Registry()
    registry.stopping.set()
    ws = [await registry.join(940_001 + i, "/ws", f"c{i}") for i in range(3)]
    orders = await registry.join(940_001, "/ws/orders", "o1")
    assert await registry.join(940_001, "/ws/orders", "o1") == orders  # the same connection again
    assert registry.stats()["connections"] == {"/ws": 3, "/ws/orders": 1}
    await registry.leave(940_001, ws[0])
    await registry.leave(940_001, ws[0])
    await registry.leave(940_001, orders)
    assert registry.stats()["connections"] == {"/ws": 2, "/ws/orders": 0}
    assert registry.stats()["rooms"]["user"] == 2
    await registry.shutdown()
    assert registry.stats()["connections"] == {"/ws": 0, "/ws/orders": 0}


@pytest.mark.django_db(transaction=True)
async def test_a_socket_that_joins_after_its_process_left_is_not_written_back():
    """A process stopping leaves the registry with every connection it has (shutdown). A socket
    whose connect was still under way then, joining after it, is not written back as online for
    a lease's time: it is about to be cut, and an event for its user would count as delivered."""
    users = [950_101, 950_102]
    registry = presence.Registry()
    try:
        await registry.join(users[0], "/ws", "before")
        assert presence.connections_by_user(users[:1])[users[0]]["/ws"] == 1
        await registry.shutdown()
        await registry.join(users[1], "/ws", "after")
        assert registry.stats()["connections"]["/ws"] == 0
        found = presence.connections_by_user(users)
        assert [found[u]["/ws"] for u in users] == [0, 0]
    finally:
        await forget(users)


@pytest.mark.django_db(transaction=True)
async def test_a_leave_is_never_undone_by_a_renewal_on_its_way(monkeypatch):
    """The tick's renewal snapshots every connection; one that leaves while the renewal's chunks
    are still going out must not be written back (it would count as online for a whole lease):
    joins, leaves and renewals go through one writer, in order."""
    monkeypatch.setattr(presence, "LEASE_CHUNK", 1)  # a round trip per user: the leave comes between
    registry = presence.Registry()
    registry.stopping.set()  # no renewal loop: the test ticks itself
    users = [950_001, 950_002, 950_003]
    writing = asyncio.Event()
    real_write = presence._write_leases

    async def write_leases(conns, expires, process=None):
        if process is not None and conns:  # the tick's renewal, its first chunk on its way
            writing.set()
        await real_write(conns, expires, process)

    try:
        members = [await registry.join(uid, "/ws", f"c{uid}") for uid in users]
        monkeypatch.setattr(presence, "_write_leases", write_leases)
        registry.last_renew = 0.0  # this tick renews every connection
        tick = asyncio.ensure_future(registry.tick())
        await asyncio.wait_for(writing.wait(), 10)  # the renewal is being written
        await registry.leave(users[-1], members[-1])
        await tick
        counts = await asyncio.to_thread(presence.connections_by_user, users)
        assert counts == {
            users[0]: {"/ws": 1, "/ws/orders": 0},
            users[1]: {"/ws": 1, "/ws/orders": 0},
            users[2]: {"/ws": 0, "/ws/orders": 0},  # gone, not renewed back
        }
    finally:
        await registry.shutdown()
        await forget(users)


@pytest.mark.django_db(transaction=True)
async def test_a_renewal_that_failed_is_tried_again_at_the_next_tick(monkeypatch):
    """A renewal Redis did not take is logged and written again a tick later, not a third of a
    lease later: two failures in a row would let every lease lapse."""
    registry = presence.Registry()
    registry.stopping.set()
    real_write = presence._write_leases
    failures = []

    async def write_leases(conns, expires, process=None):
        if conns and not failures:
            failures.append(len(conns))
            raise presence.RedisError("Redis away for a moment")
        await real_write(conns, expires, process)

    try:
        member = await registry.join(960_001, "/ws", "c1")
        monkeypatch.setattr(presence, "_write_leases", write_leases)
        registry.last_renew = 0.0
        await registry.tick()
        assert failures == [1] and registry.last_renew == 0.0  # not renewed: due again
        await registry.tick()
        assert registry.last_renew > 0.0
        await registry.leave(960_001, member)
    finally:
        await registry.shutdown()
        await forget([960_001])


@pytest.mark.django_db(transaction=True)
async def test_a_join_waits_behind_one_chunk_of_a_renewal_not_all_of_it(monkeypatch):
    """The tick's renewal goes to the writer a chunk at a time, so a connect's join is written
    after the chunk on its way, not after every chunk of a process's thousands of sockets."""
    monkeypatch.setattr(presence, "LEASE_CHUNK", 1)
    registry = presence.Registry()
    registry.stopping.set()
    users = [970_001, 970_002, 970_003, 970_004]
    writes: list[list[str]] = []
    writing = asyncio.Event()
    real_write = presence._write_leases

    async def write_leases(conns, expires, process=None):
        writes.append([m for _, m in conns])
        writing.set()
        await real_write(conns, expires, process)

    try:
        members = [await registry.join(uid, "/ws", f"c{uid}") for uid in users[:3]]
        monkeypatch.setattr(presence, "_write_leases", write_leases)
        registry.last_renew = 0.0
        tick = asyncio.ensure_future(registry.tick())
        await asyncio.wait_for(writing.wait(), 10)  # the renewal's first chunk on its way
        late = await registry.join(users[3], "/ws", f"c{users[3]}")
        await tick
        assert writes[0] == members[:1]  # the first chunk
        assert writes.index([late]) < writes.index(members[2:3])  # the join before the renewal's last chunk
        assert sorted(m for w in writes for m in w) == sorted([*members, late])
    finally:
        await registry.shutdown()
        await forget(users)
