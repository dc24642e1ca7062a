"""The paper-trading venue: accepts live orders and fills them against the market, through the
same execution service the executions API uses (so replays and races behave the same).

Each order is decided under its own lock, against its price and trigger as they are at that moment
(a limit lowered a moment ago is the limit that counts), and against the prices traded since the
venue's last step (the low and the high of the tick path, not only the last tick), as liquidation is:

- MARKET fills at the last price; an arriving LIMIT that is marketable fills at the better of its
  limit and the last price;
- a resting LIMIT (accepted in an earlier step) fills at its limit once the path reaches it, even
  when the market gapped through it (a resting order is the price taker's counterpart: no price
  improvement beyond its limit, and never worse);
- SL/SL-M wait in TRIGGER_PENDING until the path reaches the trigger, then behave as arriving
  LIMIT/MARKET orders: a stop-limit the market is already through when it fires fills at the better
  of its limit and the last price, not at its limit (it never rested there);
- an order whose limit or trigger changed since the venue last looked at it is judged against the
  last price alone, as an arriving order is (and a resting limit modified into the market fills at
  the better of its limit and the last price): the path's ticks may have traded before the new
  limit or trigger existed, and a limit raised into a dip that is over must not fill at the dip.
  The venue compares each order with what it saw at its previous step (no clock involved), and
  judges it so at the step that notices the change and at the next: a change made while a step
  runs, after its prices were read, predates part of the next step's path too;
- AMO orders wait for the exchange's next session, then open as arriving orders (a limit the
  opening price is through fills at the better of the two); nothing is accepted or filled on an
  exchange whose session is closed (market.sessions);
- a DAY order still working when its session ends is cancelled ("expired at the end of the session");
  an IOC order is cancelled as soon as the venue could not fill it, or the rest of it, at once.
An order larger than the liquidity per step is filled in parts.

Margin is checked again at each fill (``margin.account.fill_funded``): a market order that slipped
past what it reserved, or a stop that gapped, fills only as far as the user's available margin
carries it, and the rest is cancelled with "Insufficient funds" (never carried on credit).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal

from django.db import transaction

from core.errors import Conflict
from margin.account import INSUFFICIENT_FUNDS, fill_funded
from margin.executions import execution_apply
from market import sessions
from orders.models import LIVE, Order, OrderStatus, OrderType, Side, Validity
from orders.services import order_cancel, order_lock

LIQUIDITY_LOTS_PER_STEP = 50  # fill at most this many lots of an order per step


@dataclass(frozen=True)
class Path:
    """What traded in a symbol since the venue's last step: the last price and the range."""

    last: Decimal
    low: Decimal
    high: Decimal


def _exec_id() -> str:
    return f"sim-{uuid.uuid4().hex}"


def _reached(side: str, path: Path, level: Decimal) -> bool:
    """A buy level is reached when the market traded at or below it, a sell level at or above."""
    return path.low <= level if side == Side.BUY else path.high >= level


def _triggered(order: Order, path: Path) -> bool:
    trigger = order.trigger_price
    assert trigger is not None  # only stop orders wait for a trigger, and they have one (a check constraint)
    return path.high >= trigger if order.transaction_type == Side.BUY else path.low <= trigger


