"""core.batching.Batcher, the one writer of the socket-lease and presence registries: a batch per
run, answers in order, a failure for every caller of its batch, and no caller left waiting when
the writer is cancelled."""

from __future__ import annotations

import asyncio

import pytest

from core.batching import Batcher


async def test_what_is_asked_for_during_a_run_goes_in_the_next_one_answered_in_order():
    runs: list[list[int]] = []
    gate = asyncio.Event()

    async def run(items: list[int]) -> list[int]:
        runs.append(items)
        await gate.wait()
        return [i * 10 for i in items]

    writes: Batcher[int, int] = Batcher(run)
    calls = [asyncio.ensure_future(writes.call(i)) for i in (1, 2)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the first run has begun with 1 and 2
    calls += [asyncio.ensure_future(writes.call(i)) for i in (3, 4, 5)]
    gate.set()
    assert await asyncio.gather(*calls) == [10, 20, 30, 40, 50]
    assert runs == [[1, 2], [3, 4, 5]]
    await writes.idle()
    assert writes.writer is not None and writes.writer.done()


async def test_a_failed_run_fails_each_caller_of_its_batch_and_the_next_batch_goes_on():
    async def run(items: list[str]) -> list[str]:
        if "bad" in items:
            raise OSError("Redis away")
        return items

    writes: Batcher[str, str] = Batcher(run)
    bad = asyncio.gather(writes.call("bad"), writes.call("also"), return_exceptions=True)
    assert [type(e) for e in await bad] == [OSError, OSError]
    assert await writes.call("good") == "good"


@pytest.mark.parametrize("turns", [1, 2], ids=["before-it-starts", "mid-run"])
async def test_a_caller_of_a_writer_that_is_cancelled_fails_instead_of_waiting_for_good(turns):
    """A loop closing cancels every task, the writer too. A socket's release (shielded in its
    disconnect) waiting on the writer then waited for good, and the loop never closed: a failing
    consumer test hung the suite. It gets a ConnectionError, which a release treats as Redis away
    (the leases lapse by themselves)."""

    async def run(items: list[str]) -> list[str]:
        await asyncio.Event().wait()  # a pipeline that has not answered yet
        return items

    writes: Batcher[str, str] = Batcher(run)
    release = asyncio.ensure_future(writes.call("drop-1"))
    queued = asyncio.ensure_future(writes.call("drop-2"))
    for _ in range(turns):  # 1: the writer is made, not started; 2: its batch is in the run
        await asyncio.sleep(0)
    assert writes.writer is not None and bool(writes.sending) == (turns == 2)
    writes.writer.cancel()
    for waiting in (release, queued):
        with pytest.raises(ConnectionError, match="writer stopped"):
            await asyncio.wait_for(waiting, 10)
    cancelled = writes.writer
    later = asyncio.ensure_future(writes.call("later"))  # the next call starts a writer of its own
    await asyncio.sleep(0)
    assert writes.writer is not cancelled and not writes.writer.done()
    writes.writer.cancel()
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(later, 10)


async def test_a_call_made_as_the_cancelled_writer_ends_goes_out_with_the_next_writer():
    """Between a writer ending cancelled and its done-callback, a call may start a new writer: the
    late callback leaves that one's items be (the review: it failed them, and they never went out).
    The callback is run here by hand after the new writer exists, as that turn of the loop has it."""

    async def run(items: list[str]) -> list[str]:
        if "a" in items:
            await asyncio.Event().wait()
        return items

    writes: Batcher[str, str] = Batcher(run)
    first = asyncio.ensure_future(writes.call("a"))
    await asyncio.sleep(0)
    old = writes.writer
    assert old is not None
    old.cancel()
    await asyncio.wait([old])
    with pytest.raises(ConnectionError):
        await first
    later = asyncio.ensure_future(writes.call("b"))
    await asyncio.sleep(0)  # queued, with a writer of its own
    assert writes.writer is not old
    writes._writer_done(old)  # the old writer's callback, late
    assert await asyncio.wait_for(later, 10) == "b"
