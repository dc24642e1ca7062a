"""The background worker: queued jobs (Django's task framework, database backend) and periodic
jobs, the single ones under a lease, all on threads of the worker's own.

It runs as ``manage.py worker`` processes, or inside a server process (``AXISOR_BACKGROUND=1``, the
run command). Either way an asyncio loop only schedules: every job runs on the worker's thread
pool, never on the loop and never on the one thread Channels' ``database_sync_to_async`` shares,
so a job that waits on the network cannot delay a handshake, a resume or a feed tick. Jobs that
wait on someone else's server (the ``outbound`` queue: webhooks) hold at most
``OUTBOUND_THREADS`` of a worker's job threads, so the other jobs always have threads.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import OperationalError, close_old_connections, connection
from django_tasks_db.management.commands.db_worker import Worker as DbWorker
from django_tasks_db.models import DBTaskResult
from django_tasks_db.utils import exclusive_transaction, is_locked_database_exception
from redis.exceptions import LockError, RedisError

from core.errors import OUTAGES
from core.redis_clients import guarded_sync_client

if TYPE_CHECKING:
    from redis.lock import Lock

logger = logging.getLogger(__name__)


def conf(name: str):
    return settings.AXISOR_WORKER[name]


# ---- queued jobs ------------------------------------------------------------------------------

# The queue of jobs that wait on a server a user chose (webhook attempts): however many of them are
# ready, they hold at most OUTBOUND_THREADS of a worker's job threads (see Worker).
OUTBOUND_QUEUE = "outbound"
# The ready outbound jobs a free outbound slot chooses among: the oldest this many, in the order the
# app that owns them ranks them (rank_outbound_by). Bounded, so a backlog of thousands costs each
# claim the same; a job left out of the window waits for the ones ahead, which end quickly when
# their owners are at their cap (they wait without an attempt).
OUTBOUND_WINDOW = 100
_OUTBOUND_PICK_LOCK = int.from_bytes(
    hashlib.blake2b(b"axisor:outbound pick", digest_size=8).digest(), "big", signed=True
)
_outbound_ranking: Callable[[list[DBTaskResult]], list[DBTaskResult]] | None = None


def rank_outbound_by(ranking: Callable[[list[DBTaskResult]], list[DBTaskResult]] | None) -> None:
    """Who goes first when an outbound slot is free: ``ranking`` orders ready outbound jobs
    (oldest first as given) the way their owner sees fit. The notifications app puts the webhook
    attempts of the users served least recently first, so the queue's order (first come, first
    served) does not let one user's backlog hold everyone else's attempts."""
    global _outbound_ranking
    _outbound_ranking = ranking


def _fairest(ready, first: DBTaskResult) -> DBTaskResult:
    """The outbound job to run instead of ``first`` (the oldest ready one, locked): the best ranked
    of the window that no other thread holds; ``first`` itself when there is no ranking."""
    if _outbound_ranking is None:
        return first
    if connection.vendor == "postgresql":
        # One outbound pick at a time across workers, until this transaction commits the job as
        # running: the next pick's ranking sees it (SQLite's exclusive transaction does the same).
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_OUTBOUND_PICK_LOCK])
    window = list(ready.filter(queue_name=OUTBOUND_QUEUE).only("id", "task_path", "args_kwargs")[:OUTBOUND_WINDOW])
    for job in _outbound_ranking(window):
        if job.pk == first.pk:
            return first
        locked = ready.filter(pk=job.pk).get_locked()
        if locked is not None:
            return locked
    return first


def run_one(runner: DbWorker, outbound: threading.Semaphore | None = None) -> bool:
    """Claim the next ready job and run it on this thread; False when none was ready. With
    ``outbound``, a job of the outbound queue is taken only with one of its slots, held while it
    runs; with none free, the next ready job of another queue is taken instead. A job's own
    failures are recorded on its result row by django-tasks; a job that kills the process stays
    claimed (our jobs keep their own state, see notifications/tasks.py)."""
    slot = outbound is not None and outbound.acquire(blocking=False)
    try:
        try:
            with exclusive_transaction():
                ready = DBTaskResult.objects.ready().filter(backend_name="default")
                if outbound is not None and not slot:
                    ready = ready.exclude(queue_name=OUTBOUND_QUEUE)
                result = ready.get_locked()
                if result is None:
                    return False
                if result.queue_name == OUTBOUND_QUEUE:
                    result = _fairest(ready, result)
                result.claim(runner.worker_id)
        except OperationalError as exc:
            if is_locked_database_exception(exc):  # SQLite busy: try again on the next turn
                return False
            raise
        if slot and outbound is not None and result.queue_name != OUTBOUND_QUEUE:
            outbound.release()  # not an outbound job: the slot goes back at once
            slot = False
        runner.run_task(result)
        return True
    finally:
        if slot and outbound is not None:
            outbound.release()


def job_runner(worker_id: str) -> DbWorker:
    """django-tasks' own runner of one claimed job (its signals, result and error recording)."""
    return DbWorker(
        queue_names=["*"],
        interval=0,
        batch=False,
        backend_name="default",
        startup_delay=False,
        max_tasks=None,
        worker_id=worker_id,
        excluded_queue_names=[],
    )


