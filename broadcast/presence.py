"""Who is online, on which endpoint and on which server process — across all processes.

Each server process has an id (``host:pid``) and a lease in Redis: ``presence:procs`` (a sorted set
of process ids scored by lease expiry) and ``presence:proc:{id}`` (its latest stats, expiring with
the lease). Each authenticated connection holds a lease in its user's sorted set
``presence:{user_id}`` (members ``endpoint|process|socket``, scored by expiry). One task per
process renews all of them, one Redis command per ``LEASE_CHUNK`` users (``core.leases``), and
publishes the process's stats to ``admin:staff`` once per ``STATS_SECONDS``; nothing renews per
connection. A process that dies stops renewing, so its entry and every one of its connections are
gone within ``LEASE_SECONDS``; one that stops cleanly leaves at once (``Registry.shutdown``).

Without Redis (the embedded single-process default) the same bookkeeping lives in memory.
The notification worker asks ``online(user_id)`` to tell an in-app delivery ``delivered`` (a live
``/ws`` socket) from ``sent``; the panel reads ``processes()`` and ``connections_by_user()``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

import redis
from channels.layers import get_channel_layer
from django.conf import settings
from redis.exceptions import RedisError

from broadcast import stafffeed
from broadcast.messages import layer_event
from broadcast.rooms import admin_room
from core.batching import Batcher
from core.leases import RENEW, log_refused, renew_command
from core.perloop import PerLoop
from core.redis_clients import guarded_sync_client, redis_client
from wire import dumps, envelope, iso

logger = logging.getLogger(__name__)

LEASE_SECONDS: float = settings.AXISOR_PRESENCE["LEASE_SECONDS"]
STATS_SECONDS: float = settings.AXISOR_PRESENCE["STATS_SECONDS"]
LEASE_CHUNK = 500  # connections in a renewal's op to the writer; users in one pipeline
ENDPOINTS = ("/ws", "/ws/orders")


def process_id() -> str:
    """This server process, as shown on the dashboard (asked each time: a fork changes the pid)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _prefix() -> str:
    return f"{settings.CHANNEL_LAYER_PREFIX}:presence"


def _user_key(user_id: int) -> str:
    return f"{_prefix()}:{user_id}"


def _procs_key() -> str:
    return f"{_prefix()}:procs"


def _proc_key(pid: str) -> str:
    return f"{_prefix()}:proc:{pid}"


def _endpoint_of(member: str) -> str:
    return member.split("|", 1)[0]


def _online_key() -> str:
    """Every user with a lease, scored by its latest expiry (for value streams sent only to users
    who can see them: position_status_update)."""
    return f"{_prefix()}:users"


# This process's room memberships by group, users' own groups left out, for the stats: the
# gateway's hub owns them and sets this when it is imported (the broadcast layer never imports
# the gateway).
local_shared_rooms: Callable[[], dict[str, int]] = dict

# In-memory stand-ins for the Redis keys (no Redis: one process only).
_memory: dict[int, dict[str, float]] = {}
_memory_procs: dict[str, tuple[float, dict]] = {}


