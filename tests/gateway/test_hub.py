"""Process-local room hubs: one layer membership per room per process, local fan-out, conflation,
and the slow-consumer close."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from broadcast.messages import layer_event
from broadcast.outbox import group_send_many, publish_personal_many
from gateway import hub as hubmod
from gateway.hub import Hub, SendQueue
from tests.conftest import connected, jwt_for
from wire import envelope

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("instruments")]


class Conn:
    def __init__(self) -> None:
        self.got: list[dict] = []
        self.event = asyncio.Event()

    def deliver(self, message: dict) -> None:
        self.got.append(message)
        self.event.set()


def record_calls(monkeypatch, layer, *names: str) -> list[list]:
    """Let the layer's methods run as they are, recording each call's first argument."""
    logs = []
    for name in names:
        real, log = getattr(layer, name), []

        async def recorded(first, *args, _real=real, _log=log, **kwargs):
            _log.append(first)
            return await _real(first, *args, **kwargs)

        monkeypatch.setattr(layer, name, recorded)
        logs.append(log)
    return logs


async def test_one_membership_per_room_and_local_fan_out(monkeypatch):
    h = Hub()
    adds, discards = record_calls(monkeypatch, h.layer, "group_add", "group_discard")
    a, b = Conn(), Conn()
    await h.join("market.BTC_USD", a)
    await h.join("market.BTC_USD", b)
    assert adds == ["market.BTC_USD"]  # the second local member costs nothing on the layer
    await h.layer.group_send("market.BTC_USD", {"type": "event.message", "group": "market.BTC_USD", "text": "x"})
    await asyncio.wait_for(asyncio.gather(a.event.wait(), b.event.wait()), 5)
    assert a.got[0]["text"] == b.got[0]["text"] == "x"
    await h.leave("market.BTC_USD", a)
    assert discards == []
    await h.leave("market.BTC_USD", b)
    assert discards == ["market.BTC_USD"]
    h.task.cancel()


async def test_send_queue_conflates_keyed_events_while_the_socket_is_backed_up(monkeypatch):
    sent: list[str] = []
    both = asyncio.Event()
    backlog = {"bytes": 10 * hubmod.SLOW_BYTES}
    monkeypatch.setattr(hubmod, "transport_backlog", lambda send: backlog["bytes"])

    async def send_text(text: str) -> None:
        sent.append(text)
        if len(sent) == 2:
            both.set()

    queue = SendQueue(send_text, None, lambda: None)
    for price in range(100):
        queue.put(f"md {price}", "md:BTC_USD")
    queue.put("notice", None)
    await asyncio.sleep(0)  # the writer is held back by the backlog
    assert sent == [] and [text for _, text in queue.waiting.values()] == ["md 99", "notice"]
    backlog["bytes"] = 0
    await asyncio.wait_for(both.wait(), 5)
    assert sent == ["md 99", "notice"]
    queue.close()


def behind_queue(monkeypatch, **limits) -> tuple[SendQueue, asyncio.Event]:
    """A send queue whose socket is far behind, with these limits (MAX_WAITING=3, say), and the
    event its on_slow sets."""
    for name, value in limits.items():
        monkeypatch.setattr(hubmod, name, value)
    monkeypatch.setattr(hubmod, "transport_backlog", lambda send: 10 * hubmod.SLOW_BYTES)
    slow = asyncio.Event()

    async def send_text(text: str) -> None:
        pass

    return SendQueue(send_text, None, slow.set), slow


async def test_send_queue_too_slow_for_events_it_must_not_drop(monkeypatch):
    queue, slow = behind_queue(monkeypatch, MAX_WAITING=3)
    for i in range(4):
        queue.put(f"event {i}", None)
    assert slow.is_set()
    queue.close()


async def test_send_queue_too_slow_for_the_bytes_it_must_not_drop(monkeypatch):
    """Outside probe (twelfth session): only the count was bounded, so a replay of large events
    (15 KB notifications) piled ~15 MB behind each slow socket before it was closed. The bytes are
    bounded too; conflated values do not count (one per key)."""
    queue, slow = behind_queue(monkeypatch, MAX_WAITING_BYTES=10_000)
    for _ in range(5):
        queue.put("x" * 2_000, "market:key")  # one value per key waits: not counted
    for _ in range(5):
        queue.put("y" * 2_000, None)  # 10,000: at the limit
    assert not slow.is_set() and queue.must_bytes == 10_000
    queue.put("z", None)
    assert slow.is_set() and queue.must_send == 5  # refused, not queued
    queue.close()


async def test_a_replay_stops_reading_once_its_socket_is_closing(make_user):
    from channels.db import database_sync_to_async

    from broadcast.outbox import publish_personal_many
    from gateway.stream import PersonalStream
    from wire import envelope

    user = await database_sync_to_async(make_user)("replayer")

    def emit_many() -> None:
        publish_personal_many([(user.pk, envelope("test_event", "notifications", {"i": i})) for i in range(30)])

    await database_sync_to_async(emit_many)()
    got: list[int] = []

    async def emit(seq, channel, text, frame) -> None:
        got.append(seq)
        if len(got) == 5:
            stream.stop()  # the socket was found too slow while the replay wrote

    stream = PersonalStream(user.pk, emit, "premium")
    assert await stream.resume(0) == 5
    assert got == [1, 2, 3, 4, 5]


async def test_slow_socket_is_closed_4009(make_user, monkeypatch):
    from channels.db import database_sync_to_async

    monkeypatch.setattr(hubmod, "MAX_WAITING", 2)
    user = await database_sync_to_async(make_user)("slow")
    comm, _ = await connected(jwt_for(user))
    monkeypatch.setattr(hubmod, "transport_backlog", lambda send: 10 * hubmod.SLOW_BYTES)  # stops reading
    sends = [("system", layer_event(channel="system", seq=None, text=f'{{"n":{i}}}')) for i in range(5)]
    await asyncio.to_thread(group_send_many, sends)
    while (out := await comm.receive_output(timeout=5))["type"] != "websocket.close":
        pass
    assert out["code"] == 4009


async def test_sockets_have_no_layer_channel_and_share_their_users_membership(make_user, monkeypatch):
    """Three sockets of one user (two on /ws, one on /ws/orders): no layer channel of their own and
    one layer membership of the user's group for the process; a personal event reaches all three
    once, and the membership ends with the last socket."""
    from channels.db import database_sync_to_async
    from channels.layers import get_channel_layer

    from broadcast.rooms import user_room
    from orders.services import order_session_create

    layer = get_channel_layer()
    adds, discards = record_calls(monkeypatch, layer, "group_add", "group_discard")
    new_channels = []
    real_new = layer.new_channel

    async def new_channel(*args, **kwargs):
        new_channels.append(name := await real_new(*args, **kwargs))
        return name

    monkeypatch.setattr(layer, "new_channel", new_channel)
    user = await database_sync_to_async(make_user)("sharer")
    session, secret = await database_sync_to_async(order_session_create)(user=user)
    group = user_room(user.pk).group
    first, _ = await connected(jwt_for(user))
    second, _ = await connected(jwt_for(user))
    from tests.conftest import ws

    orders = ws(f"/ws/orders?session={session.session}&token={secret}")
    assert (await orders.connect())[0]
    assert all(not name.startswith(layer.prefix + "specific.") for name in new_channels)  # hub only
    assert adds.count(group) == 1

    def emit():
        publish_personal_many([(user.pk, envelope("order_update", "orders", {"orderId": "x"}))])[0]

    await database_sync_to_async(emit)()
    for comm in (first, second):
        got = await comm.receive_json_from(timeout=5)
        assert got["channel"] == "orders" and got["seq"] == 1
    assert (await orders.receive_json_from(timeout=5))["seq"] == 1
    for comm in (first, second, orders):
        await comm.disconnect()
    assert discards.count(group) == 1


async def test_access_changed_reaches_sockets_through_the_hub(make_user):
    from channels.db import database_sync_to_async

    from tests.conftest import closed_with

    user = await database_sync_to_async(make_user)("revoked")
    comm, _ = await connected(jwt_for(user))

    def deactivate():
        from accounts.services import account_deactivate

        account_deactivate(user=user)

    await database_sync_to_async(deactivate)()
    error = await comm.receive_json_from(timeout=5)
    assert error["code"] == "ACCESS_REVOKED"
    assert await closed_with(comm) == 4003


async def test_inbox_full_of_personal_events_closes_the_socket(monkeypatch):
    monkeypatch.setattr(hubmod, "MAX_WAITING", 3)
    full = asyncio.Event()
    handled: list[dict] = []

    async def handle(message: dict) -> None:
        handled.append(message)

    inbox = hubmod.Inbox(handle, full.set)
    for seq in range(4):  # not started: nothing is handled, the fourth does not fit
        inbox.put({"seq": seq})
    assert full.is_set() and handled == []
    inbox.start()
    await inbox.task
    assert [m["seq"] for m in handled] == [0, 1, 2]
    inbox.close()


async def test_send_queue_writes_at_once_and_queues_behind_anything_waiting(monkeypatch):
    direct: list[str] = []
    queued: list[str] = []
    backlog = {"bytes": 0}
    monkeypatch.setattr(hubmod, "transport_backlog", lambda send: backlog["bytes"])

    def direct_sender(base_send, limit):  # core.internals.direct_sender: False while the socket is behind
        def send(text: str) -> bool:
            if backlog["bytes"] > limit:
                return False
            direct.append(text)
            return True

        return send

    monkeypatch.setattr(hubmod, "direct_sender", direct_sender)
    drained = asyncio.Event()

    async def send_text(text: str) -> None:
        queued.append(text)
        if text == "after 2":
            drained.set()

    queue = SendQueue(send_text, object(), lambda: None)
    queue.put("first", None)
    assert direct == ["first"] and queue.task is None  # written in the caller's pass: no task, no wait

    backlog["bytes"] = 10 * hubmod.SLOW_BYTES  # the reader falls behind: events wait their turn
    queue.put("held 1", None)
    backlog["bytes"] = 0
    queue.put("after 1", None)  # the socket keeps up again, but "held 1" is still waiting: no overtaking
    queue.put("after 2", None)
    assert direct == ["first"] and queue.task is not None
    await asyncio.wait_for(drained.wait(), 5)
    assert queued == ["held 1", "after 1", "after 2"]
    await asyncio.sleep(0)  # the writer task ends once nothing waits
    assert queue.task is None
    queue.put("later", None)
    assert direct == ["first", "later"]


@pytest.mark.parametrize(
    ("deliveries", "messages", "most", "largest", "drained"),
    [
        (40, 5, 1000, 20, 2),  # 2 sockets: 20 messages a batch
        (2, 5, 1000, 5, 3),  # a room as large as a batch's deliveries: still 5 messages a batch
        (2, 5, 6, 3, 3),  # ... while under BATCH_DELIVERIES_MOST
    ],
)
async def test_a_burst_already_read_is_handled_in_one_batch_with_its_writes_held(
    monkeypatch, deliveries, messages, most, largest, drained
):
    """Messages Redis has already delivered to the process are handed out in the same turn, under
    one hold of the sockets' writes (core.internals.corked): a socket gets a burst's frames in one
    write. In order, and bounded: past BATCH_DELIVERIES the rest is another batch, unless the
    batch has fewer than BATCH_MESSAGES messages and fewer than BATCH_DELIVERIES_MOST deliveries
    (a room of thousands of sockets otherwise got one write a frame or two)."""
    from core import internals

    class Recording(Conn):
        def deliver(self, message: dict) -> None:
            # the batch is the hold it was delivered under (kept here, so no two batches share an id)
            super().deliver({**message, "batch": internals._corked})

    monkeypatch.setattr(hubmod, "BATCH_DELIVERIES", deliveries)
    monkeypatch.setattr(hubmod, "BATCH_MESSAGES", messages)
    monkeypatch.setattr(hubmod, "BATCH_DELIVERIES_MOST", most)
    h = Hub()
    a, b = Recording(), Recording()
    await h.join("market.ETH_USD", a)
    await h.join("market.ETH_USD", b)
    # 50 messages published at once (one pipeline): the hub's first wake-up finds most of them read
    sends = [("market.ETH_USD", {"type": "event.message", "text": str(i)}) for i in range(50)]
    await asyncio.to_thread(group_send_many, sends)
    while len(b.got) < 50:
        b.event.clear()
        await asyncio.wait_for(b.event.wait(), 5)
    for conn in (a, b):
        assert [m["text"] for m in conn.got] == [str(i) for i in range(50)]
        assert all(m["batch"] is not None for m in conn.got)
    sizes = [1]  # messages per batch, in delivery order
    for before, after in itertools.pairwise(a.got):
        if after["batch"] is before["batch"]:
            sizes[-1] += 1
        else:
            sizes.append(1)
    assert max(sizes) >= drained, sizes  # the burst was drained, not handled one message a turn
    assert max(sizes) <= largest, sizes  # and bounded
    await h.leave("market.ETH_USD", a)
    await h.leave("market.ETH_USD", b)
    h.task.cancel()


class ReadLayer:
    """A channel layer whose messages for the hub are all already read (a burst Redis delivered
    at once): ``receive`` and ``received_now`` take them in order; when none is left, ``receive``
    waits until the test ends."""

    def __init__(self, messages: list[dict]) -> None:
        self.waiting = list(messages)
        self.drained = asyncio.Event()

    async def receive(self, channel: str) -> dict:
        if not self.waiting:
            self.drained.set()
            await asyncio.Event().wait()
        return self.waiting.pop(0)

    def now(self, layer, channel: str) -> dict | None:
        return self.waiting.pop(0) if self.waiting else None


@pytest.mark.parametrize(
    ("groups", "deliveries", "most", "batches"),
    [
        (["a"] * 12, 40, 1000, [12]),  # under BATCH_DELIVERIES: one batch
        (["a"] * 12, 2, 1000, [5, 5, 2]),  # a room as large as a batch: BATCH_MESSAGES a batch
        (["a"] * 12, 2, 6, [3, 3, 3, 3]),  # ... within BATCH_DELIVERIES_MOST, the next counted too
        (["a", "b"] * 3, 2, 1000, [1] * 6),  # past BATCH_DELIVERIES, another room's message waits
        (["a", "a", "b", "a"], 6, 1000, [4]),  # under it any room's; past it, the batch's room's
    ],
)
async def test_a_batch_takes_what_saves_writes_and_the_loop_runs_between_batches(
    monkeypatch, groups, deliveries, most, batches
):
    """Exact batches of a burst already read (two sockets in each room): under BATCH_DELIVERIES
    a batch takes every message; past it, only messages to its rooms, up to BATCH_MESSAGES and
    within BATCH_DELIVERIES_MOST. Between batches the hub lets the event loop run (receive()
    does not suspend while messages wait): other tasks get turns during a long burst."""
    from core import internals

    monkeypatch.setattr(hubmod, "BATCH_DELIVERIES", deliveries)
    monkeypatch.setattr(hubmod, "BATCH_MESSAGES", 5)
    monkeypatch.setattr(hubmod, "BATCH_DELIVERIES_MOST", most)
    layer = ReadLayer([{"type": "event.message", "group": g, "text": str(i)} for i, g in enumerate(groups)])
    monkeypatch.setattr(hubmod, "received_now", layer.now)
    turns = 0

    async def other_work() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    seen: list[tuple[dict, int]] = []  # (the batch's hold, kept: no two share an id; the other task's turns)

    class Recording(Conn):
        def deliver(self, message: dict) -> None:
            super().deliver(message)
            if self is a:
                seen.append((internals._corked, turns))

    a, b = Recording(), Recording()
    h = Hub()
    h.layer, h.channel = layer, "hub.test"
    h.members = {"a": {a, b}, "b": {a, b}}
    other = asyncio.ensure_future(other_work())
    task = asyncio.ensure_future(h._run())
    await asyncio.wait_for(layer.drained.wait(), 5)
    task.cancel()
    other.cancel()
    assert [m["text"] for m in a.got] == [str(i) for i in range(len(groups))]  # every one, in order
    sizes = [len(list(run)) for _, run in itertools.groupby(seen, key=lambda s: id(s[0]))]
    assert sizes == batches
    starts = [next(run)[1] for _, run in itertools.groupby(seen, key=lambda s: id(s[0]))]
    if len(batches) > 1:
        assert all(x < y for x, y in itertools.pairwise(starts)), starts  # the loop ran in between


async def test_a_message_that_cannot_be_read_is_skipped_not_the_hub(monkeypatch):
    """The hub reads a burst's following messages itself (received_now): one that cannot be
    deserialised is logged and skipped, as a failing ``receive`` is, and the hub goes on."""
    h = Hub()
    a = Conn()
    await h.join("market.SOL_USD", a)
    real = hubmod.received_now
    failed = asyncio.Event()

    def flaky(layer, channel):
        if not failed.is_set():
            failed.set()
            real(layer, channel)  # takes the message off the queue, as a failed deserialise does
            raise ValueError("not a layer message")
        return real(layer, channel)

    monkeypatch.setattr(hubmod, "received_now", flaky)
    sends = [("market.SOL_USD", {"type": "event.message", "text": str(i)}) for i in range(3)]
    await asyncio.to_thread(group_send_many, sends)
    await asyncio.wait_for(failed.wait(), 5)
    later = [("market.SOL_USD", {"type": "event.message", "text": "later"})]
    await asyncio.to_thread(group_send_many, later)  # after the failure: the hub must still read it
    while True:
        a.event.clear()  # before looking, so a delivery between the look and the wait is not lost
        if a.got and a.got[-1]["text"] == "later":
            break
        await asyncio.wait_for(a.event.wait(), 5)
    assert not h.task.done()  # the hub lives on
    assert a.got[0]["text"] == "0"
    await h.leave("market.SOL_USD", a)
    h.task.cancel()


def gate_group_add(monkeypatch, layer, fail: Exception | None = None) -> asyncio.Event:
    """The layer's real group_add, held until the returned event is set (then failing with
    ``fail`` if given): a subscription still on its way to Redis. ``gate.entered`` is set once a
    group_add is held."""
    gate, real = asyncio.Event(), layer.group_add
    gate.entered = asyncio.Event()  # type: ignore[attr-defined]

    async def held(group, channel):
        gate.entered.set()  # type: ignore[attr-defined]
        await gate.wait()
        if fail is not None:
            raise fail
        return await real(group, channel)

    monkeypatch.setattr(layer, "group_add", held)
    return gate


async def test_a_member_joining_a_group_still_subscribing_waits_for_the_subscription(monkeypatch):
    """A later member of a group whose first member's subscription is still on its way counts as
    joined only once the process can hear the group: no member reads a value (the notices in force,
    a snapshot) under a group the process is not yet subscribed to."""
    h = Hub()
    gate = gate_group_add(monkeypatch, h.layer)
    a, b = Conn(), Conn()
    first = asyncio.ensure_future(h.join("market.BTC_USD", a))
    second = asyncio.ensure_future(h.join("market.BTC_USD", b))
    await asyncio.wait_for(gate.entered.wait(), 5)
    await asyncio.sleep(0)  # the second join has run up to its wait
    assert not first.done() and not second.done()
    assert "market.BTC_USD" not in h.stamps
    gate.set()
    await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert h.members["market.BTC_USD"] == {a, b} and "market.BTC_USD" in h.stamps
    await h.join("user.7", a)
    # the process's stats count the shared rooms' sockets; users' own rooms are counted by connection
    assert h.shared == {"market.BTC_USD"} and set(h.members) == {"market.BTC_USD", "user.7"}
    await asyncio.to_thread(group_send_many, [("market.BTC_USD", {"type": "event.message", "text": "x"})])
    await asyncio.wait_for(asyncio.gather(a.event.wait(), b.event.wait()), 5)
    await h.leave("market.BTC_USD", a)
    await h.leave("market.BTC_USD", b)
    await h.leave("user.7", a)
    assert "market.BTC_USD" not in h.members and not h.shared and not h.members
    h.task.cancel()


@pytest.mark.parametrize("failure", [RedisConnectionError("Redis away"), RuntimeError("the layer's own bug")])
async def test_a_failed_subscription_fails_every_waiting_member_and_the_next_join_subscribes_again(
    monkeypatch, failure
):
    h = Hub()
    real = h.layer.group_add
    gate = gate_group_add(monkeypatch, h.layer, fail=failure)
    a, b = Conn(), Conn()
    joins = [asyncio.ensure_future(h.join("market.ETH_USD", c)) for c in (a, b)]
    await asyncio.wait_for(gate.entered.wait(), 5)
    gate.set()
    results = await asyncio.wait_for(asyncio.gather(*joins, return_exceptions=True), 5)
    assert [type(r) for r in results] == [hubmod.LayerUnavailable, hubmod.LayerUnavailable]
    assert "market.ETH_USD" not in h.members and not h.subscribing and not h.shared
    monkeypatch.setattr(h.layer, "group_add", real)
    await h.join("market.ETH_USD", a)  # subscribes again: the failed attempt left nothing behind
    assert h.members["market.ETH_USD"] == {a} and "market.ETH_USD" in h.stamps
    await asyncio.to_thread(group_send_many, [("market.ETH_USD", {"type": "event.message", "text": "y"})])
    await asyncio.wait_for(a.event.wait(), 5)
    await h.leave("market.ETH_USD", a)
    h.task.cancel()


async def test_members_that_go_away_while_the_group_subscribes_leave_no_membership_behind(monkeypatch):
    """The subscription is the group's, not its first member's: cancelling the first joiner does
    not cancel it for the second; once every joiner has gone, the group is left again."""
    h = Hub()
    discards = []
    real_discard = h.layer.group_discard

    async def discard(group, channel):
        discards.append(group)
        return await real_discard(group, channel)

    monkeypatch.setattr(h.layer, "group_discard", discard)
    gate = gate_group_add(monkeypatch, h.layer)
    a, b = Conn(), Conn()
    first = asyncio.ensure_future(h.join("market.SOL_USD", a))
    second = asyncio.ensure_future(h.join("market.SOL_USD", b))
    await asyncio.wait_for(gate.entered.wait(), 5)
    first.cancel()
    await asyncio.wait([first])
    gate.set()
    await asyncio.wait_for(second, 5)
    assert first.cancelled() and h.members["market.SOL_USD"] == {b} and discards == []
    await h.leave("market.SOL_USD", b)
    assert discards == ["market.SOL_USD"]

    gate.clear()
    gate.entered.clear()
    c = Conn()
    lone = asyncio.ensure_future(h.join("market.SOL_USD", c))
    await asyncio.wait_for(gate.entered.wait(), 5)
    subscription = h.subscribing["market.SOL_USD"]
    lone.cancel()
    await asyncio.wait([lone])
    gate.set()
    await asyncio.wait_for(subscription, 5)  # it drops the group its only joiner left
    assert discards == ["market.SOL_USD", "market.SOL_USD"]
    assert "market.SOL_USD" not in h.members and "market.SOL_USD" not in h.stamps and not h.shared
    h.task.cancel()


async def test_on_the_embedded_layer_the_hub_hears_its_rooms_after_a_day_and_a_burst_in_full(settings, monkeypatch):
    """The in-memory layer as the embedded default configures it (no Redis): channels' defaults
    drop a membership after a day and anything beyond 100 waiting messages."""
    import time

    from channels.layers import InMemoryChannelLayer

    h = Hub()
    h.layer = InMemoryChannelLayer(**settings.IN_MEMORY_LAYER)
    a = Conn()
    await h.join("market.BTC_USD", a)
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + 2 * 86400)  # the process has run two days
    for i in range(1000):  # a burst, written before the hub reads any of it
        await h.layer.group_send("market.BTC_USD", {"type": "event.message", "group": "market.BTC_USD", "text": str(i)})
    while len(a.got) < 1000:
        a.event.clear()
        await asyncio.wait_for(a.event.wait(), 5)
    assert [m["text"] for m in a.got] == [str(i) for i in range(1000)]
    await h.leave("market.BTC_USD", a)
    h.task.cancel()
