"""The client's bookkeeping without a server: backoff schedule, URLs, and how messages are turned into
callbacks (dedupe, ordering during a replay, resume_failed, muted categories, failing callbacks)."""

from __future__ import annotations

import pytest

from axisor_client import AxisorClient, Backoff, ConnectionStatus, OrderUpdatesClient
from axisor_client.base import websocket_url, with_query
from tests.client.support import Recorder


def test_backoff_follows_the_seed_schedule_and_gives_up_after_max_tries():
    backoff = Backoff(jitter=0)
    delays = [backoff.next() for _ in range(300)]
    assert delays[:6] == [1, 2, 4, 8, 10, 10] and set(delays[4:]) == {10}
    assert backoff.next() is None and backoff.exhausted
    backoff.reset()
    assert backoff.next() == 1 and backoff.next(slow=True) == 10  # "too many": the longest delay


def test_backoff_jitter_shortens_each_delay_by_at_most_its_fraction():
    low, high = Backoff(jitter=0.25, rng=lambda: 1.0), Backoff(jitter=0.25, rng=lambda: 0.0)
    assert [low.next() for _ in range(5)] == [0.75, 1.5, 3.0, 6.0, 7.5]
    assert [high.next() for _ in range(5)] == [1, 2, 4, 8, 10]
    assert Backoff(max_tries=None).base_delay(10_000) == 10  # no overflow when unbounded


def test_urls_and_status():
    assert websocket_url("http://h:8000", "/ws") == "ws://h:8000/ws"
    assert websocket_url("https://h", "/ws/orders") == "wss://h/ws/orders"
    assert websocket_url("ws://h:1/custom/path", "/ws") == "ws://h:1/custom/path"
    with pytest.raises(ValueError):
        websocket_url("ftp://h", "/ws")
    assert with_query("ws://h/ws/orders?x=1", {"since": 4, "snapshot": None}) == "ws://h/ws/orders?x=1&since=4"
    status = ConnectionStatus("reconnecting", attempt=2, delay=1.5, code=1006)
    assert status == "reconnecting" and (status.attempt, status.delay, status.code, status.reason) == (
        2,
        1.5,
        1006,
        None,
    )


def event(seq: int | None, channel: str = "orders", **data) -> dict:
    message = {"type": "order_update" if channel == "orders" else "in_app_notification", "channel": channel}
    message["data"] = {"orderId": "o1", **data}
    if seq is not None:
        message["seq"] = seq
    return message


def offline(client_class, *args, **kwargs):
    """A client whose sends are recorded instead of going to a socket."""
    client = client_class("ws://127.0.0.1:9", *args, **kwargs)
    client.sent = []

    async def send_json(message: dict) -> None:
        client.sent.append(message)

    client.send_json = send_json
    return client


CONNECTION = {"type": "connection", "status": "connected", "userId": "7", "sessionId": "session_x"}


async def test_live_events_that_overtake_the_replay_are_held_and_delivered_once_in_order():
    client = offline(AxisorClient, "jwt", last_seq=5, resume="command")
    got = Recorder()
    client.on_event("*", got)
    await client._handle({**CONNECTION, "lastSeq": 10})
    assert client.sent == [{"type": "resume", "since": 5}]
    for seq in (11, 12):  # live, sent before the server read our resume
        await client._handle(event(seq))
    assert got.items == []
    for seq in range(6, 13):  # the replay: 6..10, then 11 and 12 again
        await client._handle(event(seq))
    await client._handle({"type": "resumed", "since": 5, "lastSeq": 12, "replayed": 7})
    await client._handle(event(12))  # a late duplicate
    await client._handle(event(13))
    assert [e["seq"] for e in got.items] == list(range(6, 14))
    assert client.duplicates == 3 and client.last_seq == 13


async def test_held_events_are_released_by_resumed_even_across_gaps():
    client = offline(AxisorClient, "jwt", last_seq=1, subscriptions=["market:BTC_USD"], resume="command")
    got = Recorder()
    client.on_event("*", got)
    await client.unsubscribe("notifications")  # not connected: remembered for the connection
    await client._handle({**CONNECTION, "lastSeq": 6})
    assert client.sent == [
        {"type": "subscribe", "channel": "market:BTC_USD"},
        {"type": "unsubscribe", "channel": "notifications"},
        {"type": "resume", "since": 1},
    ]
    await client._handle(event(3))  # 2 was a notification: filtered by the server, a gap for us
    await client._handle({"type": "market_data_update", "channel": "market_data", "data": {"price": 1}})
    await client._handle(event(4, "notifications"))  # crossed our unsubscribe in flight
    await client._handle(event(5))
    await client._handle({"type": "resumed", "since": 1, "lastSeq": 6, "replayed": 3})
    assert [(e["type"], e.get("seq")) for e in got.items] == [
        ("market_data_update", None),  # not personal: never held
        ("order_update", 3),
        ("order_update", 5),
    ]
    assert client.last_seq == 6  # everything up to the server's lastSeq was sent to us


