"""The per-process connection lease registry (gateway/limits.py): nothing runs per connection — one
task renews every lease the process holds, and every take, release and renewal goes through one
writer, in order, batched per round trip."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from django.conf import settings

from core.redis_clients import redis_client
from gateway import limits
from tests.polling import until


def conns_key(kind: str, user_id: int) -> str:
    return f"{settings.CHANNEL_LAYER_PREFIX}:{kind}:conns:{user_id}"


@pytest.fixture
def fresh_users():
    """User ids no earlier run left leases under (the keys are in the shared test Redis)."""
    base = 10**9 + uuid.uuid4().int % 10**9

    def ids(n: int) -> list[int]:
        return list(range(base, base + n))

    return ids


async def scores(kind: str, user_id: int) -> dict[str, float]:
    found = await redis_client().zrange(conns_key(kind, user_id), 0, -1, withscores=True)
    return {member.decode(): score for member, score in found}


async def clear(kind: str, users: list[int]) -> None:
    await redis_client().delete(*(conns_key(kind, u) for u in users))


async def test_one_task_renews_every_lease_of_the_process(settings, fresh_users):
    settings.AXISOR_WS = {**settings.AXISOR_WS, "LEASE_SECONDS": 0.9}  # renewed every 0.3 s
    users = fresh_users(20)
    await clear(limits.WS, users)
    registry = limits.leases()
    tasks_before = len(asyncio.all_tasks())
    for user in users:
        for socket in ("a", "b"):
            assert await limits.acquire(limits.WS, user, "basic", f"s-{user}-{socket}") is None
    # 40 sockets hold leases: the registry's renewer is the one task that keeps them (the writer
    # task exists only while something waits to be sent)
    assert len(asyncio.all_tasks()) - tasks_before <= 2 and registry.renewer is not None
    first = await scores(limits.WS, users[0])
    assert set(first) == {f"s-{users[0]}-a", f"s-{users[0]}-b"}

    async def renewed() -> bool:
        now = await scores(limits.WS, users[-1])
        return bool(now) and min(now.values()) > max(first.values()) + 0.2

    await until(renewed, timeout=10, what="the registry's periodic renewal")
    for user in users:
        for socket in ("a", "b"):
            await limits.release(limits.WS, user, f"s-{user}-{socket}")
    assert registry.held == {} and [await scores(limits.WS, u) for u in users] == [{}] * len(users)
    await until(lambda: registry.renewer is None or registry.renewer.done(), what="the renewer to stop: nothing held")


async def test_a_release_is_never_undone_by_a_renewal_on_its_way(fresh_users):
    (user,) = fresh_users(1)
    await clear(limits.WS, [user])
    registry = limits.leases()
    assert await limits.acquire(limits.WS, user, "basic", "kept") is None
    assert await limits.acquire(limits.WS, user, "basic", "gone") is None
    renewal = asyncio.ensure_future(registry.renew())  # its snapshot holds both leases
    await asyncio.sleep(0)  # the renewal is queued first
    await limits.release(limits.WS, user, "gone")  # sent after it, in order
    await renewal
    assert set(await scores(limits.WS, user)) == {"kept"}
    await registry.renew()
    assert set(await scores(limits.WS, user)) == {"kept"}  # a released lease is not renewed again
    await limits.release(limits.WS, user, "kept")


async def test_a_connect_storm_costs_a_pipeline_per_round_trip_and_the_cap_still_holds(monkeypatch, fresh_users):
    users = fresh_users(200)
    capped, *others = users
    await clear(limits.WS, users)
    batches: list[int] = []
    run = limits.RedisLimiter.run

    async def counted(self, ops):
        batches.append(len(ops))
        return await run(self, ops)

    monkeypatch.setattr(limits.RedisLimiter, "run", counted)
    answers = await asyncio.gather(
        *(limits.acquire(limits.WS, u, "basic", f"m-{u}") for u in others),
        *(limits.acquire(limits.WS, capped, "basic", f"m-{capped}-{i}") for i in range(12)),
    )
    assert answers[: len(others)] == [None] * len(others)
    refused = [a for a in answers[len(others) :] if a is not None]
    assert len(refused) == 2 and all(r.code == 4029 for r in refused)  # basic: CAP_WS_SOCKETS_BASIC = 10
    assert len(await scores(limits.WS, capped)) == 10
    # 211 takes asked for in one turn of the loop go in one pipeline; the refused two look again
    # through the grace period in batches of their own
    assert batches[0] == 211 and sum(batches[1:]) <= 2 * round(limits.GRACE_SECONDS / limits.GRACE_STEP), batches
    await asyncio.gather(*(limits.release(limits.WS, u, f"m-{u}") for u in others))
    await asyncio.gather(*(limits.release(limits.WS, capped, f"m-{capped}-{i}") for i in range(12)))
    assert not await scores(limits.WS, capped) and limits.leases().held == {}


async def test_without_redis_the_same_registry_keeps_the_leases_in_memory(monkeypatch):
    memory = limits.MemoryLimiter()
    monkeypatch.setattr(limits, "_limiter", memory)
    registry = limits.leases()
    assert await limits.acquire(limits.WS, 1, "basic", "m1") is None
    memory.conns[limits.WS, 1]["m1"] = 0.0  # as if it had lapsed
    await registry.renew()
    assert memory.conns[limits.WS, 1]["m1"] > 0
    await limits.release(limits.WS, 1, "m1")
    await registry.renew()
    assert memory.conns[limits.WS, 1] == {}


async def test_a_take_given_up_mid_storm_leaves_the_others_answered(fresh_users):
    """Each take waits on a future of its own in the batch: a socket gone while its take is on its
    way (or a server stopping, which cancels every consumer) cancels only that wait. The take still
    goes out with the others, which are answered, and its drop goes after it: no lease is left to
    lapse unrenewed (a user at the cap would meet it for a lease's time)."""
    users = fresh_users(3)
    await clear(limits.WS, users)
    takes = [asyncio.ensure_future(limits.acquire(limits.WS, u, "basic", f"g-{u}")) for u in users]
    await asyncio.sleep(0)  # all three asked for: one pipeline
    takes[1].cancel()
    assert await asyncio.wait_for(asyncio.gather(takes[0], takes[2]), 10) == [None, None]
    assert takes[1].cancelled()
    await limits.leases().call(("drop", limits.WS, users[1], "barrier"))  # the writer keeps order: all out
    assert await scores(limits.WS, users[1]) == {}  # written, then dropped after it
    assert (limits.WS, users[1]) not in limits.leases().held
    for u in (users[0], users[2]):
        await limits.release(limits.WS, u, f"g-{u}")
    await limits.release(limits.WS, users[1], f"g-{users[1]}")


async def test_once_the_leases_are_given_back_no_take_holds_one(fresh_users):
    """A stopping process gives its leases back (release_all). A take on its way then, and any take
    after it, is refused (ServerStopping: the consumers answer 4013, reconnect), and what the take
    on its way wrote is dropped after it, before release_all returns (the process then stops its
    event loop): nothing is left to lapse for a lease's time while the user, reconnecting to
    another process, would meet it at the cap. So also when the process held no lease."""
    users = fresh_users(3)
    await clear(limits.WS, users)
    on_its_way = asyncio.ensure_future(limits.acquire(limits.WS, users[1], "basic", "late"))
    await asyncio.sleep(0)  # asked for: queued for the writer's next pipeline, before the give-back
    await limits.release_all()
    registry = limits.leases()  # nothing left to send once it returns: the loop may stop now
    assert not registry.writes.queue and (registry.writes.writer is None or registry.writes.writer.done())
    assert await scores(limits.WS, users[1]) == {}  # written, and dropped after it
    with pytest.raises(limits.ServerStopping):
        await on_its_way
    with pytest.raises(limits.ServerStopping):
        await limits.acquire(limits.WS, users[2], "basic", "after")
    assert [await scores(limits.WS, u) for u in users] == [{}, {}, {}]
    assert limits.leases().held == {}


async def test_a_take_looking_again_for_a_slot_stops_when_the_leases_are_given_back(monkeypatch, fresh_users):
    """A take refused at the cap looks again for GRACE_SECONDS (another process's release may be
    on its way). If its own process gives its leases back meanwhile, it stops looking: 4013 (go to
    another process), not a slot taken after the give-back, nor 4029."""
    monkeypatch.setattr(limits, "GRACE_STEP", 1.0)  # room to act between two looks
    monkeypatch.setattr(limits, "GRACE_SECONDS", 3.0)
    user = fresh_users(1)[0]
    await clear(limits.WS, [user])
    cap = 10  # basic: CAP_WS_SOCKETS_BASIC
    elsewhere = limits.limiter()  # written as another process would: not this process's leases
    assert await elsewhere.run([("take", limits.WS, user, "basic", f"o-{i}", True) for i in range(cap)]) == [0] * cap
    takes_after: list[tuple] = []
    given_back = asyncio.Event()
    run = limits.RedisLimiter.run

    async def recorded(self, ops):
        if given_back.is_set():
            takes_after.extend(op for op in ops if op[0] == "take")
        return await run(self, ops)

    monkeypatch.setattr(limits.RedisLimiter, "run", recorded)
    looking = asyncio.ensure_future(limits.acquire(limits.WS, user, "basic", "mine"))
    writes = limits.leases().writes
    await until(lambda: writes.writer is not None and writes.writer.done(), what="refused once")
    await elsewhere.run([("drop", limits.WS, user, "o-0")])  # a slot frees: the next look would take it
    given_back.set()
    await limits.release_all()
    with pytest.raises(limits.ServerStopping):
        await looking
    assert takes_after == []  # it stopped looking: no take went out after the give-back
    assert "mine" not in await scores(limits.WS, user)
    await clear(limits.WS, [user])


async def test_a_take_waits_behind_one_chunk_of_a_renewal_not_all_of_it(monkeypatch, fresh_users):
    """Renewals go to the writer a chunk of users at a time: a connect's take is sent after the
    chunk on its way, not after every chunk of a process's thousands of leases."""
    monkeypatch.setattr(limits, "LEASE_CHUNK", 1)
    users = fresh_users(4)
    await clear(limits.WS, users)
    registry = limits.leases()
    for user in users[:3]:
        assert await limits.acquire(limits.WS, user, "basic", f"s-{user}") is None
    batches: list[list[str]] = []
    sending = asyncio.Event()
    run = limits.RedisLimiter.run

    async def recorded(self, ops):
        batches.append([op[0] if op[0] != "renew" else f"renew {op[1][0][1]}" for op in ops])
        sending.set()
        return await run(self, ops)

    monkeypatch.setattr(limits.RedisLimiter, "run", recorded)
    try:
        renewal = asyncio.ensure_future(registry.renew())
        await asyncio.wait_for(sending.wait(), 10)  # the renewal's first chunk on its way
        assert await limits.acquire(limits.WS, users[3], "basic", f"s-{users[3]}") is None
        await renewal
        flat = [op for batch in batches for op in batch]
        # held leases are renewed in the order they were taken; the take goes out before the last chunk
        assert flat.index("take") < flat.index(f"renew {users[2]}")
    finally:
        for user in users:
            await limits.release(limits.WS, user, f"s-{user}")
