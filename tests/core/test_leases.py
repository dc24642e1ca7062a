"""core.leases.RENEW on the real Redis: one command renews many lease sets, a set of thousands of
members included (written in slices), and a key Redis refuses leaves the keys after it renewed."""

from __future__ import annotations

import time
import uuid

import pytest

from core.leases import RENEW, renew_command
from core.redis_clients import redis_client


async def test_one_command_renews_every_set_and_skips_one_redis_refuses():
    client = redis_client()
    base = f"test-leases:{uuid.uuid4().hex}"
    many, bad, few, empty = f"{base}:many", f"{base}:bad", f"{base}:few", f"{base}:empty"
    crowd = [f"m{i}" for i in range(1_203)]  # past Lua's slice of 500 twice
    now = time.time()
    try:
        await client.zadd(few, {"old": now - 5, "kept": now - 5})  # a renewal moves what is there
        await client.set(bad, "not a sorted set")  # WRONGTYPE for ZADD
        leases = [(many, crowd), (bad, ["x"]), (few, ["kept", "new"]), (empty, [])]
        answer = await client.eval(RENEW, *renew_command(now + 30, 31, leases))
        # the refused key is skipped (the keys after it still renewed); the set without members is
        # left out of the command
        assert answer == 2
        assert await client.zcard(many) == len(crowd)
        assert set(await client.zrangebyscore(many, now + 30, now + 30)) == {m.encode() for m in crowd}
        assert dict(await client.zrange(few, 0, -1, withscores=True)) == {
            b"old": now - 5,  # not renewed: not asked for
            b"kept": now + 30,
            b"new": now + 30,
        }
        assert 29 < await client.ttl(many) <= 31 and 29 < await client.ttl(few) <= 31
        # the refused key is left as it is but for its TTL: nothing the script touched outlives a lease
        assert await client.get(bad) == b"not a sorted set" and 29 < await client.ttl(bad) <= 31
        assert not await client.exists(empty)
    finally:
        await client.delete(many, bad, few, empty)


def test_a_member_with_a_line_break_is_refused_before_anything_is_sent():
    with pytest.raises(ValueError, match="line break"):
        renew_command(1.0, 2, [("k", ["a\nb"])])


def test_a_shortfall_of_renewed_keys_is_logged_and_none_is_quiet(caplog):
    from core.leases import log_refused

    with caplog.at_level("WARNING", logger="core.leases"):
        log_refused(500, 500, "presence")
        assert not caplog.records
        log_refused(498, 500, "presence")
    assert [r.getMessage() for r in caplog.records] == ["presence: Redis refused 2 of 500 lease keys"]
