"""The risk side of money (isolated margin, one-way positions): what each user has reserved, what is
available, and the checks that keep available margin from going below zero.

- Position margin: each open position holds ``quantity × entry price ÷ leverage``.
- Order margin: working orders hold margin for the exposure they could add. Per instrument, the
  buys could add ``max(0, p + B) − max(0, p)`` long (``p`` the signed position, ``B`` the buys'
  pending quantity), the sells ``max(0, S − p) − max(0, −p)`` short; the larger side is held, at its
  costliest orders' price ÷ leverage (a market order at the last price plus ``MARKET_ORDER_BUFFER``,
  a sell limit at no less than the last price).
  So an order that only reduces a position needs no margin: closing is always possible.
- Available = balance − position margin − order margin. Unrealised profit is not spendable;
  unrealised loss stays inside its position's margin (isolated), which liquidation bounds.

``order_submit`` is how users place orders: the account row is locked (a user's order entries
are serialised), the order is recorded, and if it raised the margin held beyond the balance it is
rejected at once with "Insufficient funds" (``ORDER_REJECTED``, as a broker's risk system does).
A reduce-only order (``reduce_only``) needs a position on the other side, holds no margin, and
its fills are clamped to that position (margin.executions). System closes place their reduce-only
orders directly, never refused.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from accounts.caps import cap_check
from accounts.models import User
from core.compiled import CompiledRows
from core.errors import Conflict
from ledger.models import MONEY_QUANT, Account, EntryKind, LedgerEntry
from ledger.selectors import account_balance
from ledger.services import account_lock, ledger_post
from market.models import Instrument
from market.selectors import last_traded_price
from orders.models import LIVE, Order, OrderStatus, OrderType, Side
from orders.services import order_lock, order_modify, order_place_in_transaction, order_reject

from .formula import fill_effect
from .models import Position, PositionStatus
from .positions import fee_rate

INSUFFICIENT_FUNDS = "Insufficient funds"
MAX_ADJUSTMENT = Decimal("1e12")


@dataclass(frozen=True)
class Figures:
    currency: str
    balance: Decimal
    position_margin: Decimal
    order_margin: Decimal
    unrealized_pnl: Decimal

    @property
    def reserved(self) -> Decimal:
        return self.position_margin + self.order_margin

    @property
    def available(self) -> Decimal:
        return self.balance - self.reserved

    @property
    def equity(self) -> Decimal:
        return self.balance + self.unrealized_pnl


def _last_prices(instrument_ids: set[int]) -> dict[int, Decimal]:
    """The last traded price per instrument, or its reference price before the first trade."""
    rows = (
        Instrument.objects.filter(pk__in=instrument_ids).order_by().values_list("pk", "reference_price", "state__price")
    )
    return {pk: reference if last is None else last for pk, reference, last in rows}


class _Working(NamedTuple):
    """What a working order's margin is computed from: a row, not a model instance (a user may hold
    thousands, and each placement reads them all)."""

    pk: int
    instrument_id: int
    transaction_type: str
    pending_quantity: Decimal
    order_type: str
    price: Decimal | None
    trigger_price: Decimal | None
    leverage: int
    order_status: str

    @classmethod
    def of(cls, order: Order) -> _Working:
        return cls(*(getattr(order, name) for name in cls._fields))


def _unit_cost(order: _Working, last: Decimal, fee: Decimal, buffer: Decimal) -> Decimal:
    """Margin per unit of an order: its price (a market or stop-market order: the last price, with
    ``buffer`` for slippage; a SELL limit: the higher of its price and the last price; a SELL
    stop-limit: the higher of its price and its trigger, and once it works, of the last price too)
    over its leverage, plus the ``fee`` rate its fill will cost."""
    if order.order_type in (OrderType.LIMIT, OrderType.SL) and order.price:
        price = order.price
        selling = order.transaction_type == Side.SELL
        if selling and order.order_type == OrderType.LIMIT:
            # A sell fills at its limit or higher, and a short's margin and fee grow with its fill
            # price. Held at its limit, a SELL 0.05 BTC_USD at 39,000 with the market at 40,000 was
            # placed, then filled 0.048 and cancelled for funds; a resting one modified to 39,000 was
            # held there, not at the 40,000 the venue fills a limit modified into the market at
            # (margin/venue.py), for the second until the venue's next step filled it. So every sell
            # limit, arriving, resting or modified, holds the higher of its limit and the market:
            # placing and modifying hold the same, and a resting one the market has risen above holds
            # more only until the venue fills it at its limit (an outside venue may report any price
            # at or above it: orders.services.order_trade_add).
            price = max(price, last)
        if order.order_type == OrderType.SL and selling and order.trigger_price:
            # A sell stop-limit arrives when it fires (margin/venue.py): it fills at the better of its
            # limit and the market, which is then at its trigger. Held at its limit, a SELL 0.05
            # BTC_USD stop 39,900 limit 39,000 was accepted on 196, fired, filled 0.048 at 39,900 and
            # was cancelled for funds (review 14). Once fired it works as a sell limit does.
            price = max(price, order.trigger_price)
            if order.order_status == OrderStatus.OPEN:
                price = max(price, last)
    elif order.order_type == OrderType.SL_M and order.trigger_price:
        price = order.trigger_price
    else:
        price = last * (1 + buffer)
    return price / Decimal(order.leverage) + price * fee


def _order_margin(position: Decimal, orders: list[tuple[str, Decimal, Decimal]]) -> Decimal:
    """Margin for one instrument's working orders ``(side, pending quantity, unit cost)`` given the
    signed position."""
    sides: dict[str, list[tuple[Decimal, Decimal]]] = {Side.BUY: [], Side.SELL: []}
    for side, quantity, cost in orders:
        sides[side].append((quantity, cost))
    held = Decimal(0)
    for side, added in (
        (Side.BUY, lambda b: max(Decimal(0), position + b) - max(Decimal(0), position)),
        (Side.SELL, lambda s: max(Decimal(0), s - position) - max(Decimal(0), -position)),
    ):
        # What the side adds is held at its costliest orders' cost: whichever fill first close the
        # position, the others open, and any of them may be the last (at the orders' average cost,
        # a 2x buy behind a 100x one that closed a short opened on half the margin it needed, and
        # the fill check then held back the 100x one, which only reduced).
        left, cost = added(sum((q for q, _ in sides[side]), Decimal(0))), Decimal(0)
        for quantity, unit in sorted(sides[side], key=lambda item: item[1], reverse=True):
            take = min(quantity, left)
            cost, left = cost + take * unit, left - take
        held = max(held, cost)
    return held


@dataclass(frozen=True)
class _Book:
    """What a user's figures are computed from, read once."""

    currency: str
    balance: Decimal
    positions: list[Position]
    orders: list[_Working]  # those that hold margin
    prices: dict[int, Decimal]  # the last price of each instrument of the positions and orders, once priced
    live: int  # every working order, those that hold nothing (reduce-only, nothing pending) too
    has_prices: bool = True  # False until ``priced``: its figures would price market orders at 0

    def priced(self, known: dict[int, Decimal] | None = None) -> _Book:
        """The book with the last price of each of its instruments: ``known`` (prices the caller has
        read in this transaction), the rest read now, in one statement or none."""
        known = known or {}
        wanted = {p.instrument_id for p in self.positions} | {o.instrument_id for o in self.orders}
        missing = wanted - known.keys() - self.prices.keys()
        prices = {**self.prices, **(_last_prices(missing) if missing else {}), **known}
        return _Book(self.currency, self.balance, self.positions, self.orders, prices, self.live, True)

    def adding(self, order: Order) -> _Book:
        """The book with ``order`` (just placed, in this transaction) among its working orders; the
        book is priced with the order's instrument (``priced``)."""
        if order.order_status not in LIVE or order.pending_quantity <= 0 or order.reduce_only:
            return self
        if order.instrument_id not in self.prices:
            raise ValueError("price the book with the order's instrument first")
        orders = [*self.orders, _Working.of(order)]
        return _Book(self.currency, self.balance, self.positions, orders, self.prices, self.live + 1)


