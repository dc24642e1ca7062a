"""A hypothesis state machine over the order services: random place / accept / modify / cancel /
fill / reject / replayed-execId sequences on a few orders of one user.

Every call is first put to a small model of the rules (the transition table, the price and quantity
rules): the service must do exactly what the model says, and a refused call (Conflict or
ValidationError) must change nothing at all. After every step every invariant is read back from
PostgreSQL: the row invariants, the average price from the trades, the version and the append-only
update history (each status change follows ``TRANSITIONS``), and the user's gap-free event seq.

Each example runs inside a savepoint that is rolled back at teardown. The checkers at the top are
shared with test_concurrency.py.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Prefetch
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from accounts.models import User
from broadcast.models import EventLog, UserSequence
from core.errors import Conflict
from orders.models import ExecutionReport, Order, OrderStatus, OrderUpdate, Trade
from orders.services import TRANSITIONS, order_accept, order_cancel, order_modify, order_reject
from tests.conftest import TEST_BALANCE, fund
from tests.orders.factories import execute, place

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("instruments")]

S = OrderStatus
TERMINAL = frozenset({S.COMPLETE, S.CANCELLED, S.REJECTED})
ACCEPTED_BY_FILL = frozenset({S.PENDING, S.TRIGGER_PENDING, S.AMO})  # a fill here implies → OPEN
PRICED = frozenset({"LIMIT", "SL"})
TRIGGERED = frozenset({"SL", "SL-M"})
AVG_QUANT = Decimal("0.00000001")
ZERO = Decimal(0)
# symbol: (lot size, tick size, max leverage, a price to draw around) — market/defaults.py
SPEC = {
    "SBIN-EQ": (Decimal("1"), Decimal("0.05"), 5, Decimal("625.50")),
    "BTC_USD": (Decimal("0.001"), Decimal("0.5"), 100, Decimal("43250.5")),
}


# ---- checkers (also used by test_concurrency.py) ------------------------------------------------


def dec(value) -> Decimal:
    """A snapshot number (JSON int/float) as a Decimal."""
    return Decimal(str(value))


def _assert_snapshot_sane(snap: dict, where: str) -> None:
    quantity, filled, pending = dec(snap["quantity"]), dec(snap["filledQuantity"]), dec(snap["pendingQuantity"])
    assert 0 <= filled <= quantity, f"{where}: filled {filled} outside 0..{quantity}"
    if snap["orderStatus"] in TERMINAL:
        assert pending == 0, f"{where}: terminal {snap['orderStatus']} with pending {pending}"
    else:
        assert pending == quantity - filled, f"{where}: pending {pending} != {quantity} - {filled}"
    assert (snap["orderStatus"] == S.COMPLETE) == (filled == quantity), f"{where}: COMPLETE iff fully filled"


def assert_history_legal(updates: list[OrderUpdate]) -> None:
    """The update history is 1..N with a snapshot per version, and each status change follows
    TRANSITIONS (a fill on PENDING/TRIGGER_PENDING/AMO implies acceptance → OPEN, with no update of
    its own). Nothing follows a terminal status except the ORDER_EXECUTED half of the final fill."""
    assert updates, "an order without its ORDER_PLACED update"
    assert [u.version for u in updates] == list(range(1, len(updates) + 1)), "versions are not 1..N"
    first = updates[0]
    assert first.update_type == "ORDER_PLACED" and first.snapshot["orderStatus"] == S.PENDING, first.snapshot
    for u in updates:
        assert u.snapshot["version"] == u.version, f"v{u.version} snapshot says version {u.snapshot['version']}"
        assert u.snapshot["updateType"] == u.update_type
        _assert_snapshot_sane(u.snapshot, f"v{u.version} {u.update_type}")
    for prev, cur in itertools.pairwise(updates):
        p, n, kind = prev.snapshot["orderStatus"], cur.snapshot["orderStatus"], cur.update_type
        where = f"v{prev.version} {prev.update_type} {p} → v{cur.version} {kind} {n}"
        if prev.update_type == "TRADE_UPDATE":
            assert kind in ("ORDER_PARTIAL", "ORDER_EXECUTED"), f"{where}: a trade without its status update"
        same_fields = ("quantity", "filledQuantity", "price", "triggerPrice", "averagePrice")
        if kind == "ORDER_PARTIAL":
            assert prev.update_type == "TRADE_UPDATE" and p == n == S.OPEN, where
            assert all(prev.snapshot[f] == cur.snapshot[f] for f in same_fields), where
        elif kind == "ORDER_EXECUTED":
            assert prev.update_type == "TRADE_UPDATE" and p == n == S.COMPLETE, where
            assert all(prev.snapshot[f] == cur.snapshot[f] for f in same_fields), where
        elif kind == "TRADE_UPDATE":
            start = S.OPEN if p in ACCEPTED_BY_FILL else p
            assert p not in TERMINAL and (p == start or can(p, start)), f"{where}: a fill on a {p} order"
            assert n == start or (n == S.COMPLETE and can(start, S.COMPLETE)), where
            traded = dec(cur.snapshot["tradeQuantity"])
            assert traded > 0 and dec(cur.snapshot["tradePrice"]) > 0, where
            assert dec(cur.snapshot["filledQuantity"]) == dec(prev.snapshot["filledQuantity"]) + traded, where
            assert cur.snapshot["quantity"] == prev.snapshot["quantity"], where
        elif kind == "ORDER_MODIFIED":
            assert p == n and p not in TERMINAL, f"{where}: modified a {p} order"
            assert cur.snapshot["filledQuantity"] == prev.snapshot["filledQuantity"], where
        elif kind == "ORDER_STATUS":
            assert n in (S.OPEN, S.TRIGGER_PENDING, S.AMO) and can(p, n), f"{where}: illegal acceptance"
        elif kind == "ORDER_CANCELLED":
            assert n == S.CANCELLED and can(p, n), f"{where}: illegal cancel"
        elif kind == "ORDER_REJECTED":
            assert n == S.REJECTED and can(p, n), f"{where}: illegal reject"
        else:
            raise AssertionError(f"{where}: unexpected update type")
        if kind not in ("TRADE_UPDATE", "ORDER_PARTIAL", "ORDER_EXECUTED"):
            assert cur.snapshot["filledQuantity"] == prev.snapshot["filledQuantity"], where
    assert updates[-1].update_type != "TRADE_UPDATE", "the last update is a trade without its status update"


def can(current: str, target: str) -> bool:
    return target in TRANSITIONS.get(current, frozenset())


def _with_history(orders):
    return orders.select_related("instrument").prefetch_related(
        Prefetch("trades", queryset=Trade.objects.order_by("id")),
        Prefetch("updates", queryset=OrderUpdate.objects.order_by("version")),
    )


def assert_order_consistent(order_id: str) -> tuple[Order, list[OrderUpdate]]:
    """Every invariant of one order, read from the database. Returns the row and its history."""
    return _assert_consistent(_with_history(Order.objects.filter(order_id=order_id)).get())


def assert_orders_consistent(user) -> dict[str, tuple[Order, list[OrderUpdate]]]:
    """assert_order_consistent for each order of the user, in three queries."""
    return {order.order_id: _assert_consistent(order) for order in _with_history(Order.objects.filter(user=user))}


def _assert_consistent(order: Order) -> tuple[Order, list[OrderUpdate]]:
    order_id = order.order_id
    trades = [(t.quantity, t.price) for t in order.trades.all()]
    updates = list(order.updates.all())
    quantity, filled, pending = order.quantity, order.filled_quantity, order.pending_quantity
    status = order.order_status
    where = f"order {order_id} {status} q={quantity} f={filled} p={pending}"
    assert 0 <= filled <= quantity, where
    if status in TERMINAL:
        assert pending == 0, f"{where}: terminal but pending"
    else:
        assert pending == quantity - filled, f"{where}: pending != quantity - filled"
    assert (status == S.COMPLETE) == (filled == quantity), f"{where}: COMPLETE iff fully filled"
    traded = sum((q for q, _ in trades), ZERO)
    notional = sum((q * p for q, p in trades), ZERO)
    assert filled == traded, f"{where}: trades sum to {traded}"
    assert order.filled_notional == notional, f"{where}: notional {order.filled_notional} != {notional}"
    average = (notional / traded).quantize(AVG_QUANT) if trades else ZERO
    assert order.average_price == average, f"{where}: averagePrice {order.average_price} != {average}"
    assert order.version == len(updates), f"{where}: version {order.version} with {len(updates)} updates"
    assert_history_legal(updates)
    last = updates[-1].snapshot
    for name, value in (
        ("orderStatus", status),
        ("quantity", quantity),
        ("filledQuantity", filled),
        ("pendingQuantity", pending),
        ("averagePrice", order.average_price),
        ("price", order.price or ZERO),
        ("triggerPrice", order.trigger_price or ZERO),
        ("version", order.version),
        ("rejectionReason", order.rejection_reason),
    ):
        sent = last[name] if isinstance(value, str) else dec(last[name])
        assert sent == value, f"{where}: the last update sent {name}={last[name]}, the row has {value}"
    return order, updates


def assert_user_events_consistent(user) -> None:
    """The user's EventLog seq is exactly 1..N with N == the user's counter, and each order update
    was logged once as an ``order_update`` event, with the snapshot as stored, in version order."""
    events = list(EventLog.objects.filter(user=user).order_by("seq").values_list("seq", "payload"))
    seqs = [seq for seq, _ in events]
    assert seqs == list(range(1, len(seqs) + 1)), f"seq has gaps or duplicates: {seqs}"
    counter = UserSequence.objects.filter(user=user).values_list("last_seq", flat=True).first()
    assert (counter or 0) == len(seqs), f"UserSequence.last_seq {counter} with {len(seqs)} events"
    stored = {
        (oid, version): snap
        for oid, version, snap in OrderUpdate.objects.filter(order__user=user).values_list(
            "order__order_id", "version", "snapshot"
        )
    }
    sent: dict[tuple[str, int], dict] = {}
    last_seq: dict[str, tuple[int, int]] = {}
    for seq, payload in events:
        assert payload.get("seq") == seq, f"event seq {seq} carries seq {payload.get('seq')}"
        if payload["type"] != "order_update":
            continue  # other personal events (notifications) share the user's seq
        assert payload["channel"] == "orders", payload
        data = payload["data"]
        key = (data["orderId"], data["version"])
        assert key not in sent, f"update {key} logged twice"
        sent[key] = data
        before = last_seq.get(data["orderId"])
        assert before is None or before[1] < data["version"], f"seq {seq}: versions of {key[0]} out of order"
        last_seq[data["orderId"]] = (seq, data["version"])
    assert sent == stored, "the event log and the update history disagree"


# ---- the model: what the rules say each call does -------------------------------------------------

Errors = frozenset  # of exception types; empty = the call must succeed


@dataclass(frozen=True)
class Expected:
    symbol: str
    order_type: str
    side: str
    amo: bool
    quantity: Decimal
    price: Decimal | None
    trigger: Decimal | None
    status: str = S.PENDING
    trades: tuple[tuple[Decimal, Decimal], ...] = ()
    reason: str = ""
    version: int = 1
    earlier_prices: tuple[Decimal, ...] = ()  # the limits it had before modifications

    @property
    def filled(self) -> Decimal:
        return sum((q for q, _ in self.trades), ZERO)

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.filled


def on_grid(value: Decimal | None, step: Decimal) -> bool:
    return value is not None and value > 0 and value % step == 0


def stop_limit_ok(side: str, price: Decimal, trigger: Decimal) -> bool:
    return price >= trigger if side == "BUY" else price <= trigger


def prices_ok(symbol: str, order_type: str, side: str, price, trigger) -> bool:
    tick = SPEC[symbol][1]
    ok = on_grid(price, tick) if order_type in PRICED else price is None
    ok &= on_grid(trigger, tick) if order_type in TRIGGERED else trigger is None
    if ok and order_type == "SL":
        ok = stop_limit_ok(side, price, trigger)
    return ok


def expect_place(symbol, order_type, side, quantity, price, trigger, leverage) -> Errors:
    lot, _, max_leverage, _ = SPEC[symbol]
    ok = on_grid(quantity, lot) and prices_ok(symbol, order_type, side, price, trigger)
    ok &= 1 <= leverage <= max_leverage
    return frozenset() if ok else frozenset({ValidationError})


def _refused(m: Expected, *errors) -> tuple[Errors, Expected]:
    return frozenset(errors), m


def expect_accept(m: Expected) -> tuple[Errors, Expected]:
    if m.status == S.PENDING:
        target = S.AMO if m.amo else S.TRIGGER_PENDING if m.order_type in TRIGGERED else S.OPEN
    else:
        target = S.OPEN  # a stop's trigger fired / an AMO at the open
    if not can(m.status, target):
        return _refused(m, Conflict)
    return frozenset(), replace(m, status=target, version=m.version + 1)


def expect_cancel(m: Expected) -> tuple[Errors, Expected]:
    if not can(m.status, S.CANCELLED):
        return _refused(m, Conflict)
    return frozenset(), replace(m, status=S.CANCELLED, version=m.version + 1)


def expect_reject(m: Expected, reason: str, *, venue: bool) -> tuple[Errors, Expected]:
    text = (reason or ("rejected by venue" if venue else "")).strip()
    errors = set()
    if not text:
        errors.add(ValidationError)
    if not can(m.status, S.REJECTED):
        errors.add(Conflict)
    if errors:
        return _refused(m, *errors)
    return frozenset(), replace(m, status=S.REJECTED, reason=text[:255], version=m.version + 1)


def expect_fill(m: Expected, quantity: Decimal, price: Decimal) -> tuple[Errors, Expected]:
    errors = set()
    if m.status in TERMINAL:
        errors.add(Conflict)
    # a limit never fills at a worse price than every limit it has had (an outside venue's report of
    # one is refused; one at a limit it had before a modification reached the venue is booked)
    worse = False
    if m.order_type in PRICED and m.price is not None:
        had = (*m.earlier_prices, m.price)
        worse = price > max(had) if m.side == "BUY" else price < min(had)
    if quantity <= 0 or price <= 0 or worse:
        errors.add(ValidationError)
    elif quantity > m.remaining:
        errors.add(Conflict)  # over-fill
    if errors:
        return _refused(m, *errors)
    status = S.COMPLETE if quantity == m.remaining else S.OPEN
    return frozenset(), replace(m, trades=(*m.trades, (quantity, price)), status=status, version=m.version + 2)


def expect_modify(m: Expected, quantity=None, price=None, trigger=None) -> tuple[Errors, Expected]:
    errors = set()
    if m.status in TERMINAL:
        errors.add(Conflict)
    lot, tick, _, _ = SPEC[m.symbol]
    new_price = m.price if price is None else price
    new_trigger = m.trigger if trigger is None else trigger
    bad = quantity is None and price is None and trigger is None
    bad |= price is not None and not (m.order_type in PRICED and on_grid(price, tick))
    bad |= trigger is not None and not (m.order_type in TRIGGERED and on_grid(trigger, tick))
    bad |= m.order_type == "SL" and not bad and not stop_limit_ok(m.side, new_price, new_trigger)
    bad |= quantity is not None and not (on_grid(quantity, lot) and quantity > m.filled)
    if bad:
        errors.add(ValidationError)
    if errors:
        return _refused(m, *errors)
    return frozenset(), replace(
        m,
        quantity=m.quantity if quantity is None else quantity,
        price=new_price,
        trigger=new_trigger,
        version=m.version + 1,
        earlier_prices=m.earlier_prices if m.price is None else (*m.earlier_prices, m.price),
    )


# ---- the machine -------------------------------------------------------------------------------------

MAX_ORDERS, MAX_LIVE = 8, 3  # orders per example; new ones are placed while fewer are live
_users = itertools.count(1)
_execs = itertools.count(1)
KINDS = ("accept", "fill", "reject", "cancel")


def grid_prices(symbol: str) -> st.SearchStrategy[Decimal]:
    _, tick, _, base = SPEC[symbol]
    return st.integers(-40, 40).map(lambda k: base + k * tick)


def one_in(n: int) -> st.SearchStrategy[bool]:
    """True about once in n draws (st.integers would favour its bounds)."""
    return st.sampled_from([False] * (n - 1) + [True])


def off_grid(symbol: str, value: Decimal) -> Decimal:
    return value + SPEC[symbol][1] / 5


class OrderMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self._atomic = transaction.atomic()
        self._atomic.__enter__()
        # enterprise: its leverage cap (100) is no lower than any instrument's, which the model knows
        self.user = User.objects.create(username=f"machine{next(_users)}", tier="enterprise")
        fund(self.user.pk, TEST_BALANCE)
        self.orders: list[Order] = []
        self.models: list[Expected] = []
        self.seen: list[list[int]] = []  # update ids seen so far, per order: the history only grows
        self.applied: list[tuple[str, int, str]] = []  # (execId, order index, kind) of applied reports

    def teardown(self) -> None:
        transaction.set_rollback(True)
        self._atomic.__exit__(None, None, None)

    # -- plumbing --

    def world(self) -> tuple:
        """Everything a call could write for this user."""
        return (
            list(Order.objects.filter(user=self.user).order_by("id").values()),
            OrderUpdate.objects.filter(order__user=self.user).count(),
            EventLog.objects.filter(user=self.user).count(),
            Trade.objects.filter(user=self.user).count(),
            ExecutionReport.objects.filter(order__user=self.user).count(),
            UserSequence.objects.filter(user=self.user).values_list("last_seq", flat=True).first(),
        )

    def attempt(self, call, errors: Errors, what: str):
        """Run one service call; it must succeed iff the model says so, and a refusal must be one
        of the model's errors and change nothing. Any other exception fails the test as is."""
        before = self.world() if errors else None  # only a refusal is compared with it
        try:
            result = call()
        except (Conflict, ValidationError) as exc:
            assert errors, f"{what}: refused an operation the rules allow: {exc!r}"
            assert isinstance(exc, tuple(errors)), f"{what}: expected one of {set(errors)}, got {exc!r}"
            assert self.world() == before, f"{what}: refused ({exc!r}) but changed something"
            event(f"{what.split()[0]}: {type(exc).__name__}")
            return None
        assert not errors, f"{what}: accepted an operation the rules refuse (expected {set(errors)})"
        event(f"{what.split()[0]}: ok")
        return result

    def live_count(self) -> int:
        return sum(m.status not in TERMINAL for m in self.models)

    def pick(self, data) -> int:
        """An order: mostly a live one (terminal ones soon refuse everything), sometimes any."""
        live = [i for i, m in enumerate(self.models) if m.status not in TERMINAL]
        if live and data.draw(one_in(4), label="any order") is False:
            return data.draw(st.sampled_from(live), label="live order")
        return data.draw(st.integers(0, len(self.orders) - 1), label="order")

    def report(self, i: int, kind: str, call_kwargs: dict, errors: Errors, after: Expected, what: str) -> None:
        exec_id = f"sm-{next(_execs)}"
        result = self.attempt(lambda: execute(self.orders[i], kind, exec_id=exec_id, **call_kwargs), errors, what)
        if result is not None:
            order, applied = result
            assert applied, f"{what}: a fresh execId was not applied"
            assert order.order_status == after.status
            self.models[i] = after
            self.applied.append((exec_id, i, kind))

    def direct(self, i: int, call, errors: Errors, after: Expected, what: str) -> None:
        result = self.attempt(call, errors, what)
        if result is not None:
            assert result.order_status == after.status, f"{what}: returned {result.order_status}"
            self.models[i] = after

    # -- rules --

    @precondition(lambda self: len(self.orders) < MAX_ORDERS and self.live_count() < MAX_LIVE)
    @rule(data=st.data())
    def place_order(self, data) -> None:
        symbol = data.draw(st.sampled_from(sorted(SPEC)), label="symbol")
        lot, tick, max_leverage, _ = SPEC[symbol]
        order_type = data.draw(st.sampled_from(["LIMIT", "MARKET", "SL", "SL-M"]), label="type")
        side = data.draw(st.sampled_from(["BUY", "SELL"]), label="side")
        quantity = lot * data.draw(st.integers(1, 20), label="lots")
        trigger = data.draw(grid_prices(symbol), label="trigger") if order_type in TRIGGERED else None
        price = data.draw(grid_prices(symbol), label="price") if order_type in PRICED else None
        if order_type == "SL":  # a valid stop-limit: BUY at or above its trigger, SELL at or below
            gap = tick * data.draw(st.integers(0, 10), label="gap")
            price = trigger + gap if side == "BUY" else trigger - gap
        leverage = data.draw(st.sampled_from([1, 2, max_leverage]), label="leverage")
        amo = data.draw(st.booleans(), label="amo")
        flaw = data.draw(
            st.sampled_from([None] * 10 + ["qty0", "qty_lot", "price", "trigger", "stop", "leverage"]),
            label="flaw",
        )
        if flaw == "qty0":
            quantity = ZERO
        elif flaw == "qty_lot":
            quantity = quantity + lot / 2
        elif flaw == "price":
            price = off_grid(symbol, price) if price is not None else SPEC[symbol][3]  # off tick / not allowed
        elif flaw == "trigger":
            trigger = off_grid(symbol, trigger) if trigger is not None else SPEC[symbol][3]
        elif flaw == "stop" and order_type == "SL":
            price = trigger - tick if side == "BUY" else trigger + tick
        elif flaw == "leverage":
            leverage = data.draw(st.sampled_from([0, max_leverage, max_leverage + 1]), label="leverage")
        errors = expect_place(symbol, order_type, side, quantity, price, trigger, leverage)
        what = f"place {symbol} {order_type} {side} q={quantity} p={price} t={trigger} lev={leverage} amo={amo}"
        order = self.attempt(
            lambda: place(
                self.user,
                symbol=symbol,
                order_type=order_type,
                side=side,
                quantity=quantity,
                price=price,
                trigger=trigger,
                leverage=leverage,
                amo=amo,
            ),
            errors,
            what,
        )
        if order is not None:
            assert order.order_status == S.PENDING and order.version == 1
            self.orders.append(order)
            self.models.append(Expected(symbol, order_type, side, amo, quantity, price, trigger))
            self.seen.append([])

    @precondition(lambda self: self.orders)
    @rule(data=st.data(), venue=st.booleans())
    def accept(self, data, venue: bool) -> None:
        i = self.pick(data)
        errors, after = expect_accept(self.models[i])
        what = f"accept #{i} ({self.models[i].status}, venue={venue})"
        if venue:
            self.report(i, "accept", {}, errors, after, what)
        else:
            self.direct(i, lambda: order_accept(order=self.orders[i]), errors, after, what)

    @precondition(lambda self: self.orders)
    @rule(data=st.data(), venue=st.booleans())
    def cancel(self, data, venue: bool) -> None:
        i = self.pick(data)
        errors, after = expect_cancel(self.models[i])
        what = f"cancel #{i} ({self.models[i].status}, venue={venue})"
        if venue:
            self.report(i, "cancel", {}, errors, after, what)
        else:
            self.direct(i, lambda: order_cancel(order=self.orders[i]), errors, after, what)

    @precondition(lambda self: self.orders)
    @rule(data=st.data(), venue=st.booleans())
    def reject(self, data, venue: bool) -> None:
        i = self.pick(data)
        reasons = ["Insufficient funds", "", "   ", "  margin call  "]
        if not venue:  # the executions API caps reasons at 255; the service truncates longer ones
            reasons.append("r" * 300)
        reason = data.draw(st.sampled_from(reasons), label="reason")
        errors, after = expect_reject(self.models[i], reason, venue=venue)
        what = f"reject #{i} ({self.models[i].status}, reason={reason!r}, venue={venue})"
        if venue:
            self.report(i, "reject", {"reason": reason}, errors, after, what)
        else:
            self.direct(i, lambda: order_reject(order=self.orders[i], reason=reason), errors, after, what)

    @precondition(lambda self: self.orders)
    @rule(data=st.data())
    def fill(self, data) -> None:
        i = self.pick(data)
        m = self.models[i]
        lot = SPEC[m.symbol][0]
        remaining = int(m.remaining / lot)
        size = data.draw(st.sampled_from(["part", "part", "part", "rest", "over", "zero"]), label="size")
        if size == "part":
            lots = data.draw(st.integers(1, max(1, remaining - 1)), label="lots")
        elif size == "rest":
            lots = remaining
        elif size == "over":
            lots = remaining + data.draw(st.integers(1, 3), label="extra lots")
        else:
            lots = 0
        quantity = lot * lots
        price = data.draw(grid_prices(m.symbol), label="fill price")
        if data.draw(one_in(20), label="bad price"):
            price = ZERO
        errors, after = expect_fill(m, quantity, price)
        what = f"fill #{i} ({m.status} {m.filled}/{m.quantity}) {quantity}@{price}"
        self.report(i, "fill", {"quantity": quantity, "price": price}, errors, after, what)

    @precondition(lambda self: self.orders)
    @rule(data=st.data())
    def modify(self, data) -> None:
        i = self.pick(data)
        m = self.models[i]
        lot = SPEC[m.symbol][0]
        fields = data.draw(
            st.sampled_from([("quantity",), ("price",), ("quantity", "price"), ("trigger",), ("price", "trigger"), ()]),
            label="fields",
        )
        kwargs: dict[str, Decimal] = {}
        if "quantity" in fields:
            lots = data.draw(st.integers(0, 25), label="lots")
            kwargs["quantity"] = lot * lots
            if data.draw(one_in(8), label="off lot"):
                kwargs["quantity"] += lot / 2
        if "price" in fields:
            kwargs["price"] = data.draw(grid_prices(m.symbol), label="price")
        if "trigger" in fields:
            kwargs["trigger_price"] = data.draw(grid_prices(m.symbol), label="trigger")
        if kwargs and data.draw(one_in(8), label="flawed"):
            name = data.draw(st.sampled_from(sorted(kwargs)), label="flawed field")
            kwargs[name] = -kwargs[name] if name == "quantity" else off_grid(m.symbol, kwargs[name])
        errors, after = expect_modify(
            m, quantity=kwargs.get("quantity"), price=kwargs.get("price"), trigger=kwargs.get("trigger_price")
        )
        what = (
            f"modify #{i} ({m.status} {m.order_type} {m.side} {m.filled}/{m.quantity} @{m.price}/{m.trigger}) {kwargs}"
        )
        self.direct(i, lambda: order_modify(order=self.orders[i], **kwargs), errors, after, what)

    @precondition(lambda self: self.applied)
    @rule(data=st.data())
    def replay(self, data) -> None:
        exec_id, i, kind = data.draw(st.sampled_from(self.applied), label="report")
        how = data.draw(st.sampled_from(["same", "same", "other kind", "other order"]), label="how")
        target, new_kind = i, kind
        if how == "other kind":
            new_kind = data.draw(st.sampled_from([k for k in KINDS if k != kind]), label="kind")
        elif how == "other order" and len(self.orders) > 1:
            target = data.draw(st.sampled_from([j for j in range(len(self.orders)) if j != i]), label="target")
        kwargs: dict = {"reason": "again"} if new_kind == "reject" else {}
        if new_kind == "fill":
            kwargs = {"quantity": SPEC[self.models[target].symbol][0], "price": SPEC[self.models[target].symbol][3]}
        replayed = (target, new_kind) == (i, kind)
        errors = frozenset() if replayed else frozenset({Conflict})
        what = f"replay {exec_id} ({kind} on #{i}) as {new_kind} on #{target}"
        before = self.world()
        result = self.attempt(lambda: execute(self.orders[target], new_kind, exec_id=exec_id, **kwargs), errors, what)
        if result is not None:
            order, applied = result
            assert not applied, f"{what}: a replayed execId was applied again"
            assert order.order_status == self.models[target].status
            assert self.world() == before, f"{what}: a replay changed something"

    # -- invariants, from the database, after every step --

    @invariant()
    def database_agrees(self) -> None:
        rows = assert_orders_consistent(self.user)
        assert len(rows) == len(self.orders), f"{len(rows)} orders in the database, {len(self.orders)} placed"
        for i, (order, m) in enumerate(zip(self.orders, self.models, strict=True)):
            row, updates = rows[order.order_id]
            where = f"order #{i} {order.order_id}"
            assert row.order_status == m.status, f"{where}: status {row.order_status}, the rules say {m.status}"
            assert row.quantity == m.quantity, f"{where}: quantity {row.quantity} != {m.quantity}"
            assert row.price == m.price and row.trigger_price == m.trigger, f"{where}: prices"
            assert row.filled_quantity == m.filled, f"{where}: filled {row.filled_quantity} != {m.filled}"
            assert row.version == m.version, f"{where}: version {row.version} != {m.version}"
            assert row.rejection_reason == m.reason, f"{where}: reason {row.rejection_reason!r} != {m.reason!r}"
            event(f"order ends {m.status}" + (" (partly filled)" if m.trades and m.status != S.COMPLETE else ""))
            trades = [(t.quantity, t.price) for t in row.trades.all()]
            assert trades == list(m.trades), f"{where}: trades {trades} != {m.trades}"
            ids = [u.id for u in updates]
            assert ids[: len(self.seen[i])] == self.seen[i], f"{where}: the update history was rewritten"
            self.seen[i] = ids
        assert_user_events_consistent(self.user)


# A failure is shrunk (without the slow "explain" tracer), which can outlast the suite's 120 s timeout.
@pytest.mark.timeout(900)
def test_order_services_state_machine():
    run_state_machine_as_test(
        OrderMachine,
        settings=settings(
            max_examples=40,
            stateful_step_count=25,
            deadline=None,
            phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
