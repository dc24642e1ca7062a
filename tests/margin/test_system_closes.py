"""System closes leave the position flat and nothing behind (issue 18's reproduced races): the
guard's auto-close and a liquidation first cancel the user's working orders on the instrument, and
close with a reduce-only order whose fills are clamped to the position. Users may place
reduce-only orders too."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from broadcast.models import EventLog
from core.errors import Conflict
from margin.models import Position
from margin.services import margin_guard_config_set
from orders.models import Order, Trade
from tests.conftest import auth_api
from tests.margin.conftest import tick
from tests.orders.factories import execute, place
from tests.polling import until_sync

pytestmark = pytest.mark.django_db


def events(user, type_):
    return [e.payload["data"] for e in EventLog.objects.filter(user=user, type=type_).order_by("seq")]


def test_auto_close_while_the_opening_order_is_still_filling_ends_flat(make_user, instruments):
    user = make_user()
    margin_guard_config_set(user=user, threshold=D("0.85"), action="close_position", cooldown_seconds=300)
    opening = place(user, symbol="BTC_USD", order_type="MARKET", side="BUY", quantity="0.1", price=None, leverage=10)
    execute(opening, "fill", "0.05", "100")  # the venue fills part per step; the rest still works
    tick("BTC_USD", 98)  # the guard fires and closes
    opening.refresh_from_db()
    position = Position.objects.get(user=user, status="open")
    close = position.close_order
    assert opening.order_status == "CANCELLED"  # the rest of the opening order can never fill now
    assert close.reduce_only and close.quantity == D("0.05")
    with pytest.raises(Conflict):
        execute(opening, "fill", "0.05", "98")
    execute(close, "fill", "0.05", "98")
    position.refresh_from_db()
    assert position.status == "closed" and position.close_reason == "margin_guard_auto_close"
    assert not Position.objects.filter(user=user, status="open").exists()
    (reported,) = events(user, "auto_close_execution")
    assert reported["position"]["id"] == position.public_id and reported["position"]["pnl"] == -0.1


def test_liquidation_cancels_a_working_stop_so_it_never_opens_the_other_side(make_user, trade, instruments):
    user = make_user()
    trade(user, "BUY", "1", "100", leverage=10)  # liquidation at ~90.5
    stop = place(user, symbol="BTC_USD", order_type="SL-M", side="SELL", quantity="1", price=None, trigger="95")
    execute(stop, "accept")
    tick("BTC_USD", 85)  # gaps through the liquidation price
    stop.refresh_from_db()
    assert Position.objects.get(user=user).close_reason == "liquidation"
    assert stop.order_status == "CANCELLED"
    with pytest.raises(Conflict):
        execute(stop, "fill", "1", "85")  # the venue cannot trigger it any more
    assert not Position.objects.filter(user=user, status="open").exists()


def test_a_take_profit_left_after_an_auto_close_is_cancelled(make_user, trade, instruments):
    user = make_user()
    margin_guard_config_set(user=user, threshold=D("0.85"), action="close_position", cooldown_seconds=300)
    trade(user, "BUY", "1", "100", leverage=10)
    take_profit = place(user, symbol="BTC_USD", order_type="LIMIT", side="SELL", quantity="1", price="120")
    execute(take_profit, "accept")
    tick("BTC_USD", 98)
    take_profit.refresh_from_db()
    assert take_profit.order_status == "CANCELLED"


def test_a_reduce_only_fill_after_the_position_is_gone_opens_nothing(make_user, trade, instruments):
    """A stale close the venue held while the position closed otherwise: its late fill is clamped
    to nothing, the order cancelled, no short opened."""
    user = make_user()
    trade(user, "BUY", "1", "100", leverage=10)
    stale = place(user, symbol="BTC_USD", order_type="MARKET", side="SELL", quantity="1", price=None, reduce_only=True)
    trade(user, "SELL", "1", "101")  # the position closes through another order
    execute(stale, "fill", "1", "100.5")
    stale.refresh_from_db()
    assert stale.order_status == "CANCELLED" and stale.filled_quantity == 0
    assert not Trade.objects.filter(order=stale).exists()
    assert not Position.objects.filter(user=user, status="open").exists()


def test_a_users_reduce_only_order_is_clamped_to_the_position(make_user, trade, instruments):
    user = make_user()
    trade(user, "BUY", "1", "100", leverage=10)
    api = auth_api(user)
    body = {"tradingSymbol": "BTC_USD", "orderType": "LIMIT", "transactionType": "SELL", "quantity": 3,
            "price": 101, "leverage": 10, "reduceOnly": True}  # fmt: skip
    placed = api.post("/api/orders", body, format="json").json()
    assert placed["orderStatus"] == "PENDING" and placed["reduceOnly"] is True
    assert api.get("/api/account").json()["orderMargin"] == "0.00000000"  # it adds no exposure
    order = Order.objects.get(order_id=placed["orderId"])
    execute(order, "fill", "3", "101")
    order.refresh_from_db()
    assert (order.filled_quantity, order.order_status) == (D(1), "CANCELLED")
    assert not Position.objects.filter(user=user, status="open").exists()


def test_a_reduce_only_order_without_a_position_to_reduce_is_refused(make_user, trade, instruments):
    user = make_user()
    api = auth_api(user)
    body = {"tradingSymbol": "BTC_USD", "orderType": "LIMIT", "transactionType": "SELL", "quantity": 1,
            "price": 101, "leverage": 10, "reduceOnly": True}  # fmt: skip
    refused = api.post("/api/orders", body, format="json")
    assert refused.status_code == 400 and "reduceOnly" in refused.json()["fields"], refused.json()
    trade(user, "SELL", "1", "100")  # a short: a reduce-only SELL would add to it
    assert api.post("/api/orders", body, format="json").status_code == 400
    assert not Order.objects.filter(user=user, reduce_only=True).exists()


def test_close_all_closes_every_open_position_with_reduce_only_orders(make_user, trade, instruments):
    user = make_user()
    trade(user, "BUY", "1", "40000")
    trade(user, "SELL", "2", "626", symbol="SBIN-EQ", leverage=2)
    api = auth_api(user)
    answer = api.post("/api/positions/close-all")
    assert answer.status_code == 202
    closing = answer.json()["closing"]
    assert len(closing) == 2 and all(c["order"]["reduceOnly"] for c in closing)
    again = api.post("/api/positions/close-all").json()  # the closes are still working
    assert again["closing"] == [] and {f["code"] for f in again["failed"]} == {"close_pending"}
    for c in closing:
        execute(Order.objects.get(order_id=c["order"]["orderId"]), "fill", c["order"]["quantity"], "100")
    assert not Position.objects.filter(user=user, status="open").exists()
    assert D(0) not in {p.quantity for p in Position.objects.filter(user=user)}


@pytest.mark.django_db(transaction=True)
def test_a_stop_the_venue_holds_during_a_liquidation_is_cancelled_once_it_is_let_go(make_user, trade, instruments):
    import threading

    from django.db import connection, transaction

    from orders.services import order_lock

    user = make_user()
    trade(user, "BUY", "1", "100", leverage=10)
    stop = place(user, symbol="BTC_USD", order_type="SL-M", side="SELL", quantity="1", price=None, trigger="95")
    held, done = threading.Event(), threading.Event()

    def venue_holds_it() -> None:  # the venue's step, holding the stop's row lock until the close committed
        try:
            with transaction.atomic():
                order_lock(stop.order_id)
                held.set()
                until_sync(lambda: Position.objects.filter(user=user, status="closed").exists(), what="the close")
        finally:
            connection.close()
            done.set()

    threading.Thread(target=venue_holds_it, daemon=True).start()
    assert held.wait(30)
    tick("BTC_USD", 85)  # gaps through the liquidation price: liquidated; the stop is skipped, then withdrawn
    assert done.wait(30)
    stop.refresh_from_db()
    assert stop.order_status == "CANCELLED"
    assert not Position.objects.filter(user=user, status="open").exists()


def test_a_short_opened_at_the_order_size_cap_is_liquidated_once_the_price_takes_it_past(make_user, trade, instruments):
    # Outside review (twelfth session): the liquidation's own order met the notional cap at the
    # higher last price, was refused on every tick, and the position ran on past its liquidation
    # price with the loss beyond its margin the broker's.
    from ledger.models import LedgerEntry

    user = make_user(tier="enterprise")  # 100x
    tick("BTC_USD", 40000)
    trade(user, "SELL", "2500", "40000", leverage=100)  # notional 100,000,000: the cap, allowed
    position = Position.objects.get(user=user, status="open")
    assert position.liquidation_price == D("40200")
    tick("BTC_USD", 40300)  # past it: liquidated now, its close 2,500 × 40,300 above the cap
    position.refresh_from_db()
    assert position.status == "closed" and position.close_reason == "liquidation"
    assert position.close_order.quantity == D("2500") and position.close_order.order_status == "COMPLETE"
    # filled at the market that crossed (2,500 × 300 against 40,000), inside the 1,000,000 margin
    assert LedgerEntry.objects.get(user=user, kind="liquidation").amount == -750000
    assert position.uncovered_loss == 0


def test_a_position_larger_than_one_order_may_be_closes_with_one_order(make_user, trade, instruments):
    user = make_user()
    tick("BTC_USD", 40000)
    trade(user, "BUY", "2000", "40000")
    trade(user, "BUY", "2000", "40000")  # 80,000,000 each, the position 160,000,000
    api = auth_api(user)
    # an order of the user's own, reduce-only or not, still meets the cap
    refused = api.post(
        "/api/orders",
        {
            "tradingSymbol": "BTC_USD",
            "orderType": "MARKET",
            "transactionType": "SELL",
            "quantity": "4000",
            "reduceOnly": True,
        },
        format="json",
    )
    assert refused.status_code == 400 and "quantity" in refused.json()["fields"]
    position = Position.objects.get(user=user, status="open")
    answer = api.post(f"/api/positions/{position.public_id}/close")
    assert answer.status_code == 202, answer.json()
    close = Order.objects.get(order_id=answer.json()["order"]["orderId"])
    assert close.quantity == D("4000") and close.reduce_only
    execute(close, "fill", "4000", "40000")
    assert not Position.objects.filter(user=user, status="open").exists()


def _someone_waits_on_a_lock() -> bool:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] > 0


def _placement_racing(user, system_step) -> dict[str, BaseException]:
    """A placement of the user's that holds the account (as ``order_submit`` takes it first) while
    ``system_step`` runs on another connection; once that step waits on a lock, the placement goes
    on (its ORDER_PLACED takes the user's event sequence) and commits. Returns what each raised."""
    import threading

    from django.db import connection, transaction

    from ledger.services import account_lock
    from margin.account import order_submit

    errors: dict[str, BaseException] = {}
    holding = threading.Event()

    def place_() -> None:
        try:
            with transaction.atomic():
                account_lock(user.pk)
                holding.set()
                until_sync(_someone_waits_on_a_lock, what="the system step to wait on a lock")
                order_submit(
                    user=user,
                    trading_symbol="ETH_USD",
                    exchange=None,
                    order_type="MARKET",
                    transaction_type="BUY",
                    quantity=D("0.01"),
                    leverage=1,
                )
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            errors["placement"] = exc
        finally:
            connection.close()

    def step() -> None:
        try:
            assert holding.wait(30)
            system_step()
        except BaseException as exc:  # noqa: BLE001
            errors["system"] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=place_), threading.Thread(target=step)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return errors