async def test_resume_failed_continues_from_the_socket_start_after_telling_the_callback():
    client = offline(AxisorClient, "jwt", last_seq=2, resume="command")
    got, failures, positions = Recorder(), Recorder(), Recorder()
    client.on_event("*", got)
    client.on_resume_failed(failures)
    client.on_last_seq(positions)
    await client._handle({**CONNECTION, "lastSeq": 40})
    await client._handle(event(42))  # live, held until the resume is answered
    await client._handle({"type": "resume_failed", "reason": "too_old", "snapshotRequired": True, "lastSeq": 41})
    await client._handle(event(41))  # live after the refusal
    assert failures.items[0]["reason"] == "too_old"
    assert [e["seq"] for e in got.items] == [42]
    assert positions.items == [40, 42] and client.duplicates == 1


async def test_resume_in_the_handshake_asks_with_since_and_waits_for_resumed():
    header = offline(AxisorClient, "jwt", last_seq=5)
    url, headers = await header._prepare("ws://h/ws")
    assert (url, headers) == ("ws://h/ws?since=5", {"Authorization": "Bearer jwt"})
    message = offline(AxisorClient, lambda: "fresh", last_seq=5, auth="message")
    assert await message._prepare("ws://h/ws") == ("ws://h/ws", None)
    await message._on_open(None)
    assert message.sent == [{"type": "auth", "token": "fresh", "since": 5}]

    got = Recorder()
    header.on_event("*", got)
    await header._handle({**CONNECTION, "lastSeq": 9})
    assert header.sent == []  # no resume command: the replay is on its way
    for seq in (6, 8):  # 7 was filtered out...
        await header._handle(event(seq))
    await header._handle({"type": "resumed", "since": 5, "lastSeq": 9, "replayed": 2})
    await header._handle(event(10))
    assert [e["seq"] for e in got.items] == [6, 8, 10] and header.last_seq == 10

    fresh = offline(AxisorClient, "jwt")
    assert await fresh._prepare("ws://h/ws") == ("ws://h/ws", {"Authorization": "Bearer jwt"})


async def test_a_fresh_client_starts_live_from_the_connection_and_a_failing_callback_is_contained():
    client = offline(AxisorClient, "jwt")
    got = Recorder()

    def broken(event: dict) -> None:
        raise RuntimeError("user code")

    client.on_event("*", broken)
    client.on_event("*", got)
    await client._handle({**CONNECTION, "lastSeq": 7})
    assert client.sent == [] and client.last_seq == 7  # no resume: nothing missed yet
    await client._handle(event(8))
    await client._handle(event(8))
    assert [e["seq"] for e in got.items] == [8] and client.callback_errors == 1 and client.last_seq == 8


async def test_order_updates_are_deduplicated_and_snapshots_bypass_the_order():
    client = offline(OrderUpdatesClient, ("s", "t"), last_seq=3)
    this, every = Recorder(), Recorder()
    client.on_order_update("A", this)
    client.on_all_orders(every)
    for seq, order_id in ((2, "A"), (3, "A"), (4, "A"), (5, "B"), (4, "A")):
        await client._handle({"updateType": "ORDER_PLACED", "orderId": order_id, "seq": seq})
    await client._handle({"updateType": "ORDER_STATUS", "orderId": "A", "snapshot": True, "seq": 5})
    await client._handle({"type": "heartbeat", "serverTime": "2026-01-01T00:00:00.000Z"})
    assert [(u["orderId"], u["seq"]) for u in every.items] == [("A", 4), ("B", 5), ("A", 5)]
    assert [u["seq"] for u in this.items] == [4, 5] and client.duplicates == 3


async def test_order_resume_failed_takes_the_stream_as_it_comes_and_remembers_where_to_resume():
    client = offline(OrderUpdatesClient, ("s", "t"), last_seq=50)
    every, positions = Recorder(), Recorder()
    client.on_all_orders(every)
    client.on_last_seq(positions)
    await client._handle({"type": "resume_failed", "reason": "ahead", "snapshotRequired": False, "lastSeq": 9})
    assert client.last_seq is None and client.resume_from == 9  # where a reconnect would resume
    url, _ = await client._prepare("ws://h/ws/orders")
    assert url == "ws://h/ws/orders?session=s&token=t&since=9"
    await client._handle({"updateType": "ORDER_PLACED", "orderId": "A", "seq": 9})  # live, before the refusal's
    assert [u["seq"] for u in every.items] == [9] and positions.items == [9]


async def test_stop_right_after_start_ends_the_run():
    client = AxisorClient("ws://127.0.0.1:9", "jwt")
    task = await client.start()
    await client.stop()  # before the task had a chance to run
    assert task.done() and task.result() == "disconnected"
    again = await client.start()  # and it can be started again
    await client.stop()
    assert again.done() and again is not task
