"""Per-account socket limits shared by all server processes: concurrent connections on /ws/orders
(the seed's tiers, and its connection attempts per minute) and on /ws (``CAP_WS_SOCKETS_<TIER>``),
and the events a user's resumes may replay per minute (``CAP_RESUME_EVENTS_PER_MINUTE_<TIER>``).

Each open connection holds a *lease* (a member of a Redis sorted set scored by its expiry) that
its process renews and releases on disconnect; a process that dies stops renewing and its slots
free themselves within the lease time. Connection attempts are counted in a sliding one-minute
window; replayed events in a fixed one-minute window. Without Redis (the embedded single-process
default) the same rules run in memory.

Nothing here runs per connection. A process's leases are kept in one registry per event loop
(``Leases``): one task renews all of them every third of a lease, one Redis command per
``LEASE_CHUNK`` users (``core.leases``, as broadcast.presence renews its leases), and every take,
release and renewal goes through one writer that sends whatever was asked for while its previous
pipeline was under way in the next one — a connect storm costs a pipeline per round trip, not a
round trip per socket, and a release is never overtaken by a renewal that would bring its lease
back.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Literal, cast

from django.conf import settings
from redis import asyncio as aioredis

from accounts.caps import cap_for
from core.batching import Batcher, retrieved
from core.leases import RENEW, log_refused, renew_command
from core.perloop import PerLoop
from core.redis_clients import redis_client
from wire import Close

logger = logging.getLogger(__name__)

WINDOW = 60.0
# A refused connection looks again for this long before it is refused: a client that closed a
# socket and opened another at once must not meet the lease its old socket is still releasing.
GRACE_SECONDS = 0.3
GRACE_STEP = 0.1

Kind = Literal["orders", "ws"]
ORDERS: Kind = "orders"
WS: Kind = "ws"
KINDS: tuple[Kind, ...] = (ORDERS, WS)
LEASE_CHUNK = 500  # operations (a take, a release, a user's renewal) in one pipeline

# KEYS: conns zset, attempts zset. ARGV: now, lease, max_conns (-1: unlimited), max_attempts
# (-1: unlimited), member, count the attempt (1) or not (0: a look again within the grace).
ACQUIRE = """
local now, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
local max_conns, max_attempts, member = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
if max_attempts >= 0 and ARGV[6] == '1' then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 60)
  if redis.call('ZCARD', KEYS[2]) >= max_attempts then return 2 end
  redis.call('ZADD', KEYS[2], now, member)
  redis.call('EXPIRE', KEYS[2], 61)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if max_conns >= 0 and redis.call('ZCARD', KEYS[1]) >= max_conns then return 1 end
redis.call('ZADD', KEYS[1], now + lease, member)
redis.call('EXPIRE', KEYS[1], math.ceil(lease) + 1)
return 0
"""

# KEYS: this minute's counter. ARGV: events wanted, budget. Returns -1 (spent) or what was used.
SPEND = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used + tonumber(ARGV[1]) > tonumber(ARGV[2]) then return used end
redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], 61)
return -1
"""


@dataclass(frozen=True)
class Refusal:
    code: int
    reason: str


# settings.AXISOR_ORDERS mixes value types, so mypy reads its values as object: these name them.


def _limits(kind: Kind, tier: str) -> tuple[int | None, int | None]:
    """(max concurrent connections, connection attempts per minute); None: unlimited."""
    if kind == ORDERS:
        limits = cast(dict[str, tuple[int, int | None]], settings.AXISOR_ORDERS["TIER_LIMITS"])
        return limits.get(tier, limits["basic"])
    return cap_for(tier, "WS_SOCKETS") or None, None


def capped(kind: Kind, tier: str) -> bool:
    """Whether connections of this kind and tier take a lease at all."""
    return _limits(kind, tier) != (None, None)


def _lease_seconds(kind: Kind) -> float:
    if kind == ORDERS:
        return cast(float, settings.AXISOR_ORDERS["LEASE_SECONDS"])
    return settings.AXISOR_WS["LEASE_SECONDS"]


def _refusal(kind: Kind, result: int, tier: str) -> Refusal | None:
    max_conns, max_attempts = _limits(kind, tier)
    if result == 1 and kind == ORDERS:
        return Refusal(Close.TOO_MANY_CONNECTIONS, f"{tier} accounts may hold {max_conns} order-update connection(s)")
    if result == 1:
        return Refusal(
            Close.TOO_MANY_CONNECTIONS, f"{tier} accounts may hold {max_conns} /ws socket(s) at once; close one first"
        )
    if result == 2:
        return Refusal(Close.TOO_MANY_ATTEMPTS, f"{tier} accounts may connect {max_attempts} times per minute")
    return None