def run_ready(limit: int = 10_000) -> int:
    """Run ready jobs on this thread until none is ready (or ``limit``); returns how many ran.
    For ``manage.py worker --burst`` and for tests."""
    runner = job_runner(f"burst-{os.getpid()}")
    ran = 0
    while ran < limit and run_one(runner):
        ran += 1
    return ran


# ---- leases and periodic jobs -----------------------------------------------------------------


class Lease:
    """One holder at a time across processes: redis-py's ``Lock`` (taken with SET NX PX, renewed
    by a script that checks the holder's token, so taking and renewing are each atomic). A holder
    that dies is succeeded within ``seconds``. Without Redis there is one process: always held."""

    def __init__(self, name: str, seconds: float) -> None:
        self.name = name
        self.seconds = seconds
        self.lock: Lock | None = None
        self.held = False

    def hold(self) -> bool:
        """Take the lease or renew it; False when another process holds it (or Redis is away:
        then nobody can prove they hold it, so nobody acts)."""
        if not settings.REDIS_ENABLED:
            return True
        if self.lock is None:
            key = f"{settings.CHANNEL_LAYER_PREFIX}:lease:{self.name}"
            self.lock = guarded_sync_client().lock(key, timeout=self.seconds, thread_local=False)
        try:
            # Renewed while its token is ours, also after a call that failed (Redis did not answer
            # a turn ago: the key may still be ours, and only our renewal can prove it; taking it
            # anew would find our own key and wait out the lease).
            if self.lock.local.token is not None:
                try:
                    self.lock.reacquire()
                    self.held = True
                    return True
                except LockError:
                    self.lock.local.token = None
                    if self.held:
                        logger.warning("lease %s lost (this process stalled past its lease)", self.name)
                    self.held = False
            # Our token is kept before the SET goes out: a SET that landed but whose reply timed
            # out leaves the key ours, and the next turn's renewal (above) proves it; taken with
            # a token of redis-py's, the next turn found a key it could not tell from another
            # process's and waited the whole lease out.
            self.lock.local.token = uuid.uuid4().hex.encode()
            self.held = bool(self.lock.acquire(blocking=False, token=self.lock.local.token))
            if not self.held:
                self.lock.local.token = None
            else:
                logger.info("lease %s taken by process %s", self.name, os.getpid())
        except RedisError as exc:
            self.held = False
            logger.warning("lease %s: Redis unreachable (%r)", self.name, exc)
        return self.held

    def release(self) -> None:
        if self.held and self.lock is not None:
            try:
                self.lock.release()
            except (LockError, RedisError):
                pass  # expired or Redis away: it lapses on its own
        self.held = False


@contextmanager
def exclusive(name: str) -> Iterator[bool]:
    """The step itself, exclusive across processes: a PostgreSQL advisory lock for its duration
    (yields False, and the caller skips the step, while another process holds it). The lease picks
    who acts; this makes sure that a holder that stalled past its lease and its successor never
    step at once. The lock goes with the connection, so a process that dies frees it. SQLite: one
    process, nothing to exclude."""
    if connection.vendor != "postgresql":
        yield True
        return
    key = int.from_bytes(hashlib.blake2b(f"axisor:{name}".encode(), digest_size=8).digest(), "big", signed=True)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
        (alone,) = cursor.fetchone()
    try:
        yield alone
    finally:
        if alone:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [key])