# The book's two reads, every placement: compiled once (building and compiling them cost ~1 ms of
# a placement's ~10, as much as running them; docs/benchmarks.md).
_open_positions = CompiledRows(lambda: Position.objects.filter(status=PositionStatus.OPEN).order_by(), "user_id")
_working_orders = CompiledRows(
    lambda: Order.objects.filter(order_status__in=LIVE).order_by().values_list(*_Working._fields, "reduce_only"),
    "user_id",
)


def _book(user_id: int, account: Account | None = None, *, priced: bool = True) -> _Book:
    """``account``: the user's, already read (locked) in this transaction. ``priced=False``: no
    last prices yet (``_Book.priced`` reads them). Every read is unordered (``order_by()``): the
    figures do not depend on row order, and the models' default orderings cost each placement a
    sort to compile and to run."""
    balance, currency = (account.balance, account.currency) if account else account_balance(user_id=user_id)
    positions = _open_positions.all(user_id)
    working = [(_Working(*row[:-1]), row[-1]) for row in _working_orders.all(user_id)]
    # reduce-only orders never add exposure: they hold nothing (but count towards the tier's cap)
    orders = [o for o, reduce_only in working if o.pending_quantity > 0 and not reduce_only]
    book = _Book(currency, balance, positions, orders, {}, len(working), has_prices=False)
    return book.priced() if priced else book