class Registry:
    """This process's connections and the task that holds their leases and reports stats."""

    def __init__(self) -> None:
        self.pid = process_id()
        self.started_at = time.time()
        self.conns: dict[str, tuple[int, str]] = {}  # member → (user_id, endpoint)
        self.by_endpoint: Counter[str] = Counter({e: 0 for e in ENDPOINTS})  # kept with conns: stats() reads no socket
        self.task: asyncio.Task | None = None
        self.stopping = asyncio.Event()
        self.left = False  # shutdown() took this process and its connections out of the registry
        self.last_renew = 0.0
        # Every lease write, removal and renewal goes through this one writer, in order: a removal
        # is never overtaken by a join's or a renewal's write of the same lease already on its way.
        self.writes: Batcher[tuple, bool] = Batcher(self._write_logged)

    def ensure_running(self) -> None:
        if (self.task is None or self.task.done()) and not self.stopping.is_set():
            self.task = asyncio.ensure_future(self._run())

    async def join(self, user_id: int, endpoint: str, socket_id: str) -> str:
        """Register an authenticated connection; returns its member name for ``leave`` once its
        lease is written."""
        member = f"{endpoint}|{self.pid}|{socket_id}"
        if self.left:  # the process is stopping and has left: nothing writes it back
            return member
        if member not in self.conns:
            self.by_endpoint[endpoint] += 1
        self.conns[member] = (user_id, endpoint)
        self.ensure_running()
        await self.writes.call(("add", user_id, member))
        return member

    async def leave(self, user_id: int, member: str) -> None:
        """Drop a connection's lease; returns once it is gone (or Redis failed: the lease, no
        longer renewed, expires within LEASE_SECONDS)."""
        if (gone := self.conns.pop(member, None)) is not None:
            self.by_endpoint[gone[1]] -= 1
        await self.writes.call(("remove", user_id, member))

    async def _write_logged(self, ops: list[tuple]) -> list[bool]:
        """``_write``, and for each op whether it was written. A failed write is logged, not raised:
        the renewal loop writes the leases again (the next tick, when a renewal itself failed),
        and a removed lease is no longer renewed anyway."""
        written = False
        try:
            await self._write(ops)
            written = True
        except (OSError, RedisError) as exc:
            logger.warning("presence lease write failed (%d request(s)): Redis unreachable (%r)", len(ops), exc)
        except Exception:  # no join or leave may wait forever
            logger.exception("presence lease write failed (%d request(s))", len(ops))
        return [written] * len(ops)

    async def _write(self, ops: list[tuple]) -> None:
        """What ``ops`` leave in Redis, in their order: each lease as its last op has it (a
        connection joined and gone in the same batch is written as gone), the process's lease
        with the latest renewal's stats."""
        last: dict[str, tuple[str, int]] = {}  # member → ("add" | "remove", user_id)
        process = None
        for op in ops:
            if op[0] == "renew":
                _, conns, renewed_process = op
                process = renewed_process or process
                for user_id, member in conns:
                    last[member] = ("add", user_id)
            else:
                kind, user_id, member = op
                last[member] = (kind, user_id)
        adds = [(uid, m) for m, (kind, uid) in last.items() if kind == "add"]
        if adds or process is not None:
            await _write_leases(adds, time.time() + LEASE_SECONDS, process=process)
        if removes := [(uid, m) for m, (kind, uid) in last.items() if kind == "remove"]:
            await _remove_leases(removes)

    def stats(self) -> dict:
        """Connections by endpoint and socket subscriptions by room kind, in this process."""
        endpoints = self.by_endpoint
        rooms = Counter({"user": endpoints["/ws"], "system": 0, "admin": 0, "market": 0})
        market_rooms = 0
        for group, members in local_shared_rooms().items():  # users' own groups are counted above
            kind = group.split(".", 1)[0]
            rooms[kind] += members
            market_rooms += kind == "market"
        return {
            "process": self.pid,
            "startedAt": _iso(self.started_at),
            "connections": dict(endpoints),
            "rooms": dict(rooms),
            "marketRooms": market_rooms,
            "slowCloses": stafffeed.slow_closes,
        }

    async def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                await self.tick()
            except (OSError, RedisError) as exc:  # Redis away for a moment: the stats go out next tick
                logger.warning("presence stats not published: Redis unreachable (%r)", exc)
            except Exception:
                logger.exception("presence tick failed")
            try:
                await asyncio.wait_for(self.stopping.wait(), STATS_SECONDS)
            except TimeoutError:
                pass

    async def tick(self) -> dict:
        """Renew the process lease (and, every third of a lease, the connections'); publish stats."""
        now = time.time()
        stats = {**self.stats(), "time": _iso(now), "interval": STATS_SECONDS}
        renew = now - self.last_renew >= LEASE_SECONDS / 3
        conns = [(uid, m) for m, (uid, _) in self.conns.items()] if renew else []
        # In order with joins and leaves, a chunk at a time: a join waits behind one chunk's round
        # trip, not behind the whole renewal (at 19,000 sockets, 38 of them). A connection that
        # left while earlier chunks went out is not in its chunk (its removal is already queued).
        written = await self.writes.call(("renew", conns[:LEASE_CHUNK], (self.pid, stats)))
        for start in range(LEASE_CHUNK, len(conns), LEASE_CHUNK):
            chunk = [(uid, m) for uid, m in conns[start : start + LEASE_CHUNK] if m in self.conns]
            written = await self.writes.call(("renew", chunk, None)) and written
        if renew and written:  # else the next tick renews them again (the writer logged why)
            self.last_renew = now
        stats["fanout"] = stafffeed.take_fanout()
        await _publish_stats(stats)
        return stats

    async def shutdown(self) -> None:
        """A clean stop: drop this process and its connections now rather than at lease expiry.
        The loop finishes its tick first: cancelling it inside a channel-layer send could leave
        the layer's connection lock held, and the server's shutdown waiting on it."""
        self.stopping.set()
        self.left = True  # from now on a join is not written: nothing can land after the removal
        if self.task is not None:
            await asyncio.wait([self.task], timeout=STATS_SECONDS + 5)
        if self.writes.writer is not None:  # what is on its way goes first: nothing writes back after
            await asyncio.wait([self.writes.writer], timeout=5)
        logger.info("presence: leaving the registry (%s, %d connection(s))", self.pid, len(self.conns))
        conns, self.conns = self.conns, {}
        self.by_endpoint = Counter({e: 0 for e in ENDPOINTS})
        if not settings.REDIS_ENABLED:
            _memory_procs.pop(self.pid, None)
            for member, (user_id, _) in conns.items():
                _memory.get(user_id, {}).pop(member, None)
            return
        async with redis_client().pipeline(transaction=False) as pipe:
            pipe.zrem(_procs_key(), self.pid)
            pipe.delete(_proc_key(self.pid))
            for member, (user_id, _) in conns.items():
                pipe.zrem(_user_key(user_id), member)
            await pipe.execute()


