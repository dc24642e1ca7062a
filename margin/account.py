"""The risk side of money (isolated margin, one-way positions): what each user has reserved, what is
available, and the checks that keep available margin from going below zero.

- Position margin: each open position holds ``quantity × entry price ÷ leverage``.
- Order margin: working orders hold margin for the exposure they could add. Per instrument, the
  buys could add ``max(0, p + B) − max(0, p)`` long (``p`` the signed position, ``B`` the buys'
  pending quantity), the sells ``max(0, S − p) − max(0, −p)`` short; the larger side is held, at the
  orders' own price ÷ leverage (a market order at the last price plus ``MARKET_ORDER_BUFFER``).
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
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from accounts.models import User
from core.errors import Conflict
from ledger.models import MONEY_QUANT, EntryKind, LedgerEntry
from ledger.selectors import account_balance
from ledger.services import account_lock, ledger_post
from market.models import Instrument
from orders.models import LIVE, Order, OrderType, Side
from orders.services import order_modify, order_place, order_reject

from .models import Position, PositionStatus
from .selectors import prices_for

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
    prices = dict(Instrument.objects.filter(pk__in=instrument_ids).values_list("pk", "reference_price"))
    return {**prices, **prices_for(instrument_ids)}


def _unit_cost(order: Order, last: Decimal) -> Decimal:
    """Margin per unit of an order: its price (a market or stop-market order: the last price, with a
    buffer for slippage) over its leverage."""
    if order.order_type in (OrderType.LIMIT, OrderType.SL) and order.price:
        price = order.price
    elif order.order_type == OrderType.SL_M and order.trigger_price:
        price = order.trigger_price
    else:
        price = last * (1 + Decimal(str(settings.AXISOR_RISK["MARKET_ORDER_BUFFER"])))
    return price / Decimal(order.leverage)


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
        total = sum((q for q, _ in sides[side]), Decimal(0))
        if total:
            average_cost = sum((q * c for q, c in sides[side]), Decimal(0)) / total
            held = max(held, added(total) * average_cost)
    return held


def account_figures(*, user_id: int) -> Figures:
    """Balance, margin held and unrealised PnL at the last prices, as they stand in this transaction."""
    balance, currency = account_balance(user_id=user_id)
    positions = list(Position.objects.filter(user_id=user_id, status=PositionStatus.OPEN))
    # reduce-only orders never add exposure: they hold nothing
    orders = list(
        Order.objects.filter(user_id=user_id, order_status__in=LIVE, pending_quantity__gt=0, reduce_only=False)
    )
    prices = _last_prices({p.instrument_id for p in positions} | {o.instrument_id for o in orders})
    signed = {p.instrument_id: p.quantity if p.side == "long" else -p.quantity for p in positions}
    unrealized = sum(
        ((prices.get(p.instrument_id, p.entry_price) - p.entry_price) * signed[p.instrument_id] for p in positions),
        Decimal(0),
    )
    by_instrument: dict[int, list[tuple[str, Decimal, Decimal]]] = defaultdict(list)
    for o in orders:
        last = prices.get(o.instrument_id) or Decimal(0)
        by_instrument[o.instrument_id].append((o.transaction_type, o.pending_quantity, _unit_cost(o, last)))
    order_margin = sum(
        (_order_margin(signed.get(i, Decimal(0)), items) for i, items in by_instrument.items()), Decimal(0)
    )
    return Figures(
        currency=currency,
        balance=balance,
        position_margin=sum((p.margin for p in positions), Decimal(0)).quantize(MONEY_QUANT),
        order_margin=order_margin.quantize(MONEY_QUANT),
        unrealized_pnl=unrealized.quantize(MONEY_QUANT),
    )


@transaction.atomic
def order_submit(*, user: User, **order: Any) -> Order:
    """Place an order for a user, behind the pre-trade margin check (see the module docstring).
    Takes ``orders.services.order_place``'s arguments; validation errors are raised as there."""
    account_lock(user.pk)
    if order.get("reduce_only"):
        _check_reduces(user, order)
    before = account_figures(user_id=user.pk)
    placed = order_place(user=user, **order)
    shortfall = _shortfall(before, account_figures(user_id=user.pk), "the order needs")
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
    return (
        f"{INSUFFICIENT_FUNDS}: {needs} {needed} {after.currency} of margin, {available} {after.currency} is available"
    )


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
    user_id = order.user_id if isinstance(order, Order) else Order.objects.get(order_id=order).user_id
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
            raise Conflict(f"only {max(available, Decimal(0))} is available to withdraw", code="insufficient_funds")
    return ledger_post(user_id=user_id, kind=kind, amount=signed, note=note, actor_id=actor_id)