def _figures(book: _Book, fill: tuple[Order, Decimal, Decimal] | None = None, *, without: int | None = None) -> Figures:
    """The figures of ``book``, or as they would be after ``fill`` = (order, quantity, price): the
    position and the money moved as ``margin.formula.fill_effect`` moves them, the order's pending
    quantity reduced. ``without``: the pk of an order to leave out."""
    if not book.has_prices:
        raise ValueError("the book has no prices yet: call its priced()")
    balance = book.balance
    signed = {p.instrument_id: p.quantity if p.side == "long" else -p.quantity for p in book.positions}
    margins = {p.instrument_id: p.margin for p in book.positions}
    entries = {p.instrument_id: p.entry_price for p in book.positions}
    pending = {o.pk: o.pending_quantity if o.pk != without else Decimal(0) for o in book.orders}
    if fill is not None:
        order, quantity, price = fill
        i = order.instrument_id
        position = next((p for p in book.positions if p.instrument_id == i), None)
        effect = fill_effect(
            signed=signed.get(i, Decimal(0)),
            entry=position.entry_price if position else price,
            leverage=position.leverage if position else Decimal(order.leverage),
            fill=quantity if order.transaction_type == Side.BUY else -quantity,
            price=price,
            order_leverage=Decimal(order.leverage),
            fee_rate=fee_rate(),
        )
        balance += effect.pnl - effect.fees
        signed[i], margins[i], entries[i] = effect.signed, effect.margin, effect.entry
        if order.pk in pending:
            pending[order.pk] -= quantity
    unrealized = sum(
        ((book.prices.get(i, entries[i]) - entries[i]) * signed[i] for i in signed if signed[i]), Decimal(0)
    )
    by_instrument: dict[int, list[tuple[str, Decimal, Decimal]]] = defaultdict(list)
    fee, buffer = fee_rate(), Decimal(str(settings.AXISOR_RISK["MARKET_ORDER_BUFFER"]))
    for o in book.orders:
        if pending[o.pk] > 0:
            last = book.prices.get(o.instrument_id) or Decimal(0)
            cost = _unit_cost(o, last, fee, buffer)
            by_instrument[o.instrument_id].append((o.transaction_type, pending[o.pk], cost))
    order_margin = sum(
        (_order_margin(signed.get(i, Decimal(0)), items) for i, items in by_instrument.items()), Decimal(0)
    )
    return Figures(
        currency=book.currency,
        balance=balance,
        position_margin=sum(margins.values(), Decimal(0)).quantize(MONEY_QUANT),
        order_margin=order_margin.quantize(MONEY_QUANT),
        unrealized_pnl=unrealized.quantize(MONEY_QUANT),
    )


def account_figures(*, user_id: int) -> Figures:
    """Balance, margin held and unrealised PnL at the last prices, as they stand in this transaction."""
    return _figures(_book(user_id))


@transaction.atomic
def fill_funded(*, order: Order, quantity: Decimal, price: Decimal) -> Decimal:
    """How much of a fill the paper venue may make: all of it when its margin and fee are covered,
    else the most lots that leave available margin at zero (or, when it is already below, no lower).
    Broker practice: margin is checked again when an order fills (a market order may slip past what
    it reserved, a stop may gap), and what cannot be carried is cancelled, never carried on credit.

    Locks the position and the account, in the order of locks everywhere (after the order's)."""
    Position.objects.select_for_update(of=("self",)).filter(
        user_id=order.user_id, instrument_id=order.instrument_id, status=PositionStatus.OPEN
    ).first()
    book = _book(order.user_id, account_lock(order.user_id))
    # The floor: zero, or what is available without this order when that is already below zero
    # (its own reservation is left out: a market order's is re-priced at the last price, which moved).
    floor = min(Decimal(0), _figures(book, without=order.pk).available)

    def funded(q: Decimal) -> bool:  # a part fill cancels the order's rest: it holds nothing then
        return _figures(book, (order, q, price), without=order.pk if q < quantity else None).available >= floor

    if funded(quantity):
        return quantity
    lot = order.instrument.lot_size
    low, high = 0, int(quantity / lot)
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if funded(middle * lot) else (low, middle - 1)
    return low * lot