@dataclass(frozen=True)
class Periodic:
    """A job run every ``every`` seconds; ``single`` ones by one process at a time (a lease)."""

    name: str
    step: Callable[[], object]
    every: float
    single: bool = True


class Worker:
    def __init__(self, *, periodic: list[Periodic], threads: int | None = None) -> None:
        self.periodic = periodic
        self.threads = conf("THREADS") if threads is None else threads
        # Half the job threads (at least one) unless set: two users whose webhook endpoints hang
        # must not take every thread for the attempt's timeout (docs/topics/notifications.md).
        # Never all of them while there are two or more (the second review: unclamped, a setting
        # of THREADS or more gave webhooks every thread again).
        self.outbound_threads = min(conf("OUTBOUND_THREADS") or max(1, self.threads // 2), max(1, self.threads - 1))
        self.outbound = threading.BoundedSemaphore(self.outbound_threads)
        self.worker_id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.executor = ThreadPoolExecutor(
            max_workers=max(1, self.threads + len(periodic)), thread_name_prefix="axisor-worker"
        )

    async def run(self, stopping: asyncio.Event) -> None:
        logger.info(
            "worker %s: %d job thread(s), at most %d on outbound jobs, periodic: %s",
            self.worker_id,
            self.threads,
            self.outbound_threads,
            ", ".join(p.name for p in self.periodic) or "none",
        )
        try:
            await asyncio.gather(
                *(self._jobs(n, stopping) for n in range(self.threads)),
                *(self._every(job, stopping) for job in self.periodic),
            )
        finally:
            self.executor.shutdown(wait=False)
            logger.info("worker %s stopped", self.worker_id)

    async def _in_thread(self, fn: Callable[[], object]) -> object:
        # Not database_sync_to_async: that is Channels' one shared thread. Our own pool instead.
        return await sync_to_async(fn, thread_sensitive=False, executor=self.executor)()

    async def _jobs(self, n: int, stopping: asyncio.Event) -> None:
        runner = job_runner(f"{self.worker_id}-{n}")

        def turn() -> bool:
            close_old_connections()
            try:
                return run_one(runner, self.outbound)
            finally:
                close_old_connections()

        while not stopping.is_set():
            try:
                ran = await self._in_thread(turn)
            except OUTAGES as exc:
                logger.warning("job thread %d: could not take a job, database unavailable (%r)", n, exc)
                ran = False
            except Exception:  # anything else is a bug: say where, and go on
                logger.exception("job thread %d: could not take a job", n)
                ran = False
            if not ran:
                await _pause(stopping, conf("POLL_SECONDS"))

    async def _every(self, job: Periodic, stopping: asyncio.Event) -> None:
        lease = Lease(job.name, max(conf("LEASE_SECONDS"), 2 * job.every)) if job.single else None

        def turn() -> None:
            if lease is not None and not lease.hold():
                return
            close_old_connections()
            try:
                if not job.single:
                    job.step()
                else:
                    with exclusive(job.name) as alone:
                        if alone:
                            job.step()
            except OUTAGES as exc:
                logger.warning("%s step skipped: database or Redis unavailable (%r)", job.name, exc)
            except Exception:  # a bad step must not stop the job
                logger.exception("%s step failed", job.name)
            finally:
                close_old_connections()

        logger.info("%s started, every %.2fs", job.name, job.every)
        while not stopping.is_set():
            try:
                await self._in_thread(turn)
            except OUTAGES as exc:  # the lease's Redis call, or closing connections
                logger.warning("%s: turn skipped (%r)", job.name, exc)
            await _pause(stopping, job.every)
        if lease is not None:
            await self._in_thread(lease.release)  # a successor need not wait out the lease
        logger.info("%s stopped", job.name)


async def _pause(stopping: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stopping.wait(), timeout=seconds)
    except TimeoutError:
        pass