@pytest.mark.django_db(transaction=True)
def test_a_liquidation_racing_a_placement_of_the_same_user_does_not_deadlock(make_user, trade, instruments):
    # Outside review (twelfth session): the liquidation published (the user's event sequence)
    # before its ledger entries locked the account, the reverse of a placement's order: PostgreSQL
    # found the deadlock and aborted one of them (the whole tick ingest, or the user's order).
    user = make_user()
    tick("BTC_USD", 100)
    trade(user, "BUY", "1", "100", leverage=10)  # liquidation at 90.5
    assert _placement_racing(user, lambda: tick("BTC_USD", 96, 91, 90)) == {}
    assert Position.objects.get(user=user, instrument__symbol="BTC_USD").close_reason == "liquidation"
    assert Order.objects.filter(user=user, instrument__symbol="ETH_USD").exists()


@pytest.mark.django_db(transaction=True)
def test_a_fill_that_makes_a_close_order_stale_racing_a_placement_does_not_deadlock(make_user, trade, instruments):
    # The same inversion on a fill: closing the position withdrew the user's still-working close
    # order (publishing) before the fill's money locked the account.
    from margin.services import position_close

    user = make_user()
    trade(user, "BUY", "1", "100", leverage=10)
    position = Position.objects.get(user=user, status="open")
    stale = position_close(position=position)  # the user's close, still working
    other = place(user, symbol="BTC_USD", order_type="MARKET", side="SELL", quantity="1", price=None)
    assert _placement_racing(user, lambda: execute(other, "fill", "1", "100")) == {}
    stale.refresh_from_db()
    assert stale.order_status == "CANCELLED"
    assert Position.objects.get(pk=position.pk).status == "closed"