@transaction.atomic
def order_submit(*, user: User, **order: Any) -> Order:
    """Place an order for a user, behind the pre-trade margin check (see the module docstring).
    Takes ``orders.services.order_place``'s arguments; validation errors are raised as there. A user
    holding the tier's cap of working orders gets 409 ``limit_exceeded`` (cancels, the pre-trade check
    and a system close walk them all)."""
    # The account's lock serialises this user's placements: the tier's cap is counted in the book,
    # under it, not under a lock of its own.
    book = _book(user.pk, account_lock(user.pk), priced=False)
    cap_check(user=user, name="WORKING_ORDERS", what="working orders", count=lambda: book.live, locked=True)
    if order.get("reduce_only"):
        _check_reduces(user, order)
    placed = order_place_in_transaction(user=user, **order)  # this transaction is the placement's
    # The placement read its instrument with the last price: a book of that instrument alone (a
    # retail user's usual one) needs no read of prices; the others are read in one.
    last = last_traded_price(placed.instrument)
    book = book.priced({placed.instrument_id: placed.instrument.reference_price if last is None else last})
    # Placing changes nothing of the book but this order (the account is locked): the figures
    # after are the book's with it added, not a second read of every working order.
    shortfall = _shortfall(_figures(book), _figures(book.adding(placed)), "the order needs")
    if shortfall:
        placed = order_reject(order=placed, reason=shortfall)
    return placed


def _shortfall(before: Figures, after: Figures, needs: str) -> str | None:
    """Why a change that raised the margin held beyond the balance cannot be carried, or None."""
    if after.order_margin <= before.order_margin or after.available >= 0:
        return None
    cents = Decimal("0.01")
    needed = (after.order_margin - before.order_margin).quantize(cents)
    available = max(before.available, Decimal(0)).quantize(cents)
    currency = after.currency
    return f"{INSUFFICIENT_FUNDS}: {needs} {needed} {currency} of margin and fees, {available} {currency} is available"


@transaction.atomic
def order_amend(
    *,
    order: Order | str,
    quantity: Decimal | None = None,
    price: Decimal | None = None,
    trigger_price: Decimal | None = None,
) -> Order:
    """Modify a working order behind the same check as a new one: a change that raises the margin
    held beyond the balance is refused (409 ``insufficient_funds``) and changes nothing."""
    # The order's lock before the account's, as a fill takes them (the venue: order, position,
    # account), so a modify racing a fill waits instead of deadlocking.
    user_id = order_lock(order).user_id
    account_lock(user_id)
    before = account_figures(user_id=user_id)
    amended = order_modify(order=order, quantity=quantity, price=price, trigger_price=trigger_price)
    shortfall = _shortfall(before, account_figures(user_id=user_id), "the change needs")
    if shortfall:
        raise Conflict(shortfall, code="insufficient_funds")
    return amended


def _check_reduces(user: User, order: dict[str, Any]) -> None:
    """A reduce-only order needs an open position on the other side to reduce."""
    wanted = "short" if order.get("transaction_type") == Side.BUY else "long"
    held = Position.objects.filter(
        user=user, instrument__symbol=order.get("trading_symbol"), status=PositionStatus.OPEN, side=wanted
    ).exists()
    if not held:
        raise ValidationError(
            {"reduceOnly": f"no open {wanted} position in {order.get('trading_symbol')} for this order to reduce"}
        )


@transaction.atomic
def account_adjust(
    *, user_id: int, kind: str, amount: Decimal, note: str = "", actor_id: int | None = None
) -> LedgerEntry:
    """A deposit, a withdrawal (never beyond what is available) or a signed adjustment, by staff or
    a service. Raises ValueError for a bad kind or amount, Conflict ``insufficient_funds``."""
    if kind not in (EntryKind.DEPOSIT, EntryKind.WITHDRAWAL, EntryKind.ADJUSTMENT):
        raise ValueError("kind must be deposit, withdrawal or adjustment")
    if not amount.is_finite() or amount != amount.quantize(MONEY_QUANT) or abs(amount) > MAX_ADJUSTMENT:
        raise ValueError(f"amount must be a number with at most 8 decimals, at most {MAX_ADJUSTMENT:,.0f}")
    if amount == 0 or (kind != EntryKind.ADJUSTMENT and amount < 0):
        raise ValueError("a deposit or withdrawal is a positive amount; an adjustment is not zero")
    signed = -amount if kind == EntryKind.WITHDRAWAL else amount
    account_lock(user_id)
    if signed < 0:
        available = account_figures(user_id=user_id).available
        if available + signed < 0:
            raise Conflict(f"only {max(available, Decimal(0)):.8f} is available to withdraw", code="insufficient_funds")
    return ledger_post(user_id=user_id, kind=kind, amount=signed, note=note, actor_id=actor_id)