@dataclass(frozen=True)
class ReplayRefusal:
    """A resume that would replay more than the user's budget for this minute has left."""

    budget: int
    used: int
    wanted: int
    retry_after: int  # seconds until the window starts again

    def message(self, tier: str) -> str:
        return (
            f"{tier} accounts may replay {self.budget} events per minute; this resume needs {self.wanted}, "
            f"{max(0, self.budget - self.used)} left: retry in {self.retry_after} s or resume from a later seq"
        )


def _minute() -> tuple[int, int]:
    """This fixed window's number, and the whole seconds until the next one."""
    now = time.time()
    return int(now // WINDOW), max(1, math.ceil(WINDOW - now % WINDOW))


# What the writer sends: ("take", kind, user_id, tier, member, count the attempt) → the ACQUIRE
# script's answer; ("drop", kind, user_id, member); ("renew", [(kind, user_id, members, expires)]).
Op = tuple[Any, ...]


class RedisLimiter:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def _client(self) -> aioredis.Redis:
        return redis_client()

    def _keys(self, kind: Kind, user_id: int) -> list[str]:
        return [f"{self.prefix}:{kind}:conns:{user_id}", f"{self.prefix}:{kind}:attempts:{user_id}"]

    async def _eval(self, script: str, keys: list[str], *args: str | int | float) -> Any:
        # redis-py types ``eval`` for its sync and asyncio clients at once (``Awaitable[str] | str``),
        # and its arguments as str though it encodes numbers as Redis expects.
        return await self._client().eval(script, len(keys), *keys, *args)  # type: ignore[misc, arg-type]

    async def run(self, ops: list[Op]) -> list[int | None]:
        """Every op in order, in pipelines of at most LEASE_CHUNK ops or users (packing and parsing
        20,000 commands at once would hold the event loop, and every socket's next event, for a
        tenth of a second). Returns each take's answer (None for the others)."""
        results: list[int | None] = [None] * len(ops)
        now = time.time()
        async with self._client().pipeline(transaction=False) as pipe:
            # per command sent: the take it answers (its index), a renewal's key count ("renewal", n), or None
            owners: list[int | tuple[str, int] | None] = []
            units = 0

            async def flush() -> None:
                nonlocal units
                if owners:
                    for owner, reply in zip(owners, await pipe.execute(), strict=True):
                        if isinstance(owner, int):
                            results[owner] = int(reply)
                        elif owner is not None:
                            log_refused(reply, owner[1], "connection leases")
                    owners.clear()
                units = 0

            for i, op in enumerate(ops):
                if op[0] == "renew":  # at most LEASE_CHUNK users (Leases.renew): a command per kind (core.leases)
                    by_kind: dict[tuple[float, Kind], list[tuple[str, Any]]] = {}
                    for kind, user_id, members, expires in op[1]:
                        by_kind.setdefault((expires, kind), []).append((self._keys(kind, user_id)[0], members))
                    for (expires, kind), leases in by_kind.items():
                        renewal = renew_command(expires, math.ceil(_lease_seconds(kind)) + 1, leases)
                        pipe.eval(RENEW, *renewal)  # type: ignore[arg-type]  # numbers, as above
                        owners.append(("renewal", len(leases)))
                    units += len(op[1])
                    if units >= LEASE_CHUNK:
                        await flush()
                    continue
                if op[0] == "take":
                    _, kind, user_id, tier, member, count = op
                    max_conns, max_attempts = _limits(kind, tier)
                    keys = self._keys(kind, user_id)
                    args = (now, _lease_seconds(kind), -1 if max_conns is None else max_conns,
                            -1 if max_attempts is None else max_attempts, member, int(count))  # fmt: skip
                    pipe.eval(ACQUIRE, len(keys), *keys, *args)  # type: ignore[arg-type]  # numbers, as above
                    owners.append(i)
                else:
                    _, kind, user_id, member = op
                    pipe.zrem(self._keys(kind, user_id)[0], member)
                    owners.append(None)
                units += 1
                if units >= LEASE_CHUNK:
                    await flush()
            await flush()
        return results

    async def _spend(self, user_id: int, window: int, events: int, budget: int) -> int:
        key = f"{self.prefix}:replay:{user_id}:{window}"
        return int(await self._eval(SPEND, [key], events, budget))


class MemoryLimiter:
    """The same rules for a single process without Redis."""

    def __init__(self) -> None:
        self.conns: dict[tuple[Kind, int], dict[str, float]] = {}
        self.attempts: dict[tuple[Kind, int], list[float]] = {}
        self.replayed: dict[int, tuple[int, int]] = {}  # user → (window, events)

    def _acquire(self, kind: Kind, user_id: int, tier: str, member: str, count: bool) -> int:
        max_conns, max_attempts = _limits(kind, tier)
        now = time.time()
        if max_attempts is not None and count:
            attempts = [t for t in self.attempts.get((kind, user_id), []) if t > now - WINDOW]
            self.attempts[kind, user_id] = attempts
            if len(attempts) >= max_attempts:
                return 2
            attempts.append(now)
        conns = {m: exp for m, exp in self.conns.get((kind, user_id), {}).items() if exp > now}
        self.conns[kind, user_id] = conns
        if max_conns is not None and len(conns) >= max_conns:
            return 1
        conns[member] = now + _lease_seconds(kind)
        return 0

    async def run(self, ops: list[Op]) -> list[int | None]:
        results: list[int | None] = []
        for op in ops:
            if op[0] == "take":
                results.append(self._acquire(*op[1:]))
                continue
            if op[0] == "renew":
                for kind, user_id, members, expires in op[1]:
                    self.conns.setdefault((kind, user_id), {}).update(dict.fromkeys(members, expires))
            else:
                _, kind, user_id, member = op
                self.conns.get((kind, user_id), {}).pop(member, None)
            results.append(None)
        return results

    async def _spend(self, user_id: int, window: int, events: int, budget: int) -> int:
        at, used = self.replayed.get(user_id, (window, 0))
        used = used if at == window else 0
        if used + events > budget:
            return used
        self.replayed[user_id] = (window, used + events)
        return -1


class ServerStopping(ConnectionError):
    """This process is stopping and has given its leases back (``release_all``): a socket that
    reaches it now is told to reconnect, to another process (an OSError: the consumers' 4013)."""


class Leases:
    """This event loop's connection leases (one loop per server process), the task that renews
    them all, and the writer every take, release and renewal goes through in order."""

    def __init__(self) -> None:
        self.held: dict[tuple[Kind, int], set[str]] = {}
        # every take, release and renewal, in order, a pipeline per batch (core.batching)
        self.writes: Batcher[Op, int | None] = Batcher(lambda ops: limiter().run(ops))
        self.renewer: asyncio.Task | None = None
        self.closed = False  # release_all ran: the process is stopping and takes nothing more

    def drop_after(self, kind: Kind, user_id: int, member: str) -> None:
        """Queue the drop of a lease whose take is on its way, without waiting: it goes after it."""
        asyncio.ensure_future(self.call(("drop", kind, user_id, member))).add_done_callback(retrieved)

    async def call(self, op: Op) -> int | None:
        """Send ``op`` with everything else asked for before the writer's next pipeline; its answer.
        Raises OSError/RedisError when Redis cannot be reached (ConnectionError when the loop is
        closing)."""
        return await self.writes.call(op)

    def hold(self, kind: Kind, user_id: int, member: str) -> None:
        self.held.setdefault((kind, user_id), set()).add(member)
        if self.renewer is None or self.renewer.done():
            self.renewer = asyncio.ensure_future(self._renew_while_held())

    async def drop(self, kind: Kind, user_id: int, member: str) -> None:
        """Stop renewing the lease and remove it (after any renewal already on its way)."""
        members = self.held.get((kind, user_id))
        if members is not None:
            members.discard(member)
            if not members:
                del self.held[kind, user_id]
        await self.call(("drop", kind, user_id, member))

    async def _renew_while_held(self) -> None:
        while self.held:
            await asyncio.sleep(min(_lease_seconds(kind) for kind in KINDS) / 3)
            try:
                await self.renew()
            except Exception as exc:  # noqa: BLE001 - Redis away for a moment: the next turn writes them again
                logger.warning("connection lease renewal failed for %d user(s): %r", len(self.held), exc)

    async def renew(self) -> None:
        """Push every held lease's expiry a lease ahead, LEASE_CHUNK users an op."""
        now = time.time()
        held = list(self.held.items())
        # A chunk at a time, each in order with the takes and releases asked for meanwhile: a
        # connect's take waits behind one chunk's round trip, not the whole renewal. A chunk holds
        # what is still held when it is asked for (a release since is already queued).
        for start in range(0, len(held), LEASE_CHUNK):
            leases = [
                (kind, uid, kept, now + _lease_seconds(kind))
                for (kind, uid), members in held[start : start + LEASE_CHUNK]
                if (kept := tuple(m for m in members if m in self.held.get((kind, uid), ())))
            ]
            if leases:
                await self.call(("renew", leases))


leases: PerLoop[Leases] = PerLoop(lambda loop: Leases())  # leases(): this process's registry


async def acquire(kind: Kind, user_id: int, tier: str, member: str) -> Refusal | None:
    """Take a connection slot for ``member`` and keep it renewed until ``release``; a Refusal if
    the tier has none free (after looking again for GRACE_SECONDS, not counted as further attempts)
    or too many attempts this minute. Raises OSError/RedisError when Redis cannot be reached, and
    ServerStopping once the process has given its leases back."""
    registry = leases()
    if registry.closed:
        raise ServerStopping("the server is stopping")
    try:
        result = await registry.call(("take", kind, user_id, tier, member, True))
        waited = 0.0
        while result == 1 and waited < GRACE_SECONDS:
            await asyncio.sleep(GRACE_STEP)  # another process's release: nothing here to await
            waited += GRACE_STEP
            if registry.closed:
                raise ServerStopping("the server is stopping")
            result = await registry.call(("take", kind, user_id, tier, member, False))
    except asyncio.CancelledError:
        # The socket went away (or the server is stopping) while its take was on its way: the
        # take still goes out, so its drop goes after it, in order, instead of the lease lapsing
        # unrenewed (a user at the cap would meet it for a lease's time).
        registry.drop_after(kind, user_id, member)
        raise
    if result == 0:
        if registry.closed:  # release_all ran while the take was on its way: dropped after it
            registry.drop_after(kind, user_id, member)
            raise ServerStopping("the server is stopping")
        registry.hold(kind, user_id, member)
    return _refusal(kind, cast(int, result), tier)


async def release_all() -> None:
    """The server is stopping: every lease this process holds goes back at once (its sockets'
    consumers are cancelled without their ``disconnect``), through the writer, after whatever is on
    its way; a take still on its way, and every take after this, is refused (ServerStopping), and
    what it took is dropped after it. Raises OSError/RedisError when Redis cannot be reached (the
    leases lapse by themselves)."""
    registry = leases()
    registry.closed = True
    held, registry.held = registry.held, {}
    drops = [("drop", kind, user_id, member) for (kind, user_id), members in held.items() for member in members]
    if drops:
        logger.info("stopping: releasing %d connection lease(s)", len(drops))
        await asyncio.gather(*(registry.call(op) for op in drops))
    # The drops of takes answered meanwhile go out too, before the process stops its event loop:
    # a take's caller wakes as its answer is set and queues its drop (a new writer, if this one
    # has finished) before this wakes; the step below leaves one turn more for it.
    await asyncio.sleep(0)
    await registry.writes.idle()


async def release(kind: Kind, user_id: int, member: str) -> None:
    """Give the slot back. Raises OSError/RedisError when Redis cannot be reached (the lease, no
    longer renewed, lapses by itself)."""
    await leases().drop(kind, user_id, member)


def lease_seconds(kind: Kind) -> float:
    return _lease_seconds(kind)


async def replay_spend(user_id: int, tier: str, events: int) -> ReplayRefusal | None:
    """Charge ``events`` replayed events to the user's budget for this minute, all or nothing.
    Raises OSError/RedisError when Redis cannot be reached."""
    budget = cap_for(tier, "RESUME_EVENTS_PER_MINUTE")
    if budget <= 0 or events <= 0:
        return None
    window, retry_after = _minute()
    used = await limiter()._spend(user_id, window, events, budget)
    if used < 0:
        return None
    return ReplayRefusal(budget=budget, used=used, wanted=events, retry_after=retry_after)


_limiter: RedisLimiter | MemoryLimiter | None = None


def limiter() -> RedisLimiter | MemoryLimiter:
    global _limiter
    if _limiter is None:
        prefix = settings.CHANNEL_LAYER_PREFIX
        assert prefix is not None  # settings.py gives it a default
        _limiter = RedisLimiter(prefix) if settings.REDIS_ENABLED else MemoryLimiter()
    return _limiter