class PaperVenue:
    def __init__(self, prices) -> None:
        # ``prices.latest(symbol)`` and, optionally, ``prices.path(symbol)`` (low, high since the
        # last refresh); without it the path is the last price alone.
        self.prices = prices
        # Each live order's (price, trigger price) as the previous step saw it, and the orders whose
        # change the previous step noticed.
        self.terms: dict[str, tuple[Decimal | None, Decimal | None]] = {}
        self.changed: set[str] = set()

    def _path(self, symbol: str) -> Path | None:
        last = self.prices.latest(symbol)
        if last is None:
            return None
        path = getattr(self.prices, "path", None)
        low, high = path(symbol) if path is not None else (last, last)
        return Path(last=last, low=min(low, last), high=max(high, last))

    def step(self) -> int:
        """Process every live order once. Returns reports applied."""
        applied = 0
        terms: dict[str, tuple[Decimal | None, Decimal | None]] = {}
        changed: set[str] = set()
        for order_id in Order.objects.filter(order_status__in=LIVE).order_by("id").values_list("order_id", flat=True):
            try:
                with transaction.atomic():
                    applied += self._work(order_id, terms, changed)
            except Conflict:  # the user cancelled or modified it meanwhile: next step sees the new state
                if order_id in self.terms:
                    terms.setdefault(order_id, self.terms[order_id])
        self.terms, self.changed = terms, changed
        return applied

    def _report(self, order: Order, kind: str, **kw) -> int:
        _, done = execution_apply(order_id=order.order_id, exec_id=_exec_id(), kind=kind, **kw)
        return int(done)

    def _work(self, order_id: str, terms: dict[str, tuple[Decimal | None, Decimal | None]], changed: set[str]) -> int:
        order = order_lock(order_id)  # decided on the order as it is now, not as the step began
        if order.order_status not in LIVE:
            return 0
        now = terms[order_id] = (order.price, order.trigger_price)
        if self.terms.get(order_id, now) != now:  # changed since the previous step looked at it
            changed.add(order_id)
        modified = order_id in changed or order_id in self.changed
        exchange = order.instrument.exchange
        if order.expires_at is not None and sessions.clock() >= order.expires_at:
            order_cancel(order=order, reason=f"expired at the end of the {exchange} session (DAY)")
            return 1
        if not sessions.is_open(exchange):
            return 0  # AMO orders wait for the open; nothing trades on a closed exchange
        path = self._path(order.instrument.symbol)
        if path is None:
            return 0
        if modified:  # judged as it is now, against the market as it is now
            path = Path(path.last, path.last, path.last)
        status, kind, side = order.order_status, order.order_type, order.transaction_type
        if status == OrderStatus.AMO or (status == OrderStatus.TRIGGER_PENDING and _triggered(order, path)):
            # The venue opens it now (an AMO at the open, a stop whose trigger fired): it never rested
            # at its limit, so the next step judges it as an arriving order, at the last price, and
            # a limit the market is already through takes the market, not its limit.
            changed.add(order_id)
            return self._report(order, "accept")
        if status == OrderStatus.TRIGGER_PENDING:
            return 0
        if status == OrderStatus.PENDING:
            arriving_marketable = kind == OrderType.MARKET or (
                kind == OrderType.LIMIT
                and order.price is not None
                and _reached(side, Path(path.last, path.last, path.last), order.price)
            )
            if order.amo or kind in (OrderType.SL, OrderType.SL_M) or not arriving_marketable:
                accepted = self._report(order, "accept")
                if order.validity == Validity.IOC:  # nothing to fill at once: the whole order goes
                    order_cancel(order=order.order_id, reason="IOC: nothing could be filled at once")
                return accepted
            fill_price = path.last
            if order.price is not None:  # an arriving limit: the better of its limit and the market
                fill_price = min(path.last, order.price) if side == Side.BUY else max(path.last, order.price)
        elif kind in (OrderType.MARKET, OrderType.SL_M):
            fill_price = path.last
        else:
            assert order.price is not None  # LIMIT and SL orders have one (a check constraint)
            if not _reached(side, path, order.price):
                return 0
            fill_price = order.price  # resting: at its limit
            if modified:  # modified into the market: it takes the market, as an arriving limit does
                fill_price = min(path.last, order.price) if side == Side.BUY else max(path.last, order.price)
        quantity = min(order.pending_quantity, order.instrument.lot_size * LIQUIDITY_LOTS_PER_STEP)
        funded = quantity if order.reduce_only else fill_funded(order=order, quantity=quantity, price=fill_price)
        filled = self._report(order, "fill", quantity=funded, price=fill_price) if funded > 0 else 0
        if funded < quantity:
            order_cancel(
                order=order.order_id,
                reason=f"{INSUFFICIENT_FUNDS}: filling at {order.instrument.price_text(fill_price)} needs more "
                "margin than is available",
            )
            return filled + 1
        if order.validity == Validity.IOC:
            order.refresh_from_db()
            if order.order_status in LIVE:
                order_cancel(order=order.order_id, reason="IOC: the rest could not be filled at once")
        return filled
