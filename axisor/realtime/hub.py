"""Process-local room hubs: one channel-layer membership per room per process, fanned out locally.

Stock Channels gives every socket its own layer channel and delivers (and deserialises) every
group message once per socket. Here each server process holds one hub channel; the hub joins a
room's group when the first local socket joins the room and leaves it with the last, receives
each message once, and hands the pre-serialised text to its local connections.

Each connection keeps a small outbox written by one writer task: room events that carry a
``key`` (market data) are conflated — a newer update replaces the one still waiting — and the
writer holds back while the socket's transport has more than ``SLOW_BYTES`` unsent, so a slow
reader gets the latest price rather than a backlog. A connection whose backlog of events that must
not be dropped stays full for ``SLOW_SECONDS`` is closed with 4009 and recovers by resume.
"""

from __future__ import annotations

import asyncio
import itertools
import logging

from channels.layers import get_channel_layer
from django.conf import settings

from axisor.metrics import CONFLATED, DELIVERED

logger = logging.getLogger(__name__)

_conf = settings.AXISOR_WS
SLOW_BYTES = _conf["SLOW_BYTES"]  # unsent bytes in the socket's transport before the writer holds back
SLOW_SECONDS = _conf["SLOW_SECONDS"]  # held back this long with events it may not drop: too slow
MAX_WAITING = _conf["MAX_WAITING"]  # events that must not be dropped, waiting in one connection's outbox


class Hub:
    def __init__(self) -> None:
        self.layer = get_channel_layer()
        self.channel: str | None = None
        self.members: dict[str, set] = {}
        self.task: asyncio.Task | None = None
        self.ready = asyncio.Lock()

    async def _ensure(self) -> None:
        async with self.ready:
            if self.channel is None:
                self.channel = await self.layer.new_channel(prefix="hub.")
                self.task = asyncio.ensure_future(self._run())

    async def join(self, group: str, conn) -> None:
        await self._ensure()
        members = self.members.get(group)
        if members is None:
            members = self.members[group] = set()
            await self.layer.group_add(group, self.channel)
        members.add(conn)

    async def leave(self, group: str, conn) -> None:
        members = self.members.get(group)
        if members is None:
            return
        members.discard(conn)
        if not members:
            del self.members[group]
            await self.layer.group_discard(group, self.channel)

    async def _run(self) -> None:
        while True:
            try:
                message = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("hub receive failed")
                await asyncio.sleep(0.1)
                continue
            for conn in tuple(self.members.get(message.get("group"), ())):
                conn.deliver(message)


_hubs: dict[asyncio.AbstractEventLoop, Hub] = {}


def hub() -> Hub:
    """This event loop's hub (one per server process)."""
    loop = asyncio.get_running_loop()
    found = _hubs.get(loop)
    if found is None:
        for old in [lp for lp in _hubs if lp.is_closed()]:
            del _hubs[old]
        found = _hubs[loop] = Hub()
    return found


def local_members() -> dict[str, int]:
    """Sockets per room group in this event loop's hub (for the process's stats)."""
    found = _hubs.get(asyncio.get_running_loop())
    return {group: len(members) for group, members in found.members.items()} if found else {}


def transport_backlog(send) -> int | None:
    """Bytes written to the socket but not yet sent, when the server is daphne (None elsewhere)."""
    protocol = getattr(send, "args", (None,))[0]
    transport = getattr(protocol, "transport", None)
    if transport is None:
        return None
    buffered = len(getattr(transport, "dataBuffer", b"")) - getattr(transport, "offset", 0)
    return buffered + getattr(transport, "_tempDataLen", 0)


class Outbox:
    """One connection's waiting room events and the task that writes them in order."""

    _ids = itertools.count()

    def __init__(self, send_text, base_send, on_slow) -> None:
        self.send_text = send_text
        self.base_send = base_send
        self.on_slow = on_slow
        self.waiting: dict[object, str] = {}
        self.must_send = 0
        self.wake = asyncio.Event()
        self.task = asyncio.ensure_future(self._write())

    def put(self, text: str, key: str | None, channel: str = "") -> None:
        if key is None:
            if self.must_send >= MAX_WAITING:
                self.on_slow()
                return
            self.must_send += 1
            key = ("event", next(self._ids))
        elif key in self.waiting:
            CONFLATED.labels("connection").inc()
        self.waiting[key] = (channel, text)  # a conflated key keeps its place and takes the newest text
        self.wake.set()

    def close(self) -> None:
        self.task.cancel()

    async def _write(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.waiting:
                await self._wait_for_socket()
                key = next(iter(self.waiting))
                channel, text = self.waiting.pop(key)
                if isinstance(key, tuple):
                    self.must_send -= 1
                await self.send_text(text)
                DELIVERED.labels(channel).inc()

    async def _wait_for_socket(self) -> None:
        held = 0.0
        while (backlog := transport_backlog(self.base_send)) is not None and backlog > SLOW_BYTES:
            if self.must_send and held >= SLOW_SECONDS:
                self.on_slow()
                raise asyncio.CancelledError
            await asyncio.sleep(0.05)  # the socket drains on its own; conflation keeps only the latest meanwhile
            held += 0.05
