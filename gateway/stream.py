"""One connection's view of its user's personal events: in seq order, each exactly once.

Live events arrive through the channel layer; anything the layer lost or reordered (a process died
between commit and send, two publishers raced) is filled from the event log, and anything seen
twice (a relayed event, a live event that a replay already sent) is dropped. ``resume(since)``
replays the log after ``since`` first. The consumer handles one message at a time, so live events
that arrive during a replay simply wait and are then deduplicated against it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from channels.db import database_sync_to_async
from redis.exceptions import RedisError

from broadcast import history
from gateway import limits
from wire import Code

logger = logging.getLogger(__name__)

# (seq, channel, /ws text, second socket shape if the type has one: broadcast.messages.register_frame)
Emit = Callable[[int, str, str, str | None], Awaitable[None]]

_last_seq = database_sync_to_async(history.last_seq)
_check_resume = database_sync_to_async(history.check_resume)
_events_after = database_sync_to_async(history.events_after)


class ReplayLimited(history.ResumeRefused):
    """The resume would replay more events than the user's tier may this minute
    (CAP_RESUME_EVENTS_PER_MINUTE_<TIER>): nothing is replayed, and ``resume_failed`` says why,
    with ``code`` RATE_LIMIT_EXCEEDED and ``retryAfter`` seconds."""

    def __init__(self, refusal: limits.ReplayRefusal, tier: str, *, last_seq: int) -> None:
        super().__init__("rate_limited", last_seq=last_seq, oldest_seq=None)
        self.refusal = refusal
        self.tier = tier

    def as_message(self) -> dict:
        return {
            **super().as_message(),
            "code": Code.RATE_LIMIT_EXCEEDED,
            "message": self.refusal.message(self.tier),
            "retryAfter": self.refusal.retry_after,
        }


class PersonalStream:
    __slots__ = ("emit", "last_seq", "stopped", "tier", "user_id")

    def __init__(self, user_id: int, emit: Emit, tier: str = "basic") -> None:
        self.user_id = user_id
        self.emit = emit
        self.tier = tier
        self.last_seq = 0
        self.stopped = False  # the socket is closing: a replay in progress reads no further

    def stop(self) -> None:
        self.stopped = True

    async def baseline(self) -> int:
        """Start after everything already logged (call once the socket is in the user's group)."""
        self.last_seq = await _last_seq(self.user_id)
        return self.last_seq

    def start_at(self, last_seq: int) -> None:
        """Start after ``last_seq``, read by the caller (once the socket is in the user's group)."""
        self.last_seq = last_seq

    async def resume(self, since: int) -> int:
        """Replay the log after ``since``; raises history.ResumeRefused (whose ``lastSeq`` is where
        this connection's live stream continues from). Returns events replayed."""
        try:
            current = await _check_resume(self.user_id, since)
        except history.ResumeRefused as refused:
            refused.last_seq = self.last_seq
            raise
        await self._charge(current - since)
        self.last_seq = since
        return await self._fill(upto=None)

    async def _charge(self, events: int) -> None:
        """Spend the replay budget (seqs are gap-free: ``current - since`` events will be sent)."""
        try:
            refusal = await limits.replay_spend(self.user_id, self.tier, events)
        except (OSError, RedisError) as exc:  # a resume is how a client stays whole: not refused for this
            logger.warning("replay budget not checked: %s", exc)
            return
        if refusal is not None:
            raise ReplayLimited(refusal, self.tier, last_seq=self.last_seq)

    async def catch_up(self) -> int:
        """Send whatever the log holds after ``last_seq`` (live events may have been lost)."""
        return await self._fill(upto=None)

    async def live(self, seq: int, channel: str, text: str, frame: str | None = None) -> None:
        if seq <= self.last_seq:
            return  # seen already
        if seq > self.last_seq + 1:
            await self._fill(upto=seq - 1)
        await self._emit(seq, channel, text, frame)

    async def _fill(self, *, upto: int | None) -> int:
        sent = 0
        while not self.stopped:
            batch = await _events_after(self.user_id, self.last_seq, upto=upto)
            if not batch:
                return sent
            for event in batch:
                if self.stopped:  # closed meanwhile (too slow, say): what is left is not read
                    return sent
                await self._emit(event.seq, event.channel, event.text, event.frame)
                sent += 1
        return sent

    async def _emit(self, seq: int, channel: str, text: str, frame: str | None) -> None:
        self.last_seq = seq
        await self.emit(seq, channel, text, frame)