@pytest.mark.django_db(transaction=True)
def test_two_ingests_liquidating_the_same_two_users_in_opposite_order_do_not_deadlock(make_user, trade, instruments):
    # An ingest of one instrument liquidated its positions in their rows' order, locking each
    # user's account and event sequence as it went: two instruments' ingests that reached the same
    # two users in opposite orders deadlocked. Here a placement holds user a's account; the ETH
    # ingest (a's position first) waits for it, then the BTC ingest (b's position first) starts:
    # before the fix it took b's account and waited for a's, and once the placement let go the
    # ETH ingest, next in line for a's account, then waited for b's.
    import threading

    from django.db import connection, transaction

    from ledger.services import account_lock

    a, b = make_user(), make_user()
    tick("BTC_USD", 100)
    tick("ETH_USD", 100)
    trade(b, "BUY", "1", "100", leverage=10)  # BTC: b's row first
    trade(a, "BUY", "1", "100", leverage=10)
    trade(a, "BUY", "1", "100", symbol="ETH_USD", leverage=10)  # ETH: a's row first
    trade(b, "BUY", "1", "100", symbol="ETH_USD", leverage=10)
    assert a.pk < b.pk
    holding, release = threading.Event(), threading.Event()
    errors: dict[str, BaseException] = {}

    def waiting(n: int) -> bool:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            return cursor.fetchone()[0] >= n

    def run(name, body) -> threading.Thread:
        def target() -> None:
            try:
                body()
            except BaseException as exc:  # noqa: BLE001 - reported to the test
                errors[name] = exc
            finally:
                connection.close()

        thread = threading.Thread(target=target)
        thread.start()
        return thread

    def placement() -> None:
        with transaction.atomic():
            account_lock(a.pk)
            holding.set()
            assert release.wait(30)

    threads = [run("placement", placement)]
    assert holding.wait(30)
    threads.append(run("eth", lambda: tick("ETH_USD", 96, 91, 90)))
    until_sync(lambda: waiting(1), what="the ETH ingest to wait for a's account")
    threads.append(run("btc", lambda: tick("BTC_USD", 96, 91, 90)))
    until_sync(lambda: waiting(2), what="the BTC ingest to wait too")
    release.set()
    for thread in threads:
        thread.join(60)
    assert errors == {}
    assert set(Position.objects.filter(user__in=[a, b]).values_list("close_reason", flat=True)) == {"liquidation"}


