"""The outbox: a committed change sends exactly once, a rolled-back one sends nothing."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from broadcast.models import EventLog
from broadcast.outbox import publish, publish_personal_many
from broadcast.rooms import system_room, user_room
from wire import envelope

pytestmark = pytest.mark.django_db(transaction=True)


class Boom(Exception):
    pass


async def listen(group: str) -> str:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(group, channel)
    return channel


def personal(user_id: int, marker: str) -> None:
    publish_personal_many([(user_id, envelope("test_event", "notifications", {"m": marker}))])[0]


async def test_rolled_back_broadcast_sends_nothing_committed_sends_once(make_user):
    user = await database_sync_to_async(make_user)("u")
    layer = get_channel_layer()
    channel = await listen(user_room(user.pk).group)

    def rolled_back():
        with pytest.raises(Boom), transaction.atomic():
            personal(user.pk, "rolled-back")
            raise Boom

    await database_sync_to_async(rolled_back)()
    await database_sync_to_async(personal)(user.pk, "committed")

    first = await layer.receive(channel)
    assert '"m":"committed"' in first["text"] and first["personal"] is True
    # Nothing else was sent: a second committed marker is the very next message.
    await database_sync_to_async(personal)(user.pk, "next")
    assert '"m":"next"' in (await layer.receive(channel))["text"]
    rows = await database_sync_to_async(lambda: list(EventLog.objects.values_list("seq", "payload__data__m")))()
    assert rows == [(1, "committed"), (2, "next")]  # gap-free: the rolled-back seq was never taken


@pytest.mark.django_db
def test_capture_on_commit_sends_exactly_once(make_user, django_capture_on_commit_callbacks):
    user = make_user("v")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        publish(room=system_room(), event=envelope("server_maintenance", "system", {"message": "x"}))
    assert len(callbacks) == 1
    entry = EventLog.objects.get()
    assert entry.user_id is None and entry.seq is None and entry.room == "system"
    assert entry.payload == {"type": "server_maintenance", "channel": "system", "data": {"message": "x"}}
    assert user.pk


def test_personal_seq_is_per_user_and_gap_free(make_user):
    a, b = make_user("a"), make_user("b")
    for marker in "xyz":
        personal(a.pk, marker)
    personal(b.pk, "only")
    assert list(EventLog.objects.filter(user=a).values_list("seq", flat=True)) == [1, 2, 3]
    assert list(EventLog.objects.filter(user=b).values_list("seq", flat=True)) == [1]
    assert EventLog.objects.filter(user=a).last().payload["seq"] == 3


def test_a_batch_of_several_users_events_keeps_each_users_order_in_one_statement(
    make_user, django_capture_on_commit_callbacks
):
    """Interleaved events of several users: each user's seqs run on from its last and follow the
    list order; the rows, the returned entries and the texts sent all carry them. On PostgreSQL the
    seqs are reserved and the rows written in one statement, and the post-commit mark is one more."""
    a, b, c = make_user("a"), make_user("b"), make_user("c")
    personal(b.pk, "earlier")  # b's stream is at 1 already
    batch = [(a.pk, "a1"), (b.pk, "b2"), (a.pk, "a2"), (c.pk, "c1"), (str(b.pk), "b3"), (a.pk, "a3")]
    with CaptureQueriesContext(connection) as queries, django_capture_on_commit_callbacks(execute=True):
        with transaction.atomic():
            entries = publish_personal_many([(u, envelope("test_event", "notifications", {"m": m})) for u, m in batch])
    assert [(e.user_id, e.seq, e.payload["data"]["m"]) for e in entries] == [
        (a.pk, 1, "a1"), (b.pk, 2, "b2"), (a.pk, 2, "a2"), (c.pk, 1, "c1"), (b.pk, 3, "b3"), (a.pk, 3, "a3"),
    ]  # fmt: skip
    stored = {(r.user_id, r.seq): r for r in EventLog.objects.filter(pk__in=[e.pk for e in entries])}
    for entry in entries:
        row = stored[(entry.user_id, entry.seq)]
        assert row.payload == entry.payload == {**entry.payload, "seq": entry.seq}
        assert (row.room, row.type, row.channel) == (user_room(entry.user_id).name, "test_event", "notifications")
        assert row.published_at is not None  # sent after commit and marked
        assert row.created_at == entry.created_at and entry._state.adding is False
    if connection.vendor == "postgresql":
        statements = [
            q["sql"]
            for q in queries.captured_queries
            if not q["sql"].startswith(("SAVEPOINT", "RELEASE", "BEGIN", "COMMIT"))
        ]
        assert [sql.split()[0] for sql in statements] == ["WITH", "UPDATE"], statements


@pytest.mark.django_db(transaction=True)
async def test_a_transactions_events_go_to_redis_in_one_pipeline_from_its_own_thread(monkeypatch):
    from channels.layers import get_channel_layer

    from broadcast.messages import layer_event
    from broadcast.outbox import group_send_many
    from gateway.hub import Hub

    layer = get_channel_layer()
    pipelines: list[int] = []
    real = layer.publish_blocking

    def recorded(sends):
        pipelines.append(len(sends))
        return real(sends)

    monkeypatch.setattr(layer, "publish_blocking", recorded)
    got: list[str] = []
    both = asyncio.Event()

    class Member:
        def deliver(self, message: dict) -> None:
            got.append(message["text"])
            if len(got) == 2:
                both.set()

    h = Hub()
    await h.join("system", Member())
    sends = [("system", layer_event(channel="system", seq=None, text=f'{{"n":{i}}}')) for i in range(2)]
    assert await asyncio.to_thread(group_send_many, sends) == 2  # a thread with no event loop of its own
    await asyncio.wait_for(both.wait(), 5)
    assert got == ['{"n":0}', '{"n":1}'] and pipelines == [2]
    await h.leave("system", h.members["system"].copy().pop())
    h.task.cancel()
