"""Exchange sessions and time in force, on a clock the test controls: NSE trades 09:15-15:30 India
time on weekdays; regular orders only in the session, after-market orders only outside it (they open
at the next open); DAY orders expire at the session's end, GTC ones do not; IOC cancels what it
could not fill at once; nothing fills on a closed exchange."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal as D
from zoneinfo import ZoneInfo

import pytest

from margin.venue import PaperVenue
from market import sessions
from orders.models import Order
from tests.conftest import auth_api

pytestmark = pytest.mark.django_db

IST = ZoneInfo("Asia/Kolkata")
MONDAY_10 = datetime(2026, 12, 7, 10, 0, tzinfo=IST)


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


class Prices:
    def __init__(self, **prices: str) -> None:
        self.prices = {k.replace("__", "-"): D(v) for k, v in prices.items()}

    def latest(self, symbol: str) -> D | None:
        return self.prices.get(symbol)


@pytest.fixture
def clock(settings, monkeypatch) -> Clock:
    settings.AXISOR_MARKET = {**settings.AXISOR_MARKET, "SESSIONS": True}
    at = Clock(MONDAY_10)
    monkeypatch.setattr(sessions, "clock", at)
    return at


def body(**kw) -> dict:
    return {"tradingSymbol": "SBIN-EQ", "orderType": "LIMIT", "transactionType": "BUY", "quantity": 1,
            "price": 600, **kw}  # fmt: skip


def test_the_nse_session_in_india_time():
    nse = sessions.SESSIONS["NSE"]
    assert nse.is_open(MONDAY_10)
    assert not nse.is_open(MONDAY_10.replace(hour=9, minute=14)) and nse.is_open(MONDAY_10.replace(hour=9, minute=15))
    assert not nse.is_open(MONDAY_10.replace(hour=15, minute=30))
    saturday = datetime(2026, 12, 12, 11, 0, tzinfo=IST)
    assert not nse.is_open(saturday)
    friday_evening = datetime(2026, 12, 11, 16, 0, tzinfo=IST)
    assert nse.next_open(friday_evening) == datetime(2026, 12, 14, 9, 15, tzinfo=IST)
    assert nse.close_after(MONDAY_10) == MONDAY_10.replace(hour=15, minute=30)
    assert nse.close_after(friday_evening) == datetime(2026, 12, 14, 15, 30, tzinfo=IST)


def test_regular_orders_in_the_session_after_market_orders_outside_it(make_user, instruments, clock):
    api = auth_api(make_user())
    assert api.post("/api/orders", body(), format="json").status_code == 201
    refused = api.post("/api/orders", body(amo=True), format="json")
    assert refused.status_code == 400 and "session is open" in str(refused.json()["fields"]["amo"])
    clock.at = MONDAY_10.replace(hour=18)
    closed = api.post("/api/orders", body(), format="json")
    assert closed.status_code == 400 and "place an after-market order" in str(closed.json()["fields"]["amo"])
    assert api.post("/api/orders", body(amo=True), format="json").status_code == 201
    assert api.post("/api/orders", body(tradingSymbol="BTC_USD", price=40000), format="json").status_code == 201


def test_an_after_market_order_opens_at_the_next_session(make_user, instruments, clock):
    clock.at = MONDAY_10.replace(hour=18)
    placed = auth_api(make_user()).post("/api/orders", body(amo=True, validity="GTC"), format="json").json()
    venue = PaperVenue(Prices(SBIN__EQ="650"))
    venue.step()
    venue.step()
    order = Order.objects.get(order_id=placed["orderId"])
    assert order.order_status == "PENDING"  # the exchange is closed: nothing happens
    clock.at = datetime(2026, 12, 8, 9, 15, tzinfo=IST)
    venue.step()
    venue.step()
    order.refresh_from_db()
    assert order.order_status == "OPEN"


def test_day_orders_expire_at_the_end_of_the_session_gtc_orders_stay(make_user, instruments, clock):
    api = auth_api(make_user())
    day = api.post("/api/orders", body(), format="json").json()
    gtc = api.post("/api/orders", body(validity="GTC"), format="json").json()
    assert (day["validity"], gtc["validity"]) == ("DAY", "GTC")
    venue = PaperVenue(Prices(SBIN__EQ="650"))
    venue.step()
    clock.at = MONDAY_10.replace(hour=15, minute=30)
    venue.step()
    expired, kept = (Order.objects.get(order_id=o["orderId"]) for o in (day, gtc))
    assert expired.order_status == "CANCELLED"
    assert expired.rejection_reason == "expired at the end of the NSE session (DAY)"
    assert kept.order_status == "OPEN"


def test_nothing_fills_on_a_closed_exchange(make_user, instruments, clock):
    api = auth_api(make_user())
    placed = api.post("/api/orders", body(validity="GTC"), format="json").json()
    prices = Prices(SBIN__EQ="650")
    venue = PaperVenue(prices)
    venue.step()
    clock.at = MONDAY_10.replace(hour=20)
    prices.prices["SBIN-EQ"] = D("590")  # crosses the limit while the exchange is closed
    venue.step()
    order = Order.objects.get(order_id=placed["orderId"])
    assert order.order_status == "OPEN" and order.filled_quantity == 0
    clock.at = datetime(2026, 12, 8, 9, 15, tzinfo=IST)
    venue.step()
    order.refresh_from_db()
    assert order.order_status == "COMPLETE"


def test_ioc_cancels_what_it_could_not_fill_at_once(make_user, instruments, clock):
    api = auth_api(make_user())
    resting = api.post("/api/orders", body(validity="IOC"), format="json").json()  # not marketable at 650
    big = api.post(
        "/api/orders", body(orderType="MARKET", price=None, quantity=120, validity="IOC"), format="json"
    ).json()
    PaperVenue(Prices(SBIN__EQ="650")).step()
    unfilled, partly = (Order.objects.get(order_id=o["orderId"]) for o in (resting, big))
    assert unfilled.order_status == "CANCELLED" and unfilled.filled_quantity == 0
    assert unfilled.rejection_reason == "IOC: nothing could be filled at once"
    assert partly.order_status == "CANCELLED" and partly.filled_quantity == 50  # one step's liquidity
    stop = api.post("/api/orders", body(orderType="SL-M", price=None, triggerPrice=700, validity="IOC"), format="json")
    assert stop.status_code == 400 and "validity" in stop.json()["fields"]


def test_around_the_clock_day_orders_expire_at_midnight_utc(make_user, instruments, clock):
    placed = (
        auth_api(make_user())
        .post("/api/orders", body(tradingSymbol="BTC_USD", price=40000, validity="DAY"), format="json")
        .json()
    )
    order = Order.objects.get(order_id=placed["orderId"])
    assert order.expires_at == datetime(2026, 12, 8, 0, 0, tzinfo=ZoneInfo("UTC"))


def test_exchange_holidays_close_the_session_and_move_the_next_open(make_user, instruments, clock, settings):
    nse = sessions.SESSIONS["NSE"]
    christmas = datetime(2026, 12, 25, 10, 0, tzinfo=IST)  # a Friday: a fixed-date holiday every year
    assert not nse.is_open(christmas)
    assert nse.next_open(datetime(2026, 12, 24, 16, 0, tzinfo=IST)) == datetime(2026, 12, 28, 9, 15, tzinfo=IST)
    # a festival holiday listed by operators (MARKET_HOLIDAYS_NSE): Monday the 7th
    fixed, _ = settings.AXISOR_HOLIDAYS["NSE"]
    settings.AXISOR_HOLIDAYS = {"NSE": (fixed, frozenset({MONDAY_10.date()}))}
    assert not nse.is_open(MONDAY_10)
    assert nse.next_open(MONDAY_10) == datetime(2026, 12, 8, 9, 15, tzinfo=IST)
    api = auth_api(make_user())
    closed = api.post("/api/orders", body(), format="json")
    assert closed.status_code == 400 and "place an after-market order" in str(closed.json()["fields"]["amo"])
    assert api.post("/api/orders", body(amo=True), format="json").status_code == 201  # opens on the 8th
