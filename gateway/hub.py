"""Process-local room hubs: one channel-layer membership per room per process, fanned out locally.

Stock Channels gives every socket its own layer channel and delivers (and deserialises) every
group message once per socket. Here each server process holds one hub channel; the hub joins a
room's group when the first local socket joins the room and leaves it with the last, receives
each message once, and hands the pre-serialised text to its local connections.

Sockets have no layer channel of their own: a user's personal events and control messages come
through the hub too (the ``user`` group is a room like any other), into the connection's inbox,
handled one at a time in arrival order by a task that exists only while messages wait (the personal
stream needs that order for its seq checks and gap filling).

Each connection keeps a small send queue written by one writer task: room events that carry a
``key`` (market data) are conflated — a newer update replaces the one still waiting — and the
writer holds back while the socket's transport has more than ``SLOW_BYTES`` unsent, so a slow
reader gets the latest price rather than a backlog. A connection whose backlog of events that must
not be dropped stays full for ``SLOW_SECONDS`` is closed with 4009 and recovers by resume.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from channels.exceptions import StopConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from redis.exceptions import RedisError

from broadcast import presence, stafffeed
from broadcast.conflation import interval
from broadcast.messages import ACCESS_CHANGED
from broadcast.rooms import is_market_group, is_user_group
from core.internals import LOST, RECONNECTED, admission, corked, direct_sender, received_now, transport_backlog
from core.metrics import CONFLATED, DELIVERED, HUB_ROOMS, SLOW_CLOSES
from core.perloop import PerLoop
from wire import Close, Code, dumps, error

if TYPE_CHECKING:
    from prometheus_client import Counter

    from gateway.stream import PersonalStream

logger = logging.getLogger(__name__)

_conf = settings.AXISOR_WS
SLOW_BYTES = _conf["SLOW_BYTES"]  # unsent bytes in the socket's transport before the writer holds back
SLOW_SECONDS = _conf["SLOW_SECONDS"]  # held back this long with events it may not drop: too slow
MAX_WAITING = _conf["MAX_WAITING"]  # events that must not be dropped, waiting in one connection's send queue
MAX_WAITING_BYTES = _conf["MAX_WAITING_BYTES"]  # and their text's bytes (a replay of large events)
# A burst's batch (its messages share one write a socket) takes messages until it has made
# BATCH_DELIVERIES deliveries: at ~2-3 µs each in Python, the first message's frames wait ~50 ms
# more. A room of thousands of sockets would fill that with one or two messages, a write a frame
# or two: more messages to the batch's rooms, up to BATCH_MESSAGES, while within
# BATCH_DELIVERIES_MOST (the first frames then wait up to ~0.3-0.8 s, in a burst that takes
# seconds to deliver in all). Hub._takes.
BATCH_DELIVERIES = 20_000
BATCH_MESSAGES = 5
BATCH_DELIVERIES_MOST = 100_000


_stamps = itertools.count(1)  # shared by every hub, so a stamp never means two things


UNAVAILABLE = "the server cannot reach its message bus right now; reconnect shortly"
STOPPING = "this server process is stopping; reconnect and resume"


STALE = CONFLATED.labels("stale")
VERSIONS_KEPT = 10_000  # conflated keys' versions remembered before the old ones are let go
VERSION_AHEAD = 5.0  # seconds: a version further ahead of this machine's clock is not kept


def held_at_most() -> float:
    """The longest a value can wait for its slot in a conflater (its key's interval), and a second."""
    return max(interval("md:"), interval("hd:"), interval("pos:")) + 1.0


class LayerUnavailable(Exception):
    """The channel layer (Redis) cannot be reached: the socket cannot be served now (→ 1013)."""


def _retrieved(task: asyncio.Task) -> None:
    """A subscription's failure is its joiners' to report (LayerUnavailable). An unsubscription
    nobody waits for that failed leaves the process subscribed to a group it no longer needs,
    until Redis is reconnected: logged."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None and not isinstance(exc, LayerUnavailable):
        logger.warning("hub: leaving a group failed (%r)", exc)


class Hub:
    def __init__(self) -> None:
        self.layer = get_channel_layer()
        self.channel: str | None = None
        self.members: dict[str, set] = {}
        # The groups of members held but users' own: what the process's stats count each second
        # (one user group a socket: walking them all would cost the stats a pass over every socket).
        self.shared: set[str] = set()
        self.task: asyncio.Task | None = None
        self.ready = asyncio.Lock()
        # A stamp per group held, renewed when the membership starts and on every message: a
        # value read while the stamp stays the same has seen no change announced in that group.
        self.stamps: dict[str, int] = {}
        # The subscription of each group whose first member is still joining: every later member
        # waits for it, so no member counts as joined (and reads a value under a stamp) before the
        # process can hear the group.
        self.subscribing: dict[str, asyncio.Future] = {}
        # The newest version of each conflated key passed on: a key's order across processes
        # (broadcast/conflation.py keeps it within one).
        self.versions: dict[str, tuple[float, float]] = {}  # key → (version, monotonic time kept)
        self.versions_prune_at = VERSIONS_KEPT
        self.stopping = False  # the process is stopping: no socket joins a room any more

    async def _ensure(self) -> None:
        async with self.ready:
            if self.channel is None:
                self.channel = await self.layer.new_channel(prefix="hub.")
                self.task = asyncio.ensure_future(self._run())

    async def join(self, group: str, conn) -> None:
        """Returns once the process is subscribed to ``group``. Raises LayerUnavailable when it
        cannot subscribe (Redis unreachable): so does every member that waited for that
        subscription, and the group is dropped, so the next join subscribes again."""
        if self.stopping:  # a socket authenticating during the drain: told 4013 like the others
            raise LayerUnavailable(STOPPING)
        members = self.members.get(group)
        if members is None:
            members = self.members[group] = set()
            if not is_user_group(group):
                self.shared.add(group)
            # A task of its own: a first member that goes away meanwhile leaves it to finish for the rest.
            task = self.subscribing[group] = asyncio.ensure_future(self._subscribe(group, members))
            task.add_done_callback(_retrieved)
        members.add(conn)  # before waiting: the group cannot empty and unsubscribe meanwhile
        pending = self.subscribing.get(group)
        if pending is None:
            return
        try:
            await asyncio.shield(pending)
        except BaseException:  # not joined (cancelled, or no subscription): no longer a member
            members.discard(conn)
            if group not in self.subscribing:  # else the subscription drops the group if it empties
                asyncio.ensure_future(self._drop_if_empty(group, members)).add_done_callback(_retrieved)
            raise

    async def _subscribe(self, group: str, members: set) -> None:
        try:
            await self._ensure()
            await self.layer.group_add(group, self.channel)
        except Exception as exc:  # Redis unreachable, the layer closing, or a bug: not subscribed
            if not isinstance(exc, (OSError, RedisError)):
                logger.exception("hub: subscribing to %s failed", group)
            if self.members.get(group) is members:
                self._forget(group)
            raise LayerUnavailable(str(exc)) from exc
        finally:
            if self.subscribing.get(group) is asyncio.current_task():
                del self.subscribing[group]
        if self.members.get(group) is members:
            self.stamps[group] = next(_stamps)
            await self._drop_if_empty(group, members)  # every joiner went away meanwhile

    async def leave(self, group: str, conn) -> None:
        members = self.members.get(group)
        if members is not None:
            members.discard(conn)
            await self._drop_if_empty(group, members)

    async def _drop_if_empty(self, group: str, members: set) -> None:
        if not members and self.members.get(group) is members and group not in self.subscribing:
            self._forget(group)
            self.stamps.pop(group, None)
            await self.layer.group_discard(group, self.channel)

    def _forget(self, group: str) -> None:
        del self.members[group]
        self.shared.discard(group)

    async def _run(self) -> None:
        channel = self.channel
        assert channel is not None  # set before the task starts (_ensure)
        next_batch: dict | None = None  # read, not yet handed out: the next batch's first
        while True:
            if next_batch is not None:
                message, next_batch = next_batch, None
            else:
                try:
                    message = await self.layer.receive(channel)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.exception("hub receive failed")
                    await asyncio.sleep(0.1)
                    continue
            following = self._ready(channel)
            if following is None:  # one message: each socket's frame goes out as it is reached
                self._dispatch(message)
                continue
            # A burst: the messages already read from Redis are handed out in one batch, and each
            # socket's frames of the batch go out together (core.internals.corked).
            with corked():
                made, taken, groups = self._dispatch(message), 1, {message.get("group")}
                while following is not None:
                    if not self._takes(following, made, taken, groups):
                        next_batch = following
                        break
                    made += self._dispatch(following)
                    taken += 1
                    groups.add(following.get("group"))
                    following = self._ready(channel)
            if next_batch is not None:
                # The rest of the burst is already here: receive() would not suspend, so without
                # this the loop's other work (connects, pings, timers, personal events) waited
                # for the whole burst, not for one batch.
                await asyncio.sleep(0)

    @staticmethod
    def _takes(following: dict, made: int, taken: int, groups: set) -> bool:
        """Whether a batch that has made ``made`` deliveries of ``taken`` messages to ``groups``
        takes ``following`` too: under BATCH_DELIVERIES, yes (the first message's frames wait
        ~50 ms more at most). Past it, only a message to a room already in the batch (its sockets
        get one write for several frames: a room of thousands of sockets fills BATCH_DELIVERIES
        with one or two messages), while the batch has fewer than BATCH_MESSAGES messages and
        would stay within BATCH_DELIVERIES_MOST, counting this one as large as the average."""
        if made < BATCH_DELIVERIES:
            return True
        return (
            taken < BATCH_MESSAGES
            and following.get("group") in groups
            and made + made // taken <= BATCH_DELIVERIES_MOST
        )

    def _ready(self, channel: str) -> dict | None:
        """The next message already read for the hub, or None. One that cannot be read is logged
        and skipped, as ``receive`` failing is (the rest come through ``receive``)."""
        try:
            return received_now(self.layer, channel)
        except Exception:
            logger.exception("hub receive failed")
            return None

    def _dispatch(self, message: dict) -> int:
        """Hand one layer message to its sockets; returns how many."""
        if message.get("type") == RECONNECTED:
            # The layer was cut off from Redis and is subscribed again: whatever was published
            # meanwhile never comes. Every value read under a stamp is stale, and every
            # connection catches its personal stream up from the event log.
            for held in self.stamps:
                self.stamps[held] = next(_stamps)
            everyone = {conn for members in self.members.values() for conn in members}
            for conn in everyone:
                conn.deliver(message)
            return len(everyone)
        if message.get("type") == LOST:
            self._lost(message["groups"])
            return 0
        key = message.get("key")
        if key is not None and (version := message.get("version")) is not None and self._stale(key, version):
            STALE.inc()
            return 0
        group = message.get("group", "")
        if group in self.stamps:
            self.stamps[group] = next(_stamps)
        members = tuple(self.members.get(group, ()))
        for conn in members:
            conn.deliver(message)
        return len(members)

    def _stale(self, key: str, version: float) -> bool:
        """Whether a value of ``key`` with ``version`` (the database's clock: when its state was
        read or written) is older than one already passed on, by no more than a value can be held
        for its slot: two processes conflate a key apart, and one's held value can reach the layer
        after the other's newer one. Older by more, it cannot be a held value (a clock stepped
        back): it goes on. A version far ahead of this machine's clock goes on but is not kept:
        a clock far ahead must not hold the key."""
        seen = self.versions.get(key)
        if seen is not None and version < seen[0] and seen[0] - version <= held_at_most():
            return True
        if (seen is None or version > seen[0]) and version <= time.time() + VERSION_AHEAD:
            self.versions[key] = (version, time.monotonic())
            if len(self.versions) > self.versions_prune_at:  # a key quiet for a minute holds nothing back
                quiet = time.monotonic() - 60
                self.versions = {k: v for k, v in self.versions.items() if v[1] > quiet}
                self.versions_prune_at = max(VERSIONS_KEPT, 2 * len(self.versions))
        return False

    def _lost(self, groups: list[str]) -> None:
        """The layer server of ``groups`` has been unreachable for CHANNEL_LAYER_GRACE_SECONDS:
        their sockets cannot be served here now. Tell them to reconnect (4013): they resume where
        the layer reaches them (another process, or this one once the server is back). Market rooms
        carry only the latest prices, nothing to resume: they stay, resubscribed when it is back."""
        for group in groups:
            if not is_market_group(group):
                for conn in tuple(self.members.get(group, ())):
                    conn.layer_lost()


hub: PerLoop[Hub] = PerLoop(lambda loop: Hub())  # hub(): this process's hub


async def close_every_socket() -> int:
    """When the process is told to stop: every socket in a room (each joins its user's room once
    authenticated, on both protocols) is told SERVICE_UNAVAILABLE and closed 4013, as when its
    rooms' Redis is lost, so it reconnects (to another process, behind nginx) and resumes. daphne
    would otherwise cut them at the reactor's stop without a close frame: a client saw 1006, as
    after a crash (an outside operator's deployment run). Each socket's own disconnect then gives
    its tier slot and presence back. From then on no socket joins a room (``Hub.join``): one that
    authenticates during the drain is told 4013 the same way (the diff review found it served,
    then cut with 1006). A socket whose consumer daphne cancelled first (its release running) is
    still told: what counts is whether a close frame went out (``close_sent``), not ``closing``.
    Returns how many were told."""
    current = hub()
    current.stopping = True
    sockets = {member for members in current.members.values() for member in members}
    for outcome in await asyncio.gather(
        *(member.tell_to_reconnect(STOPPING) for member in sockets if not member.close_sent),
        return_exceptions=True,
    ):
        if isinstance(outcome, BaseException) and not isinstance(outcome, (OSError, asyncio.CancelledError)):
            logger.warning("stopping: a socket could not be told (%r)", outcome)
    return len(sockets)


def local_shared_members() -> dict[str, int]:
    """Sockets per room group in this event loop's hub, users' own groups left out (for the
    process's stats, which count those by connection)."""
    found = hub.current()
    return {group: len(found.members[group]) for group in found.shared} if found else {}


_delivered: dict[str, Counter] = {}
_uncounted: dict[str, int] = {}  # deliveries not yet added to DELIVERED, by channel


def count_delivered(channel: str) -> None:
    """Count one delivery: added to the Prometheus counter once per channel at the end of this
    turn of the loop (a room pass to 5,000 sockets is one ``inc``, not 5,000 under its mutex)."""
    uncounted = _uncounted
    if not uncounted:
        asyncio.get_running_loop().call_soon(_add_delivered)
    uncounted[channel] = uncounted.get(channel, 0) + 1


def _add_delivered() -> None:
    for channel, count in _uncounted.items():
        child = _delivered.get(channel)
        if child is None:
            child = _delivered[channel] = DELIVERED.labels(channel)
        child.inc(count)
    _uncounted.clear()


class SendQueue:
    """One connection's room events on their way to the socket, in order.

    An event is written at once, synchronously, while nothing waits before it and the socket keeps
    up (a broadcast is one pass over the room's sockets, as ``websockets.broadcast`` does). Else it
    waits here for a writer task that exists only while events wait: room events that carry a
    ``key`` (market data) conflate — a newer update replaces the one still waiting — and the writer
    holds back while the socket has more than ``SLOW_BYTES`` unsent.
    """

    # A socket's own objects have slots: no attribute dict (~300 bytes less a socket), and one
    # object less to read through on the hub's pass over a room.
    __slots__ = ("base_send", "must_bytes", "must_send", "on_slow", "send_now", "send_text", "task", "waiting")
    _ids = itertools.count()

    def __init__(self, send_text, base_send, on_slow) -> None:
        self.send_text = send_text
        self.base_send = base_send
        self.send_now = direct_sender(base_send, SLOW_BYTES)  # False: the socket is behind, the text waits here
        self.on_slow = on_slow
        self.waiting: dict[str | tuple[str, int], tuple[str, str]] = {}
        self.must_send = 0
        self.must_bytes = 0  # characters of the events counted in must_send (a str's len: no encode)
        self.task: asyncio.Task | None = None

    def put(self, text: str, key: str | None, channel: str = "") -> None:
        if self.task is None and self.send_now is not None and self.send_now(text):  # no writer: nothing waits
            if channel:
                count_delivered(channel)
            return
        slot: str | tuple[str, int]
        if key is None:
            if self.must_send >= MAX_WAITING or self.must_bytes + len(text) > MAX_WAITING_BYTES:
                self.on_slow()
                return
            self.must_send += 1
            self.must_bytes += len(text)
            slot = ("event", next(self._ids))
        else:
            slot = key
            if key in self.waiting:
                CONFLATED.labels("connection").inc()
        self.waiting[slot] = (channel, text)  # a conflated key keeps its place and takes the newest text
        if self.task is None:
            self.task = asyncio.ensure_future(self._write())

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def _keeps_up(self) -> bool:
        backlog = transport_backlog(self.base_send)
        return backlog is None or backlog <= SLOW_BYTES

    async def _write(self) -> None:
        try:
            while self.waiting:
                await self._wait_for_socket()
                key = next(iter(self.waiting))
                channel, text = self.waiting.pop(key)
                if isinstance(key, tuple):
                    self.must_send -= 1
                    self.must_bytes -= len(text)
                await self.send_text(text)
                if channel:
                    count_delivered(channel)
        finally:
            self.task = None

    async def _wait_for_socket(self) -> None:
        held = 0.0
        while not self._keeps_up():
            if self.must_send and held >= SLOW_SECONDS:
                self.on_slow()
                raise asyncio.CancelledError
            await asyncio.sleep(0.05)  # the socket drains on its own; conflation keeps only the latest meanwhile
            held += 0.05


class Inbox:
    """Layer messages for one connection that must be handled in order, one at a time, by an
    async handler (personal events: seq checks and gap filling may read the database). The task
    that drains it exists only while messages wait; nothing runs until ``start()``. So does its
    queue: an idle socket holds none (a deque is ~760 bytes, empty)."""

    __slots__ = ("handle", "on_full", "queue", "started", "task")

    def __init__(self, handle: Callable[[dict], Awaitable[None]], on_full: Callable[[], None]) -> None:
        self.handle = handle
        self.on_full = on_full
        self.queue: deque[dict] | None = None
        self.started = False
        self.task: asyncio.Task | None = None

    def put(self, message: dict) -> None:
        queue = self.queue
        if queue is None:
            queue = self.queue = deque()
        elif len(queue) >= MAX_WAITING:
            self.on_full()
            return
        queue.append(message)
        self._kick()

    def start(self) -> None:
        self.started = True
        self._kick()

    def close(self) -> None:
        self.started = False
        self.queue = None
        if self.task is not None:
            self.task.cancel()

    def _kick(self) -> None:
        if self.started and self.task is None and self.queue:
            self.task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        try:
            while self.queue and self.started:
                await self.handle(self.queue.popleft())
        finally:
            self.task = None
            if not self.queue:
                self.queue = None


async def _released(release: Awaitable[None]) -> None:
    """Run a socket's release to its end even if this task is cancelled meanwhile (it goes on in
    its own task); log what it raises."""
    task = asyncio.ensure_future(release)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:  # it goes on: what it raises is logged when it ends
        task.add_done_callback(_log_release_failure)
    except Exception as exc:  # noqa: BLE001 - logged as what it is: the socket is ending either way
        _log_release_failure(exc)


def _log_release_failure(failed: BaseException | asyncio.Future) -> None:
    """Log what a release raised (given it, or its finished task)."""
    exc = failed if isinstance(failed, BaseException) else None if failed.cancelled() else failed.exception()
    if exc is None:
        return
    if isinstance(exc, (OSError, RedisError)):  # Redis away: the leases lapse by themselves
        logger.warning("releasing a socket's holdings: %s", exc)
    else:
        logger.error("releasing a socket's holdings failed", exc_info=exc)


class HubMember:
    """What a socket consumer needs to be fed by the process hub instead of a layer channel of its
    own: rooms joined through the hub, a send queue for what it writes after the handshake, an inbox
    for its user's personal events (kept in order by ``self.stream``) and control messages.

    The consumer sets ``self.closing``, ``self.stream`` (a PersonalStream) and implements
    ``access_changed(message)``.
    """

    channel_layer_alias = None  # no per-socket layer channel: no SUBSCRIBE per connection
    # Keys of conflated values this socket watches: None, as nearly always. Each maps to
    # [newest version delivered since ``watch``, False], or [a snapshot's version, True]: a floor
    # below which values of the key are not delivered (``floor``).
    watching: dict[str, list] | None = None
    # The user's personal events are taken (False: the client unsubscribed its user's room; the
    # socket stays in the group for access control, and the stream fills the gap from the log once
    # it subscribes again).
    personal_open = True

    async def __call__(self, scope, receive, send) -> None:
        """channels' ``AsyncConsumer.__call__`` for a consumer without a layer channel: each client
        message is awaited and dispatched in turn. (channels' ``await_many_dispatch`` keeps a second
        task per socket waiting on ``receive``, and makes a task and an ``asyncio.wait`` for every
        message, to listen to one source.)

        The handshake's headers are read while the socket connects (its Origin, its bearer token)
        and never again: once ``websocket.connect`` is handled they are dropped from the scope
        (emptied in place: daphne's protocol holds the same list), ~1.2 KB of an idle socket.
        Emptying the server's own list is what frees it, against the ASGI spec's advice to change
        only a copy of a scope: nothing reads a socket's headers after its handshake (daphne, uvicorn,
        channels, our consumers), and whatever is added that would must read them while connecting."""
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        message: dict = {}
        try:
            message = first = await receive()
            try:
                await self.dispatch(first)
            finally:  # connected, refused or gone: this socket's connect no longer counts
                admission.settled(send)
            headers = scope.get("headers")
            if first["type"] == "websocket.connect" and isinstance(headers, list):  # a server's own list
                headers.clear()
            while True:
                message = await receive()
                await self.dispatch(message)
        except StopConsumer:
            pass
        except (Exception, asyncio.CancelledError):
            # An error a handler raised ends the application (the server logs it and closes the
            # socket 1011), and so does daphne's cancel of an application that outlived its close
            # timeout: no disconnect() runs then, and what the socket held would stay held, its
            # tier lease above all (the process renews it for as long as it is held: the user locked
            # out of the tier's connections until a restart), its presence and its rooms. Released
            # here, shielded from daphne's repeated cancels, unless disconnect() was what ran (it
            # runs shielded itself); then raised as before.
            if message.get("type") != "websocket.disconnect":
                await _released(self.disconnect(1011))
            raise

    async def websocket_disconnect(self, message: dict) -> None:
        """channels' own, for a consumer without layer groups, with the release shielded: daphne
        cancels an application that takes too long to finish, again each second, and a cancel
        inside ``disconnect()`` would leave half of what the socket holds held."""
        await _released(self.disconnect(message.get("code", 1006)))
        raise StopConsumer

    # Set or provided by the consumer this is mixed into (a Channels AsyncWebsocketConsumer).
    scope: dict
    channel_layer: None
    dispatch: Callable[[dict], Awaitable[None]]
    closing: bool
    stream: PersonalStream | None
    base_send: Callable[[dict], Awaitable[None]]
    send: Callable[..., Awaitable[None]]
    disconnect: Callable[[int], Awaitable[None]]
    access_changed: Callable[[dict], Awaitable[None]]

    def hub_open(self, *, hold: bool = False) -> None:
        """With ``hold``, room messages wait until ``release()``: a socket joins its rooms before
        its first message (``connection``) is written, and nothing may come before that."""
        self.held: list[dict] | None = [] if hold else None
        self.send_queue = SendQueue(self._write_now, self.base_send, self._too_slow)
        self.inbox = Inbox(self._handle_personal, self._too_slow)
        self._stream_lock: asyncio.Lock | None = None
        self.hub_groups: set[str] = set()

    @property
    def stream_lock(self) -> asyncio.Lock:
        """The personal stream's lock (live events, a resume, a catch-up: one at a time), made at its
        first use: an idle socket holds none (~350 bytes)."""
        lock = self._stream_lock
        if lock is None:
            lock = self._stream_lock = asyncio.Lock()
        return lock

    def hub_close(self) -> None:
        if (stream := getattr(self, "stream", None)) is not None:
            stream.stop()
        if getattr(self, "send_queue", None) is not None:
            self.send_queue.close()
            self.inbox.close()

    async def hub_join(self, group: str) -> None:
        if group not in self.hub_groups:
            await hub().join(group, self)
            self.hub_groups.add(group)

    async def hub_leave(self, group: str) -> None:
        if group in self.hub_groups:
            self.hub_groups.discard(group)
            await hub().leave(group, self)

    async def hub_leave_all(self) -> None:
        for group in list(getattr(self, "hub_groups", ())):
            await self.hub_leave(group)

    def write(self, text: str, channel: str = "", key: str | None = None) -> None:
        """Queue text for the client, after everything queued before it (keyed text conflates)."""
        if not self.closing:
            self.send_queue.put(text, key, channel)

    def deliver(self, message: dict) -> None:
        """From the hub: a message for one of this connection's groups."""
        if self.closing:
            return
        if message.get("personal"):
            if self.personal_open:
                self.inbox.put(message)
        elif message.get("type") in (ACCESS_CHANGED, RECONNECTED):
            self.inbox.put(message)
        elif self.wants(message["channel"]):
            if self.watching is not None and self._below_floor(message):
                return
            if self.held is not None:
                self.held.append(message)
            else:  # write(), its closing check made above: one call fewer a delivery
                self.send_queue.put(message["text"], message.get("key"), message["channel"])

    def watch(self, key: str) -> None:
        """Note the newest version of ``key`` delivered to this socket from now on, until
        ``seen_since``: a snapshot read meanwhile is compared with it."""
        self.watching = {**(self.watching or {}), key: [float("-inf"), False]}

    def seen_since(self, key: str) -> float | None:
        """The newest version of ``key`` delivered since ``watch(key)`` (None: none), and stop noting it."""
        watching = dict(self.watching or {})
        newest, _ = watching.pop(key, (float("-inf"), False))
        self.watching = watching or None
        return None if newest == float("-inf") else newest

    def floor(self, key: str, version: float) -> None:
        """A snapshot of ``key`` at ``version`` was just written: for as long as a value can be held
        for its slot elsewhere (``held_at_most``), a value of the key older than it is not
        delivered. The hub drops such a value only if it passed the snapshot's own live update,
        which may still be on its way."""
        entry = [version, True]
        self.watching = {**(self.watching or {}), key: entry}
        asyncio.get_running_loop().call_later(held_at_most(), self._unfloor, key, entry)

    def _unfloor(self, key: str, entry: list) -> None:
        if self.watching is not None and self.watching.get(key) is entry:
            watching = dict(self.watching)
            del watching[key]
            self.watching = watching or None

    def _below_floor(self, message: dict) -> bool:
        """Note a watched key's newest version delivered; whether the value is below its floor."""
        assert self.watching is not None
        key, version = message.get("key"), message.get("version")
        if key is None or version is None:
            return False
        entry = self.watching.get(key)
        if entry is None:
            return False
        if entry[1]:
            return version < entry[0]
        if version > entry[0]:
            entry[0] = version
        return False

    def release(self) -> None:
        """Write the room messages held since ``hub_open(hold=True)``, and stop holding."""
        held, self.held = self.held or [], None
        for message in held:
            self.write(message["text"], message["channel"], message.get("key"))

    def wants(self, channel: str) -> bool:
        """Whether an unlogged value of ``channel`` (room data, or a value on the user's room)
        goes to this client."""
        return True

    async def _handle_personal(self, message: dict) -> None:
        if self.closing:
            return
        if message.get("type") == ACCESS_CHANGED:
            await self.access_changed(message)
            return
        assert self.stream is not None  # set before the inbox starts
        async with self.stream_lock:
            if message.get("type") == RECONNECTED:
                if self.personal_open:  # else the catch-up comes when the room is subscribed again
                    await self.stream.catch_up()  # personal events sent while the layer was deaf
            else:
                await self.stream.live(message["seq"], message["channel"], message["text"], message.get("frame"))

    async def _write_now(self, text: str) -> None:
        if not self.closing:
            await self.send(text_data=text)

    async def fail(self, code: str, message: str, close: int) -> None:
        """Say why, then close (ahead of anything still queued: the client resumes after)."""
        if self.closing:
            return
        self.closing = True
        await self.send(text_data=dumps(error(code, message)))
        await self.close(close)

    close_sent = False  # a close frame went out (close()): the class default, set per socket
    accepted = False  # the handshake was accepted (accept()): before, nothing can be sent

    async def accept(self, *args, **kwargs) -> None:
        self.accepted = True
        await super().accept(*args, **kwargs)  # type: ignore[misc]  # the consumer's

    async def close(self, code=None, reason=None) -> None:
        self.close_sent = True
        await super().close(code=code, reason=reason)  # type: ignore[misc]  # the consumer's

    async def tell_to_reconnect(self, message: str) -> None:
        """SERVICE_UNAVAILABLE, then close 4013, unless a close frame already went out (closing or
        not: a consumer daphne cancelled releases without one)."""
        if self.close_sent or not self.accepted:  # one still connecting checks hub().stopping itself
            return
        self.closing = True
        await self.send(text_data=dumps(error(Code.SERVICE_UNAVAILABLE, message)))
        await self.close(Close.TRY_AGAIN_LATER)

    def layer_lost(self) -> None:
        """From the hub: one of this socket's rooms cannot reach this process now (→ 4013)."""
        if not self.closing and getattr(self, "lost_close", None) is None:
            self.lost_close = asyncio.ensure_future(
                self.fail(Code.SERVICE_UNAVAILABLE, UNAVAILABLE, Close.TRY_AGAIN_LATER)
            )

    def _too_slow(self) -> None:
        if (stream := getattr(self, "stream", None)) is not None:
            stream.stop()  # a replay in progress stops reading: nothing more reaches this socket
        if not self.closing and getattr(self, "slow_close", None) is None:
            SLOW_CLOSES.inc()
            stafffeed.count_slow_close()
            self.slow_close = asyncio.ensure_future(
                self.fail(Code.SLOW_CONSUMER, "reading too slowly; reconnect and resume", Close.SLOW_CONSUMER)
            )


# What the hubs of this process hold, for the stats and /metrics (the layers below never import us).
presence.local_shared_rooms = local_shared_members
HUB_ROOMS.set_function(lambda: sum(len(h.members) for h in hub.by_loop.values()))
