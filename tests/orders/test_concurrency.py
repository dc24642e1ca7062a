"""Races on the real PostgreSQL, with real threads started together at a barrier: one
Idempotency-Key posted many times at once, a cancel racing a fill, a modify racing a fill, fills
and execution reports racing each other, and two orders' changes on one instrument.

Each race must end as if the calls had run one after the other in some order: the outcomes (ok,
Conflict, ValidationError), the final row and the update history must be those of one of the serial
orders, as the state-machine model in test_statemachine.py computes them; and every invariant holds.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, OperationalError, connection, transaction
from rest_framework.test import APIClient

from core.errors import Conflict
from orders.models import IdempotencyKey, Order, OrderStatus
from orders.services import order_accept, order_cancel, order_modify
from tests.conftest import jwt_for
from tests.orders.factories import execute, place
from tests.orders.test_statemachine import (
    Expected,
    assert_order_consistent,
    assert_user_events_consistent,
    expect_cancel,
    expect_fill,
    expect_modify,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("instruments")]

BODY = {"tradingSymbol": "SBIN-EQ", "orderType": "LIMIT", "transactionType": "BUY", "quantity": 10, "price": 625.5}
FILL_PRICE = Decimal("625.50")
RACES = 20
_execs = itertools.count(1)


# ---- plumbing ------------------------------------------------------------------------------------


def race(*calls: Callable[[], object], timeout: float = 60) -> list[object]:
    """Run the calls in threads released together by a barrier; return their results in order.
    An exception in a thread is re-raised here. Each thread closes its own DB connection."""
    barrier = threading.Barrier(len(calls), timeout=timeout)
    results: list[object] = [None] * len(calls)
    errors: list[BaseException | None] = [None] * len(calls)

    def run(i: int, call: Callable[[], object]) -> None:
        try:
            connection.ensure_connection()  # connect first, so the calls themselves start together
            barrier.wait()
            results[i] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread below
            errors[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, call), name=f"race-{i}") for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(t.is_alive() for t in threads), "a racing thread is still running (deadlock?)"
    for exc in errors:
        if exc is not None:
            raise exc
    return results


def client(token: str) -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return api


def outcome(call: Callable[[], object]) -> object:
    """'ok', or the class of the refusal (Conflict / ValidationError); anything else propagates."""
    try:
        call()
    except (Conflict, ValidationError) as exc:
        return type(exc)
    return "ok"


def rest_outcome(response) -> object:
    """The REST twin of outcome(): 200 ok, 409 Conflict, 400 ValidationError."""
    body = response.json()
    if response.status_code == 200:
        assert body.get("applied", True) is True, body
        return "ok"
    if response.status_code == 409:
        assert body["code"] in ("invalid_transition", "overfill"), body
        return Conflict
    if response.status_code == 400:
        assert body["code"] == "validation_error", body
        return ValidationError
    raise AssertionError(f"unexpected {response.status_code}: {body}")


def history_after(name: str, after: Expected) -> list[str]:
    if name == "fill":
        return ["TRADE_UPDATE", "ORDER_EXECUTED" if after.status == OrderStatus.COMPLETE else "ORDER_PARTIAL"]
    return {"cancel": ["ORDER_CANCELLED"], "modify": ["ORDER_MODIFIED"]}[name]


def serial_orders(start: Expected, predictions: dict[str, Callable[[Expected], tuple]]) -> list[dict]:
    """What each serial order of the calls would give: outcomes, final model, history appended."""
    found = []
    for names in itertools.permutations(predictions):
        m, outcomes, history = start, {}, []
        for name in names:
            errors, after = predictions[name](m)
            outcomes[name] = errors
            if not errors:
                history += history_after(name, after)
                m = after
        found.append({"order": " then ".join(names), "outcomes": outcomes, "final": m, "history": history})
    return found


def matches(serial: dict, observed: dict[str, object], row: Order, history: list[str]) -> bool:
    for name, errors in serial["outcomes"].items():
        got = observed[name]
        if (got == "ok") != (not errors) or (got != "ok" and got not in errors):
            return False
    m = serial["final"]
    return (
        history == ["ORDER_PLACED", "ORDER_STATUS", *serial["history"]]
        and row.order_status == m.status
        and row.quantity == m.quantity
        and row.filled_quantity == m.filled
        and row.price == m.price
        and row.version == m.version
    )


def open_order(user, quantity: str = "10") -> tuple[Order, Expected]:
    order = order_accept(order=place(user, quantity=quantity, price="625.50"))
    model = Expected("SBIN-EQ", "LIMIT", "BUY", False, Decimal(quantity), Decimal("625.50"), None)
    return order, replace(model, status=OrderStatus.OPEN, version=2)


def check_race(user, order: Order, start: Expected, predictions: dict, observed: dict) -> str:
    """The race ended as one serial order did, with every invariant intact. Returns which order."""
    row, updates = assert_order_consistent(order.order_id)
    history = [u.update_type for u in updates]
    serials = serial_orders(start, predictions)
    winners = [s["order"] for s in serials if matches(s, observed, row, history)]
    assert winners, (
        f"order {order.order_id}: {observed} ending {row.order_status} q={row.quantity} f={row.filled_quantity} "
        f"v{row.version} {history} is no serial order of the calls: {serials}"
    )
    assert_user_events_consistent(user)
    return winners[0]


# ---- idempotency -------------------------------------------------------------------------------------


def post_order(token: str, body: dict, key: str) -> tuple[int, dict, str | None]:
    response = client(token).post("/api/orders", body, format="json", HTTP_IDEMPOTENCY_KEY=key)
    return response.status_code, response.json(), response.headers.get("Idempotent-Replayed")


def test_one_idempotency_key_posted_20_times_at_once_places_one_order(make_user):
    user = make_user("idem")
    token = jwt_for(user)

    answers = race(*[lambda: post_order(token, BODY, "key-1")] * 20)

    assert [status for status, _, _ in answers] == [201] * 20, answers
    order_ids = {body["orderId"] for _, body, _ in answers}
    assert len(order_ids) == 1, f"one key gave several orders: {order_ids}"
    assert sum(replayed is None for _, _, replayed in answers) == 1, "exactly one request ran, the rest replayed"
    assert all(body == answers[0][1] for _, body, _ in answers), "a replay differs from the first answer"
    assert Order.objects.filter(user=user).count() == 1
    assert IdempotencyKey.objects.filter(user=user).count() == 1
    (order_id,) = order_ids
    row, updates = assert_order_consistent(order_id)
    assert row.order_status == OrderStatus.PENDING and [u.update_type for u in updates] == ["ORDER_PLACED"]
    assert_user_events_consistent(user)

    status, body, _ = post_order(token, {**BODY, "quantity": 11}, "key-1")
    assert status == 422 and body["code"] == "idempotency_key_reused", body
    status, body, replayed = post_order(token, BODY, "key-1")
    assert (status, body["orderId"], replayed) == (201, order_id, "true")
    status, body, replayed = post_order(token, BODY, "key-2")
    assert status == 201 and body["orderId"] != order_id and replayed is None, body
    assert Order.objects.filter(user=user).count() == 2
    assert_user_events_consistent(user)


def test_one_idempotency_key_with_two_bodies_at_once_places_one_order(make_user):
    user = make_user("idem2")
    token = jwt_for(user)
    other = {**BODY, "quantity": 7}

    answers = race(*[lambda: post_order(token, BODY, "key-x")] * 8, *[lambda: post_order(token, other, "key-x")] * 8)

    assert Order.objects.filter(user=user).count() == 1
    placed = Order.objects.get(user=user)
    won = BODY if placed.quantity == 10 else other
    for i, (status, body, _) in enumerate(answers):
        if (BODY if i < 8 else other) is won:
            assert status == 201 and body["orderId"] == placed.order_id, body
        else:
            assert status == 422 and body["code"] == "idempotency_key_reused", body
    assert_order_consistent(placed.order_id)
    assert_user_events_consistent(user)


# ---- cancel / modify racing a fill ---------------------------------------------------------------------


def fill_call(order: Order, quantity: Decimal, staff_token: str | None) -> Callable[[], object]:
    exec_id = f"race-{next(_execs)}"
    if staff_token is None:
        return lambda: outcome(lambda: execute(order, "fill", quantity, FILL_PRICE, exec_id=exec_id))
    payload = {
        "orderId": order.order_id,
        "execId": exec_id,
        "type": "fill",
        "quantity": str(quantity),
        "price": str(FILL_PRICE),
    }
    return lambda: rest_outcome(client(staff_token).post("/api/internal/executions", payload, format="json"))


def cancel_call(order: Order, token: str | None) -> Callable[[], object]:
    if token is None:
        return lambda: outcome(lambda: order_cancel(order=order.order_id))
    return lambda: rest_outcome(client(token).post(f"/api/orders/{order.order_id}/cancel"))


def modify_call(order: Order, changes: dict[str, Decimal], token: str | None) -> Callable[[], object]:
    if token is None:
        return lambda: outcome(lambda: order_modify(order=order.order_id, **changes))
    body = {name: str(value) for name, value in changes.items()}
    return lambda: rest_outcome(client(token).patch(f"/api/orders/{order.order_id}", body, format="json"))


def test_cancel_racing_a_fill_ends_as_one_serial_order(make_user):
    user, staff = make_user("racer"), make_user("venue", superuser=True)
    token, staff_token = jwt_for(user), jwt_for(staff)
    seen: Counter[str] = Counter()
    for i in range(RACES):
        via_rest = i % 4 >= 2
        quantity = Decimal(10) if i % 2 == 0 else Decimal(4)  # the whole order, or a part
        order, start = open_order(user)
        cancelled, filled = race(
            cancel_call(order, token if via_rest else None),
            fill_call(order, quantity, staff_token if via_rest else None),
        )

        observed = {"cancel": cancelled, "fill": filled}
        winner = check_race(
            user,
            order,
            start,
            {"cancel": expect_cancel, "fill": lambda m, q=quantity: expect_fill(m, q, FILL_PRICE)},
            observed,
        )
        row = Order.objects.get(pk=order.pk)
        if quantity == 10:  # a full fill and a cancel: exactly one wins, the other is a Conflict
            assert {cancelled, filled} == {"ok", Conflict}, observed
            assert row.order_status in (OrderStatus.CANCELLED, OrderStatus.COMPLETE)
            assert (row.order_status == OrderStatus.CANCELLED) == (row.trades.count() == 0)
        else:  # a part fill first leaves the cancel free to win too
            assert row.order_status == OrderStatus.CANCELLED and row.pending_quantity == 0
            assert row.filled_quantity in (0, 4) and row.trades.count() == (row.filled_quantity > 0)
        seen[f"{quantity} {winner}"] += 1
    print(f"cancel vs fill, who went first: {dict(seen)}")


MODIFY_RACES = [
    # (modify, fill quantity): which serial orders are possible differs per line
    ({"quantity": Decimal(12)}, Decimal(10)),  # modify first: both ok; fill first: COMPLETE, modify Conflict
    ({"quantity": Decimal(6)}, Decimal(4)),  # both ok in either order
    ({"quantity": Decimal(4)}, Decimal(4)),  # modify first: fill completes it; fill first: modify invalid
    ({"quantity": Decimal(5)}, Decimal(8)),  # modify first: fill over-fills; fill first: modify invalid
    ({"price": Decimal("624.00")}, Decimal(10)),  # modify first: both ok; fill first: modify Conflict
    ({"quantity": Decimal(15), "price": Decimal("626.05")}, Decimal(3)),  # both ok in either order
]


def test_modify_racing_a_fill_ends_as_one_serial_order(make_user):
    user, staff = make_user("modder"), make_user("venue", superuser=True)
    token, staff_token = jwt_for(user), jwt_for(staff)
    seen: Counter[str] = Counter()
    for i in range(RACES + 4):
        changes, quantity = MODIFY_RACES[i % len(MODIFY_RACES)]
        via_rest = (i // len(MODIFY_RACES)) % 2 == 1
        order, start = open_order(user)
        modified, filled = race(
            modify_call(order, changes, token if via_rest else None),
            fill_call(order, quantity, staff_token if via_rest else None),
        )

        winner = check_race(
            user,
            order,
            start,
            {
                "modify": lambda m, c=changes: expect_modify(m, quantity=c.get("quantity"), price=c.get("price")),
                "fill": lambda m, q=quantity: expect_fill(m, q, FILL_PRICE),
            },
            {"modify": modified, "fill": filled},
        )
        seen[f"{changes} / fill {quantity}: {winner}"] += 1
    print(f"modify vs fill, who went first: {dict(seen)}")


# ---- execution reports racing each other ---------------------------------------------------------------


def test_one_exec_id_sent_at_once_is_applied_once(make_user):
    user = make_user("replayer")
    order, _ = open_order(user)

    results = race(*[lambda: execute(order, "fill", 3, FILL_PRICE, exec_id="venue-dup")] * 6)

    assert sorted(applied for _, applied in results) == [False] * 5 + [True], results
    row, _ = assert_order_consistent(order.order_id)
    assert row.filled_quantity == 3 and row.trades.count() == 1 and row.executions.count() == 1
    assert_user_events_consistent(user)


def test_fills_racing_each_other_never_over_fill(make_user):
    user = make_user("filler")
    order, _ = open_order(user)

    results = race(*[lambda: outcome(lambda: execute(order, "fill", 3, FILL_PRICE))] * 5)

    assert sorted(map(str, results)) == sorted(["ok"] * 3 + [str(Conflict)] * 2), results
    row, updates = assert_order_consistent(order.order_id)
    assert (row.order_status, row.filled_quantity, row.pending_quantity) == (OrderStatus.OPEN, 9, 1)
    assert [u.update_type for u in updates][2:] == ["TRADE_UPDATE", "ORDER_PARTIAL"] * 3
    assert_user_events_consistent(user)


def test_one_exec_id_sent_for_two_orders_at_once_is_applied_once_and_refused_once(make_user):
    """Sequentially, reusing an execId for another order is a Conflict (exec_id_reused). At once,
    each call locks only its own order, so both pass the "already used?" check and the second
    INSERT of the execId hits the unique index. (Two orders on one instrument would hide this:
    see the next test — their locks also take the instrument row, which serialises them.)"""
    user = make_user("mixup")
    first, _ = open_order(user)
    second = order_accept(order=place(user, symbol="BTC_USD", quantity="0.010", price="43250.5"))
    lots = {first.order_id: Decimal(1), second.order_id: Decimal("0.001")}

    def fill(order: Order, exec_id: str) -> Callable[[], object]:
        def call() -> object:
            try:
                return outcome(lambda: execute(order, "fill", lots[order.order_id], FILL_PRICE, exec_id=exec_id))
            except IntegrityError as exc:
                return f"IntegrityError: {str(exc).splitlines()[0]}"

        return call

    for i in range(10):
        results = race(fill(first, f"venue-mixup-{i}"), fill(second, f"venue-mixup-{i}"))
        assert sorted(map(str, results)) == sorted(["ok", str(Conflict)]), (
            f"BUG (margin/executions.py execution_apply): race {i}: one execId sent for two orders at once "
            f"gave {results}; expected one 'ok' and one Conflict(exec_id_reused) — the check-then-insert "
            "of ExecutionReport.exec_id is serialised only per order, so the loser gets an IntegrityError "
            "(HTTP 500 on /api/internal/executions) instead of a 409"
        )
    for order in (first, second):
        assert_order_consistent(order.order_id)
    assert_user_events_consistent(user)


def test_a_change_to_one_order_does_not_wait_for_another_order_on_the_same_instrument(make_user):
    """Each change locks its order row. It must not lock more: while one order's change is in
    flight, a change to another order (another user's, same instrument) goes through."""
    x, _ = open_order(make_user("one"))
    y, _ = open_order(make_user("two"))
    holding, release = threading.Event(), threading.Event()

    def change_x_and_hold() -> str:
        try:
            with transaction.atomic():
                order_modify(order=x.order_id, price=Decimal("624.00"))
                holding.set()
                assert release.wait(30), "the other thread never finished"
        finally:
            holding.set()
        return "ok"

    def change_y_meanwhile() -> str:
        try:
            assert holding.wait(30), "the first change never started"
            with transaction.atomic():
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL lock_timeout = '2s'")
                order_modify(order=y.order_id, price=Decimal("624.00"))
            return "ok"
        except OperationalError as exc:
            return f"blocked: {str(exc).splitlines()[0]}"
        finally:
            release.set()

    held, changed = race(change_x_and_hold, change_y_meanwhile)

    assert held == "ok"
    assert changed == "ok", (
        f"BUG (orders/services.py order_lock): modifying order {y.order_id} waited on order {x.order_id}'s open "
        f"change ({changed}). select_for_update() with select_related('instrument') emits a bare FOR UPDATE, "
        "which also locks the joined market_instrument row, so every change to any order on one instrument "
        "is serialised across all users; select_for_update(of=('self',)) locks only the order"
    )
    for order in (x, y):
        row, _ = assert_order_consistent(order.order_id)
        assert row.price == Decimal("624.00") and row.version == 3