def _iso(ts: float) -> str:
    return iso(datetime.fromtimestamp(ts, tz=UTC))


async def _write_leases(conns: list[tuple[int, str]], expires: float, process: tuple[str, dict] | None = None) -> None:
    ttl = int(LEASE_SECONDS) + 1
    if not settings.REDIS_ENABLED:
        for user_id, member in conns:
            _memory.setdefault(user_id, {})[member] = expires
        if process is not None:
            _memory_procs[process[0]] = (expires, process[1])
        return
    by_user: dict[int, list[str]] = {}
    for user_id, member in conns:
        by_user.setdefault(user_id, []).append(member)
    users = list(by_user.items())
    client = redis_client()
    # A pipeline per LEASE_CHUNK users, each user's ZADD and EXPIRE done inside Redis (core.leases):
    # the event loop builds one command a chunk, not two a user.
    for start in range(0, max(len(users), 1), LEASE_CHUNK):
        chunk = users[start : start + LEASE_CHUNK]
        async with client.pipeline(transaction=False) as pipe:
            if chunk:
                renewal = renew_command(expires, ttl, ((_user_key(uid), members) for uid, members in chunk))
                pipe.eval(RENEW, *renewal)  # type: ignore[arg-type]  # numbers, which redis-py encodes
                pipe.zadd(_online_key(), {str(user_id): expires for user_id, _ in chunk})
            if process is not None and start == 0:
                pid, stats = process
                pipe.zadd(_procs_key(), {pid: expires})
                pipe.set(_proc_key(pid), json.dumps(stats), ex=ttl)
            replies = await pipe.execute()
        if chunk:
            log_refused(replies[0], len(chunk), "presence")


