"""Market data: ingest, candles, snapshots, rooms, conflation, price alerts, REST."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from channels.db import database_sync_to_async
from django.core.exceptions import ValidationError

from broadcast.models import EventLog
from margin.ticks import ticks_ingest
from market.models import Candle, MarketState, PriceAlert, Tick
from market.services import price_alert_create
from notifications.models import Notification
from tests.conftest import auth_api, connected, jwt_for

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("instruments")]


def at(text: str) -> str:
    """An ISO time of two days ago ("09:59:30"): in the past, inside the backfill window."""
    day = (datetime.now(UTC) - timedelta(days=2)).date()
    return datetime.fromisoformat(f"{day}T{text}").replace(tzinfo=UTC).isoformat()


def test_ingest_validation_is_all_or_nothing():
    good = {"symbol": "BTC_USD", "price": 43000, "volume": 1}
    for bad in (
        [good, {"symbol": "NOPE", "price": 1, "volume": 1}],
        [good, {"symbol": "BTC_USD", "price": 0, "volume": 1}],
        [good, {"symbol": "BTC_USD", "price": -5, "volume": 1}],
        [good, {"symbol": "BTC_USD", "price": "abc", "volume": 1}],
        [good, {"symbol": "BTC_USD", "price": "NaN", "volume": 1}],
        [good, {"symbol": "BTC_USD", "price": 1e300, "volume": 1}],
        [good, {"symbol": "BTC_USD", "price": True, "volume": 1}],
        [good, {"symbol": "BTC_USD", "price": 1, "volume": -1}],
        [good, {"symbol": "BTC_USD", "price": 1, "volume": 1, "timestamp": "yesterday"}],
        [good, {"symbol": "BTC_USD", "price": 1, "volume": 1, "timestamp": "2024-01-01T12:99:00Z"}],  # a 500 once
        [good, "tick"],
        [],
        "not a list",
    ):
        with pytest.raises(ValidationError):
            ticks_ingest(bad)
    assert Tick.objects.count() == MarketState.objects.count() == Candle.objects.count() == 0


def test_candles_roll_over_at_boundaries_and_snapshot_tracks_24h():
    ticks = [
        {"symbol": "SBIN-EQ", "price": "600", "volume": "10", "timestamp": at("09:59:30")},
        {"symbol": "SBIN-EQ", "price": "610", "volume": "5", "timestamp": at("09:59:59")},
        {"symbol": "SBIN-EQ", "price": "605", "volume": "1", "timestamp": at("10:00:00")},
        {"symbol": "SBIN-EQ", "price": "590", "volume": "2", "timestamp": at("10:04:59")},
    ]
    ticks_ingest(ticks)
    m1 = list(
        Candle.objects.filter(timeframe="1m").order_by("start").values_list("open", "high", "low", "close", "volume")
    )
    assert [tuple(map(float, c)) for c in m1] == [
        (600, 610, 600, 610, 15),
        (605, 605, 605, 605, 1),
        (590, 590, 590, 590, 2),
    ]
    h1 = Candle.objects.filter(timeframe="1h").order_by("start")
    assert [c.start.hour for c in h1] == [9, 10] and float(h1[1].high) == 605 and float(h1[1].low) == 590
    m5 = Candle.objects.filter(timeframe="5m").order_by("start")
    assert [c.start.minute for c in m5] == [55, 0] and float(m5[1].volume) == 3
    d1 = Candle.objects.get(timeframe="1d")
    assert (float(d1.open), float(d1.high), float(d1.low), float(d1.close), float(d1.volume)) == (
        600,
        610,
        590,
        590,
        18,
    )
    state = MarketState.objects.get(instrument__symbol="SBIN-EQ")
    assert (float(state.price), float(state.high24h), float(state.low24h), float(state.volume)) == (590, 610, 590, 18)
    assert float(state.change) == -10 and float(state.change_percent) == pytest.approx(-1.6667, abs=1e-4)


def test_rest_market_endpoints(make_user, settings):
    api = auth_api(make_user("m"))
    symbols = [i["symbol"] for i in api.get("/api/market/instruments").json()]
    assert symbols == ["BTC_USD", "ETH_USD", "RELIANCE-EQ", "SBIN-EQ"]
    assert api.get("/api/market/BTC_USD").status_code == 404  # no ticks yet
    ticks_ingest([{"symbol": "BTC_USD", "price": "43250.5", "volume": "2"}])
    snap = api.get("/api/market/BTC_USD").json()
    assert snap["symbol"] == "BTC_USD" and snap["price"] == 43250.5 and snap["timestamp"].endswith("Z")
    assert set(snap) == {"symbol", "price", "change", "changePercent", "volume", "high24h", "low24h", "timestamp"}
    candles = api.get("/api/market/BTC_USD/candles?timeframe=1m").json()
    assert candles["timeframe"] == "1m" and candles["candles"][0]["close"] == 43250.5
    assert set(candles["candles"][0]) == {"time", "open", "high", "low", "close", "volume"}
    assert api.get("/api/market/BTC_USD/candles?timeframe=7m").status_code == 400
    assert api.get("/api/market/BTC_USD/candles?timeframe=1h&from=garbage").status_code == 400
    assert api.get("/api/market/NOPE/candles?timeframe=1h").status_code == 404


def test_ticks_api_staff_or_service_key(make_user, api, settings):
    body = [{"symbol": "ETH_USD", "price": 2301.5, "volume": 3}]
    assert auth_api(make_user("u")).post("/api/internal/ticks", body, format="json").status_code == 403
    staff = auth_api(make_user("s", superuser=True))
    assert staff.post("/api/internal/ticks", body, format="json").status_code == 202
    bad = staff.post("/api/internal/ticks", [*body, {"symbol": "ETH_USD", "price": -1, "volume": 1}], format="json")
    assert bad.status_code == 400 and "1.price" in bad.json()["fields"]
    assert Tick.objects.count() == 1
    settings.AXISOR_SERVICE_KEY = "feed-key"
    assert api.post("/api/internal/ticks", body, format="json", HTTP_X_SERVICE_KEY="feed-key").status_code == 202


@pytest.mark.parametrize(
    ("condition", "threshold", "path", "fires_at"),
    [
        ("above", "100", ["95", "99", "101", "102", "103"], 2),
        ("below", "100", ["105", "101", "99", "98", "97"], 2),
        ("crosses", "100", ["95", "99", "101", "99", "102"], 2),  # upwards
        ("crosses", "100", ["105", "101", "99", "101", "98"], 2),  # downwards
    ],
)
def test_alert_fires_once(make_user, condition, threshold, path, fires_at):
    user = make_user("alerts")
    alert = price_alert_create(user=user, symbol="SBIN-EQ", condition=condition, price=Decimal(threshold), note="watch")
    for i, price in enumerate(path):
        ticks_ingest([{"symbol": "SBIN-EQ", "price": price, "volume": "1"}])
        alert.refresh_from_db()
        assert alert.active == (i < fires_at), (i, price)
    assert float(alert.triggered_price) == float(path[fires_at])
    events = [e.payload for e in EventLog.objects.filter(user=user, type="price_alert")]
    assert len(events) == 1 and events[0]["channel"] == "alerts"
    data = events[0]["data"]
    assert data["id"] == str(alert.pk) and data["symbol"] == "SBIN-EQ" and data["condition"] == condition
    assert data["price"] == float(threshold) and data["currentPrice"] == float(path[fires_at]) and data["triggeredAt"]
    assert Notification.objects.filter(user=user, category="price_alert").count() == 1


def test_alert_rest_is_owner_only(make_user):
    owner, other = auth_api(make_user("o")), auth_api(make_user("x"))
    resp = owner.post("/api/price-alerts", {"symbol": "BTC_USD", "condition": "above", "price": 50000}, format="json")
    assert resp.status_code == 201
    aid = resp.json()["id"]
    assert owner.get("/api/price-alerts").json()["count"] == 1
    assert other.get("/api/price-alerts").json()["count"] == 0
    assert other.get(f"/api/price-alerts/{aid}").status_code == 404
    assert other.delete(f"/api/price-alerts/{aid}").status_code == 404
    assert owner.patch(f"/api/price-alerts/{aid}", {"price": 51000}, format="json").json()["price"] == 51000
    bad = owner.post("/api/price-alerts", {"symbol": "BTC_USD", "condition": "sideways", "price": 1}, format="json")
    assert bad.status_code == 400 and "condition" in bad.json()["fields"]
    assert (
        owner.post("/api/price-alerts", {"symbol": "NOPE", "condition": "above", "price": 1}, format="json").status_code
        == 400
    )
    ticks_ingest([{"symbol": "BTC_USD", "price": "52000", "volume": "1"}])
    assert owner.patch(f"/api/price-alerts/{aid}", {"price": 53000}, format="json").status_code == 409
    assert owner.delete(f"/api/price-alerts/{aid}").status_code == 204
    assert PriceAlert.objects.count() == 0


@pytest.mark.django_db(transaction=True)
async def test_subscribe_gets_snapshot_and_updates_only_in_room(make_user):
    await database_sync_to_async(ticks_ingest)([{"symbol": "ETH_USD", "price": "2300", "volume": "1"}])
    inside = await database_sync_to_async(make_user)("in")
    outside = await database_sync_to_async(make_user)("out")
    sub, _ = await connected(jwt_for(inside))
    other, _ = await connected(jwt_for(outside))
    await sub.send_json_to({"type": "subscribe", "channel": "market:ETH_USD"})
    assert (await sub.receive_json_from())["type"] == "room_subscription"
    snap = await sub.receive_json_from()
    assert snap["type"] == "market_data_update" and snap["channel"] == "market_data" and snap["data"]["price"] == 2300
    await database_sync_to_async(ticks_ingest)([{"symbol": "ETH_USD", "price": "2310", "volume": "1"}])
    kinds = set()
    while "market_data_update" not in kinds:
        msg = await sub.receive_json_from(timeout=5)
        kinds.add(msg["type"])
        if msg["type"] == "market_data_update":
            assert msg["data"]["price"] == 2310
    assert await other.receive_nothing(timeout=0.5)
    await sub.disconnect()
    await other.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_burst_is_conflated_to_the_rate_and_ends_on_the_latest(make_user, settings):
    settings.AXISOR_MARKET = {**settings.AXISOR_MARKET, "UPDATES_PER_SECOND": 5.0}
    user = await database_sync_to_async(make_user)("burst")
    comm, _ = await connected(jwt_for(user))
    await comm.send_json_to({"type": "subscribe", "channel": "market:BTC_USD"})
    await comm.receive_json_from()
    prices = [43000 + i for i in range(60)]
    loop = asyncio.get_running_loop()
    start = loop.time()
    for price in prices:  # 60 ticks as fast as the database takes them
        await database_sync_to_async(ticks_ingest)([{"symbol": "BTC_USD", "price": str(price), "volume": "1"}])
    burst = loop.time() - start
    got = []
    while not got or got[-1] != prices[-1]:
        msg = await comm.receive_json_from(timeout=5)
        if msg["type"] == "market_data_update":
            got.append(msg["data"]["price"])
    elapsed = loop.time() - start
    assert got[-1] == prices[-1]
    assert got == sorted(got)  # in order, never an older price after a newer one
    assert len(got) <= 5 * elapsed + 1, (len(got), elapsed, burst)
    assert len(got) < len(prices)
    await comm.disconnect()


def test_prices_people_read_follow_the_tick_size(make_user):
    from market.models import Instrument, decimal_text

    cents = Instrument(tick_size=Decimal("0.01"))
    assert cents.price_text(Decimal("4.332E+4")) == "43,320.00"  # never scientific notation
    assert cents.price_text(Decimal("43320.505")) == "43,320.50"  # to the tick
    assert Instrument.objects.get(symbol="BTC_USD").tick_size == Decimal("0.5")
    assert Instrument(tick_size=Decimal("0.5")).price_text(Decimal("1250")) == "1,250.0"
    assert Instrument(tick_size=Decimal("1E+1")).price_text(Decimal("1234567")) == "1,234,567"
    assert decimal_text(-1249.5) == "-1,249.50"
    user = make_user("reader")
    price_alert_create(user=user, symbol="BTC_USD", condition="above", price=Decimal("4.4E+4"))
    ticks_ingest([{"symbol": "BTC_USD", "price": "44250.5", "volume": "1"}])
    note = Notification.objects.get(user=user, category="price_alert")
    assert (note.title, note.message) == ("BTC_USD above 44,000.0", "BTC_USD is at 44,250.5")


def test_a_seeded_feed_walks_the_same_way_every_start(settings):
    from jobs.schedule import Simulator

    def first_ticks(seed) -> list[list[dict]]:
        settings.MARKET_FEED_SEED = seed
        simulator = Simulator(feed=True)
        simulator.step()  # makes the feed as the worker does, from the prices in the database
        ticks = [simulator.feed.ticks() for _ in range(3)]
        MarketState.objects.all().delete()  # the next start begins from the reference prices again
        return ticks

    assert first_ticks(43) == first_ticks(43)
    assert first_ticks(43) != first_ticks(44)


@pytest.mark.parametrize("first", [True, False])
def test_the_state_row_keeps_the_version_its_update_carries(first):
    """Each ingest stamps the symbol's state with the database's clock under the row's lock, and
    its live update carries the same stamp (a snapshot on subscribe compares the two). A symbol's
    first tick had no row to lock: stamped again once its upsert holds the new row."""
    from broadcast.messages import db_clock
    from market.signals import market_changed

    if not first:
        ticks_ingest([{"symbol": "BTC_USD", "price": "100", "volume": "1"}])
    carried: list[float] = []

    def heard(sender, state, candles, version, **kwargs) -> None:
        carried.append(version)

    market_changed.connect(heard)
    try:
        before = db_clock()
        ticks_ingest([{"symbol": "BTC_USD", "price": "101", "volume": "1"}])
    finally:
        market_changed.disconnect(heard)
    stored = MarketState.objects.get(instrument__symbol="BTC_USD").version
    assert carried == [stored] and before <= stored <= db_clock()


@pytest.mark.parametrize(
    ("tick", "field", "says"),
    [
        ({"price": 5e-324}, "0.price", "tick size"),  # prints as 0, a candle with a low of 0
        ({"price": "0.001"}, "0.price", "tick size"),
        ({"price": "2_300"}, "0.price", "must be a number"),  # Decimal reads 2300 (the diff review)
        ({"price": "\u0662\u0663\u0660\u0660"}, "0.price", "must be a number"),  # Arabic-Indic 2300
        ({"price": 2300, "timestamp": "0001-01-01T00:00:00Z"}, "0.timestamp", "older than 7 days"),
        ({"price": 2300, "timestamp": "2000-01-01T00:00:00Z"}, "0.timestamp", "older than 7 days"),
    ],
)
def test_a_tick_below_one_tick_or_older_than_the_backfill_window_is_refused(make_user, tick, field, says):
    # Outside probe (twelfth session): both were taken (202) and made candles at year 1 or a low of 0.
    staff = auth_api(make_user("s2", superuser=True))
    bad = staff.post("/api/internal/ticks", [{"symbol": "ETH_USD", "volume": 1, **tick}], format="json")
    assert bad.status_code == 400 and says in bad.json()["fields"][field][0]["message"], bad.json()
    assert not Tick.objects.exists()
