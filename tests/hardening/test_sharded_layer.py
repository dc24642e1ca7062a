"""Issue 23, item 3: the channel layer sharded over three real Redis servers (CHANNEL_LAYER_HOSTS).
Rooms spread over them; an event published through one daphne process reaches a socket on the other
for every room kind; one server SIGKILLed affects only the rooms hashed to it, and when it is back
on its port its rooms recover: personal events resumed by seq (none lost, none twice, checked
against the event log), market rooms resubscribed."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis
from channels.db import database_sync_to_async
from channels_redis.utils import _consistent_hash
from django.conf import settings

from broadcast.rooms import user_room
from market.defaults import DEFAULT_INSTRUMENTS
from tests.conftest import jwt_for
from tests.hardening.conftest import PrivateRedis, rest, server_is_clean
from tests.hardening.fleet import Fleet, broadcast, latest_seqs
from tests.integration.http import call
from tests.panel.grants import feed_reader
from tests.polling import until

SHARDS = 3
GRACE = 2.0  # CHANNEL_LAYER_GRACE_SECONDS: how long a lost server's sockets are kept before 4013
SYMBOLS = [row[0] for row in DEFAULT_INSTRUMENTS]


def shard_of(prefix: str, group: str) -> int:
    """The server channels-redis puts a group on (its own hash, as the layer uses it)."""
    return _consistent_hash(f"{prefix}__group__{group}", SHARDS)


def layout() -> tuple[str, int, str, str]:
    """A layer prefix of this test's own under which ``system`` and ``admin.staff`` live on two
    servers and the third (the one killed) holds a market room, and one market room lives
    elsewhere: (prefix, victim shard, its market symbol, a market symbol on another shard)."""
    for n in itertools.count():
        prefix = f"{settings.CHANNEL_LAYER_PREFIX}s{n}"
        held = {shard_of(prefix, "system"), shard_of(prefix, "admin.staff")}
        if len(held) < 2:
            continue
        (victim,) = set(range(SHARDS)) - held
        on = {symbol: shard_of(prefix, f"market.{symbol}") for symbol in SYMBOLS}
        lost = [s for s in SYMBOLS if on[s] == victim]
        kept = [s for s in SYMBOLS if on[s] != victim]
        if lost and kept:
            return prefix, victim, lost[0], kept[0]
    raise AssertionError("unreachable")


@pytest.fixture
def layer_servers():
    servers = [PrivateRedis() for _ in range(SHARDS)]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.kill()


async def readiness(server) -> tuple[int, dict]:
    return await asyncio.to_thread(call, "GET", f"{server.http}/readyz")


async def tick(server, token: str, symbol: str, price: float) -> None:
    status, body = await rest(
        "POST", f"{server.http}/api/internal/ticks", [{"symbol": symbol, "price": price, "volume": 1}], token=token
    )
    assert status == 202, body


async def notice(server, token: str, message: str) -> None:
    start = datetime.now(UTC) + timedelta(hours=1)
    body = {
        "kind": "maintenance",
        "message": message,
        "startTime": start.isoformat(),
        "endTime": (start + timedelta(hours=1)).isoformat(),
    }
    status, answer = await rest("POST", f"{server.http}/api/system/notices", body, token=token)
    assert status == 201, answer


@pytest.mark.timeout(300)
async def test_sharded_layer_spreads_rooms_and_losing_one_server_affects_only_its_rooms(
    layer_servers, daphne, make_user, instruments
):
    prefix, victim, lost_symbol, kept_symbol = layout()
    env = {
        "CHANNEL_LAYER_HOSTS": ",".join(s.url for s in layer_servers),
        "CHANNEL_LAYER_PREFIX": prefix,
        "CHANNEL_LAYER_GRACE_SECONDS": str(GRACE),
        "REDIS_SOCKET_TIMEOUT": "2",
        "REDIS_CONNECT_TIMEOUT": "1",
        "AXISOR_BACKGROUND": "0",
        "AXISOR_SIMULATE": "",
    }
    a, b = await asyncio.gather(*(asyncio.to_thread(daphne, **env) for _ in range(2)))

    # users whose rooms are on every server (two or three on each); the staff user not on the victim
    on: dict[int, list] = {s: [] for s in range(SHARDS)}
    for n in itertools.count():
        user = await database_sync_to_async(make_user)(f"sh-{n}")
        found = on[shard_of(prefix, user_room(user.pk).layer_group)]
        if len(found) < 3:
            found.append(user)
        if all(len(found) >= 2 for found in on.values()):
            break
        assert n < 200, "the user rooms do not spread over the servers"
    staff = None
    while staff is None or shard_of(prefix, user_room(staff.pk).layer_group) == victim:
        name = f"sh-ops{0 if staff is None else staff.pk}"  # who also posts ticks, notices, notifications
        perms = ("market.add_tick", "system.add_systemnotice", "notifications.add_notification")
        staff = await database_sync_to_async(feed_reader)(make_user, name, *perms)
    token = jwt_for(staff)
    people = [u for found in on.values() for u in found]
    hit = {u.pk for u in on[victim]}  # users whose personal room is on the killed server

    fleet = Fleet()
    markets = [f"market:{lost_symbol}", f"market:{kept_symbol}"]
    for user in [*people, staff]:  # every socket on b; everything is published through a
        fleet.add([b.ws, a.ws], user, subscriptions=markets)
    ticks: list[list[tuple[str, float, float]]] = []  # per client: (symbol, price, when)
    notices: list[list[str]] = []
    closes: list[list[tuple[float, int | None]]] = []  # per client: (when, close code) of each loss
    feed: list[float] = []  # when the staff client got a staff-feed message (admin:staff)
    for client, _, _ in fleet.clients:
        ticks.append(got_ticks := [])
        notices.append(got_notices := [])
        closes.append(got_closes := [])
        client.on_event(
            "market_data_update",
            lambda e, got=got_ticks: got.append((e["data"]["symbol"], e["data"]["price"], time.monotonic())),
        )
        client.on_event("server_maintenance", lambda e, got=got_notices: got.append(e["data"]["message"]))
        client.on_status(
            "reconnecting", lambda s, got=got_closes: got.append((time.monotonic(), getattr(s, "code", None)))
        )
    fleet.clients[-1][0].on_event("admin_events", lambda e: feed.append(time.monotonic()))
    prices = itertools.count(100)

    async def market_delivers(symbol: str, clients: list[int], since: float, timeout: float = 15) -> None:
        """Ticks of ``symbol`` posted through a until each of ``clients`` got one after ``since``."""

        async def all_got() -> bool:
            await tick(a, token, symbol, float(next(prices)))
            return all(any(s == symbol and t > since for s, _, t in ticks[i]) for i in clients)

        await until(all_got, timeout=timeout, interval=0.3, what=f"ticks of {symbol} on {len(clients)} sockets")

    everyone = list(range(len(fleet.clients)))
    spared = [i for i, (_, u, _) in enumerate(fleet.clients) if u.pk not in hit]

    async with fleet:
        # 1. the rooms spread over the servers, each group where channels-redis's hash puts it
        groups = [user_room(u.pk).layer_group for u in [*people, staff]]
        groups += ["system", "admin.staff", f"market.{lost_symbol}", f"market.{kept_symbol}"]

        def subscribed() -> list[set[str]]:
            found = []
            for server in layer_servers:
                with redis.Redis(port=server.port, decode_responses=True) as r:
                    found.append(set(r.pubsub_channels(f"{prefix}__group__*")))
            return found

        def placed() -> list[set[str]] | None:
            held = subscribed()
            return held if all(f"{prefix}__group__{g}" in held[shard_of(prefix, g)] for g in groups) else None

        spread = await until(placed, in_thread=True, what="every room subscribed on its own server")
        assert all(spread), [len(s) for s in spread]  # all three servers hold rooms
        assert not set.intersection(*spread)

        # 2. every room kind crosses processes: REST on a, sockets on b
        started = time.monotonic()
        assert await broadcast(a, token, "before") == 201  # user rooms (and the staff feed)
        await fleet.wait_all_beyond([0] * len(fleet.clients), 30)
        await notice(a, token, "maintenance before")  # system
        await until(lambda: all("maintenance before" in got for got in notices), what="the notice on every socket")
        await until(lambda: feed, what="the staff feed on admin:staff")
        for symbol in (lost_symbol, kept_symbol):  # market
            await market_delivers(symbol, everyone, started)

        # 3. the server of the victim's rooms SIGKILLed
        marks = await database_sync_to_async(latest_seqs)([u.pk for u in [*people, staff]])
        await asyncio.to_thread(layer_servers[victim].kill)
        killed = time.monotonic()
        # the sockets of the lost rooms are told to reconnect (4013) once the grace is over
        await until(
            lambda: all(any(code == 4013 for t, code in closes[i] if t > killed) for i in everyone if i not in spared),
            timeout=GRACE + 10,
            what="the lost user rooms' sockets told to reconnect",
        )
        told = time.monotonic() - killed
        # every other room keeps delivering: personal events of users elsewhere, system, admin, market
        assert await broadcast(a, token, "during") == 201
        await until(
            lambda: all(fleet.last()[i] > marks[fleet.clients[i][1].pk] for i in spared),
            timeout=15,
            what="personal events on the sockets whose rooms were not lost",
        )
        await notice(a, token, "maintenance during")
        await until(lambda: all("maintenance during" in notices[i] for i in spared), what="the notice elsewhere")
        fed = len(feed)
        assert await broadcast(a, token, "during 2") == 201
        await until(lambda: len(feed) > fed, what="the staff feed during the outage")
        await market_delivers(kept_symbol, spared, killed)
        assert not [closes[i] for i in spared if closes[i]], "a socket whose rooms were not lost was closed"
        status, ready = await readiness(a)  # degraded, still ready: two of three servers serve their rooms
        assert status == 200 and ready["status"] == "degraded", ready
        assert ready["checks"][f"channelLayer.{victim}"].startswith("error"), ready
        assert [v for k, v in ready["checks"].items() if k != f"channelLayer.{victim}"] == ["ok"] * (SHARDS + 1)
        outage = time.monotonic() - killed

        # 4. back on its port, empty: its rooms recover
        assert await broadcast(a, token, "in the outage") == 201  # logged; the lost rooms cannot have it live
        await asyncio.to_thread(layer_servers[victim].start)
        back = time.monotonic()
        assert await broadcast(a, token, "after") == 201
        late = await database_sync_to_async(latest_seqs)([u.pk for u in [*people, staff]])
        assert all(late[u] > marks[u] for u in late)
        await fleet.wait_all_beyond([late[u.pk] - 1 for _, u, _ in fleet.clients], 20)
        served_again = time.monotonic() - back
        await market_delivers(lost_symbol, everyone, back)  # resubscribed, by the servers and the clients
        resubscribed = time.monotonic() - back
        status, ready = await readiness(b)
        assert status == 200 and ready["status"] == "ready", ready
        total = await fleet.check_exactly_once(timeout=60)

    lost_users = [i for i in everyone if i not in spared]
    print(
        f"\nsharded layer: {SHARDS} Redis servers, 2 daphne processes, {len(fleet.clients)} sockets; "
        f"rooms per server {[len(s) for s in spread]}; server {victim} SIGKILLed for {outage:.1f} s: "
        f"the {len(spared)} sockets whose rooms were elsewhere kept every delivery (personal, system, "
        f"admin, market) and were never closed; the {len(lost_users)} in its user rooms were told to "
        f"reconnect (4013) {told:.1f} s after the kill; once it was back every socket was served again "
        f"{served_again:.1f} s after its restart and the lost market room delivered again in "
        f"{resubscribed:.1f} s; {total} personal events checked against the log: events lost = 0, "
        "duplicates = 0"
    )
    server_is_clean(a)
    server_is_clean(b)