async def _remove_leases(conns: list[tuple[int, str]]) -> None:
    if not settings.REDIS_ENABLED:
        for user_id, member in conns:
            _memory.get(user_id, {}).pop(member, None)
        return
    by_user: dict[int, list[str]] = {}
    for user_id, member in conns:
        by_user.setdefault(user_id, []).append(member)
    users = list(by_user.items())
    for start in range(0, len(users), LEASE_CHUNK):  # bounded pipelines, as _write_leases
        async with redis_client().pipeline(transaction=False) as pipe:
            for user_id, members in users[start : start + LEASE_CHUNK]:
                pipe.zrem(_user_key(user_id), *members)
            await pipe.execute()


async def _publish_stats(stats: dict) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    group = admin_room("staff").layer_group
    text = dumps(envelope(stafffeed.STATS_TYPE, stafffeed.CHANNEL, stats))
    await layer.group_send(group, {**layer_event(channel=stafffeed.CHANNEL, seq=None, text=text), "group": group})


registry: PerLoop[Registry] = PerLoop(lambda loop: Registry())  # registry(): this process's registry


async def join(user_id: int, endpoint: str, socket_id: str) -> str:
    """Register a socket (``socket_id``: its session id, unique in the process)."""
    return await registry().join(user_id, endpoint, socket_id)


async def leave(user_id: int, member: str) -> None:
    await registry().leave(user_id, member)


# ---- sync reads (notification worker, panel) ----------------------------------------------------


def sync_client():
    """The blocking Redis client presence reads with (the panel's health line uses it too): through
    the server's breaker, so a hung Redis holds a panel page for one timeout, then none."""
    return guarded_sync_client()


def connections_by_user(user_ids: list[int]) -> dict[int, dict[str, int]]:
    """Live connections per endpoint for each user (any process), e.g. ``{42: {"/ws": 2, "/ws/orders": 1}}``."""
    now = time.time()
    if settings.REDIS_ENABLED:
        pipe = sync_client().pipeline(transaction=False)
        for uid in user_ids:
            pipe.zrangebyscore(_user_key(uid), now, "+inf")
        try:
            found_all = pipe.execute()
        except redis.RedisError as exc:
            # Redis unreachable: nobody counts as connected (an in-app delivery says "sent": it is in
            # the inbox and the event log), rather than the caller failing
            logger.warning("presence unavailable: %r", exc)
            found_all = [[] for _ in user_ids]
        members = {uid: [m.decode() for m in found] for uid, found in zip(user_ids, found_all, strict=True)}
    else:
        members = {uid: [m for m, exp in _memory.get(uid, {}).items() if exp > now] for uid in user_ids}
    out = {}
    for uid, found in members.items():
        counts = {e: 0 for e in ENDPOINTS}
        for member in found:
            counts[_endpoint_of(member)] = counts.get(_endpoint_of(member), 0) + 1
        out[uid] = counts
    return out


def online(user_id: int) -> bool:
    """Is any ``/ws`` connection of the user alive now (any process)? In-app events go there."""
    return connections_by_user([user_id])[user_id]["/ws"] > 0


def processes() -> list[dict]:
    """The live server processes with their latest stats, by process id."""
    now = time.time()
    if not settings.REDIS_ENABLED:
        return [stats for pid, (exp, stats) in sorted(_memory_procs.items()) if exp > now]
    conn = sync_client()
    try:
        conn.zremrangebyscore(_procs_key(), "-inf", now)
        pids = sorted(p.decode() for p in conn.zrangebyscore(_procs_key(), now, "+inf"))
        found = conn.mget([_proc_key(pid) for pid in pids]) if pids else []
    except (OSError, RedisError):  # Redis away (its breaker tripped): none known, the page still shows
        return []
    return [json.loads(raw) for raw in found if raw]


async def online_users() -> set[int]:
    """Users with a live connection lease, on any process (a user who just left may linger for
    up to a lease)."""
    now = time.time()
    if settings.REDIS_ENABLED:
        async with redis_client().pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(_online_key(), "-inf", now)
            pipe.zrange(_online_key(), 0, -1)
            _, members = await pipe.execute()
        return {int(m) for m in members}
    return {uid for uid, leases in _memory.items() if any(exp > now for exp in leases.values())}