def test_close_all_of_one_symbol_and_bodies_it_does_not_know(make_user, trade, instruments):
    # Outside probe (twelfth session): close-all ignored its body, so {"symbol": "NOPE"} closed
    # every position. It takes cancel-all's {"symbol"} now, and refuses what it does not know.
    user = make_user()
    trade(user, "BUY", "1", "40000")
    trade(user, "SELL", "2", "626", symbol="SBIN-EQ", leverage=2)
    api = auth_api(user)
    for body, field in (({"symbol": "NOPE"}, "symbol"), ({"symbols": ["BTC_USD"]}, "symbols")):
        refused = api.post("/api/positions/close-all", body, format="json")
        assert refused.status_code == 400 and field in refused.json()["fields"], refused.json()
        refused = api.post("/api/orders/cancel-all", body, format="json")
        assert refused.status_code == 400 and field in refused.json()["fields"], refused.json()
    assert not Order.objects.filter(user=user, reduce_only=True).exists()  # nothing was closed
    answer = api.post("/api/positions/close-all", {"symbol": "SBIN-EQ"}, format="json")
    assert answer.status_code == 202
    (closing,) = answer.json()["closing"]
    assert closing["order"]["tradingSymbol"] == "SBIN-EQ"


def test_an_auto_close_the_position_outgrew_closes_what_is_left(make_user, trade, instruments):
    # Outside review (twelfth session): an opening order the venue held when the guard fired could
    # not be withdrawn, and its fill after the close was placed left the position larger than the
    # close: the close filled, the rest stayed open, and the guard was disarmed. Now the filled
    # close is followed by another for what is left.
    from margin.services import position_close

    user = make_user()
    trade(user, "BUY", "0.05", "100")
    position = Position.objects.get(user=user, status="open")
    first = position_close(position=position, kind="margin_guard_auto_close")
    trade(user, "BUY", "0.05", "100")  # the held opening order's fill, after the close was placed
    execute(first, "fill", "0.05", "99")
    position.refresh_from_db()
    assert position.status == "open" and position.quantity == D("0.05")
    second = position.close_order
    assert second.pk != first.pk and second.reduce_only and second.quantity == D("0.05")
    assert second.order_status in ("PENDING", "OPEN")
    execute(second, "fill", "0.05", "99")
    position.refresh_from_db()
    assert position.status == "closed" and position.close_reason == "margin_guard_auto_close"
    assert not Position.objects.filter(user=user, status="open").exists()


def test_a_users_own_close_the_position_outgrew_is_not_repeated(make_user, trade, instruments):
    from margin.services import position_close

    user = make_user()
    trade(user, "BUY", "0.05", "100")
    position = Position.objects.get(user=user, status="open")
    close = position_close(position=position)  # the user's own close
    trade(user, "BUY", "0.05", "100")  # the user adds meanwhile: that is the user's to decide
    execute(close, "fill", "0.05", "99")
    position.refresh_from_db()
    assert position.status == "open" and position.quantity == D("0.05") and position.close_order_id == close.pk
