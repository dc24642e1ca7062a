"""Every write to orders: the REST API, the executions API, the paper venue and the Django admin
all call these. The state machine is the TRANSITIONS table; each change locks the order row, so
a cancel racing a fill (or a modify racing a fill) is serialised and the loser gets Conflict."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import cast

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.caps import cap_check, leverage_cap
from accounts.models import User
from accounts.signals import account_access_changed
from core.compiled import CompiledGet
from core.errors import BadRequest, Conflict, NotFound
from market import sessions
from market.models import Instrument
from market.selectors import last_traded_price
from notifications.services import notification_create
from orders.events import order_message
from wire import iso, num

from .models import (
    LIVE,
    PRICED,
    TRIGGERED,
    Order,
    OrderSession,
    OrderStatus,
    OrderType,
    OrderUpdate,
    Side,
    Trade,
    UpdateType,
    Validity,
)
from .signals import order_updated

S = OrderStatus
TRANSITIONS: dict[str, frozenset[str]] = {
    # PENDING → CANCELLED: a withdrawn order is cancelled, never rejected (the venue confirms).
    S.PENDING: frozenset({S.OPEN, S.CANCELLED, S.REJECTED, S.TRIGGER_PENDING, S.AMO}),
    S.TRIGGER_PENDING: frozenset({S.OPEN, S.CANCELLED, S.REJECTED}),
    S.AMO: frozenset({S.OPEN, S.CANCELLED, S.REJECTED}),
    S.OPEN: frozenset({S.COMPLETE, S.CANCELLED}),
}
AVG_QUANT = Decimal("0.00000001")


def can_transition(current: str, target: str) -> bool:
    return target in TRANSITIONS.get(current, frozenset())


def _move(order: Order, target: str) -> None:
    if not can_transition(order.order_status, target):
        raise Conflict(
            f"order {order.order_id} is {order.order_status}; it cannot become {target}", code="invalid_transition"
        )
    order.order_status = target
    if target in (S.CANCELLED, S.REJECTED, S.COMPLETE):
        order.pending_quantity = Decimal(0)


def _record(order: Order, update_type: str, trade: Trade | None = None) -> OrderUpdate:
    """Save the order, append its history row and signal the update (broadcast on commit)."""
    if update_type != UpdateType.ORDER_PLACED:  # a placed order was inserted just now, as it stands
        order.version += 1
        order.save()
    update = OrderUpdate.objects.create(
        order=order, update_type=update_type, version=order.version, snapshot=order_message(order, update_type, trade)
    )
    order_updated.send(sender=Order, order=order, update=update)
    return update


def order_lock(order: Order | str) -> Order:
    order_id = order if isinstance(order, str) else order.order_id
    try:
        # of=("self",): lock the order row only, not the joined instrument every order shares.
        return Order.objects.select_for_update(of=("self",)).select_related("instrument").get(order_id=order_id)
    except Order.DoesNotExist:
        raise NotFound(f"no order {order_id}") from None


MAX_NUMBER = Decimal("1e15")


def _bad_number(value: object) -> str | None:
    """Why a decimal input cannot be stored (NaN, infinite, too large), or None."""
    if not isinstance(value, Decimal) or not value.is_finite():
        return "must be a finite number"
    if abs(value) >= MAX_NUMBER:
        return "must be below 1e15"
    return None


def _multiple_of(value: Decimal, step: Decimal) -> bool:
    return (value / step) == (value / step).to_integral_value()


def _validate_level(
    errors: dict, field: str, value: Decimal | None, *, needed: bool, order_type: str, tick: Decimal
) -> None:
    """A price-like field: present exactly when the order type needs it, positive, on the tick."""
    if not needed:
        if value is not None:
            errors[field] = f"not allowed for {order_type} orders"
    elif value is None:
        errors[field] = f"required for {order_type} orders"
    elif problem := _bad_number(value):
        errors[field] = problem
    elif value <= 0:
        errors[field] = "must be positive"
    elif not _multiple_of(value, tick):
        errors[field] = f"must be a multiple of the tick size {tick.normalize()}"


def _validate_prices(
    errors: dict,
    instrument: Instrument,
    order_type: str,
    side: str,
    price: Decimal | None,
    trigger_price: Decimal | None,
) -> None:
    tick = instrument.tick_size
    _validate_level(errors, "price", price, needed=order_type in PRICED, order_type=order_type, tick=tick)
    _validate_level(
        errors, "triggerPrice", trigger_price, needed=order_type in TRIGGERED, order_type=order_type, tick=tick
    )
    if order_type == OrderType.SL and not errors and price is not None and trigger_price is not None:
        if side == Side.BUY and price < trigger_price:
            errors["price"] = "a BUY stop-limit's price must be at or above its trigger price"
        if side == Side.SELL and price > trigger_price:
            errors["price"] = "a SELL stop-limit's price must be at or below its trigger price"


def _validate_quantity(errors: dict, instrument: Instrument, quantity: Decimal | None, field: str = "quantity") -> None:
    if quantity is not None and (problem := _bad_number(quantity)):
        errors[field] = problem
    elif quantity is None or quantity <= 0:
        errors[field] = "must be positive"
    elif not _multiple_of(quantity, instrument.lot_size):
        errors[field] = f"must be a multiple of the lot size {instrument.lot_size.normalize()}"


def _validate_session(errors: dict, instrument: Instrument, order_type: str, validity: str, amo: bool) -> None:
    """Time in force and the exchange's session: IOC is for market and limit orders placed to trade
    now; an after-market order only while the session is closed (it opens at the next open), a
    regular one only while it is open."""
    if validity not in Validity.values:
        errors["validity"] = f"must be one of {', '.join(Validity.values)}"
        return
    if validity == Validity.IOC and (amo or order_type not in (OrderType.MARKET, OrderType.LIMIT)):
        errors["validity"] = "IOC is for MARKET and LIMIT orders that trade now, not stops or after-market orders"
    if sessions.session_for(instrument.exchange) is None:
        return
    exchange = instrument.exchange
    if sessions.is_open(exchange) and amo:
        errors["amo"] = f"the {exchange} session is open: place a regular order (amo: false)"
    elif not sessions.is_open(exchange) and not amo:
        opens = iso(sessions.next_open(exchange))
        errors["amo"] = f"the {exchange} session is closed until {opens}: place an after-market order (amo: true)"


def _validate_against_market(
    errors: dict,
    instrument: Instrument,
    order_type: str,
    side: str,
    quantity: Decimal,
    price: Decimal | None,
    trigger_price: Decimal | None,
    last: Decimal | None,
    priced_at: Decimal | None = None,
) -> None:
    """The exchange's limits, as brokers apply them before an order goes out: a limit price inside
    the band around ``last``, the last traded price, a stop whose trigger the market has not already
    crossed (it would fire at once: place a market or limit order instead), and a notional within
    the maximum per order. Without a traded price yet, only the notional (at the reference price).
    ``priced_at``: the price or trigger the order keeps (a modification of its quantity alone), for
    the notional when neither ``price`` nor ``trigger_price`` is checked anew."""
    conf = settings.AXISOR_RISK
    band = Decimal(str(conf["PRICE_BAND"]))
    if last is not None and price is not None and not last * (1 - band) <= price <= last * (1 + band):
        errors["price"] = (
            f"must be within {band * 100:.0f} % of the last price {instrument.price_text(last)}"
            f" ({instrument.price_text(last * (1 - band))} to {instrument.price_text(last * (1 + band))})"
        )
    if last is not None and trigger_price is not None and order_type in TRIGGERED:
        crossed = trigger_price <= last if side == Side.BUY else trigger_price >= last
        if crossed:
            above_below = "above" if side == Side.BUY else "below"
            errors["triggerPrice"] = (
                f"a {side} stop's trigger must be {above_below} the last price {instrument.price_text(last)}"
            )
    reference = price or trigger_price or priced_at or last or instrument.reference_price
    limit = Decimal(str(conf["MAX_ORDER_NOTIONAL"]))
    if quantity * reference > limit:
        errors["quantity"] = f"the order's notional {(quantity * reference):,.2f} is above the maximum {limit:,.0f}"


# Every placement's instrument read: building and compiling it cost ~1 ms of a placement's ~10.
_active_instrument = CompiledGet(lambda: Instrument.objects.select_related("state").filter(active=True), "symbol")


def _new_order_id() -> str:
    return f"{timezone.now():%y%m%d}{secrets.randbelow(10**9):09d}"


def order_place_in_transaction(
    *,
    user: User,
    trading_symbol: str,
    exchange: str | None,
    order_type: str,
    transaction_type: str,
    quantity: Decimal,
    price: Decimal | None = None,
    trigger_price: Decimal | None = None,
    leverage: int = 1,
    amo: bool = False,
    reduce_only: bool = False,
    client_order_id: str = "",
    validity: str | None = None,
    closing: bool = False,
) -> Order:
    """Validate and record a new order in the caller's transaction, with no savepoint of its own: for
    a caller whose transaction any error ends (margin.account.order_submit). Everyone else calls
    ``order_place``, the same in a transaction (a savepoint when nested). Raises ValidationError, or
    Conflict ``duplicate_client_order_id``.

    ``closing``: a position's own close (a reduce-only MARKET order for all of it: the user's close,
    the guard's auto-close, a liquidation) is not held to the pre-trade limits. They guard against
    an order too large or priced too far from the market, and a close can only take risk away: a
    short opened at the notional cap is above it once the price rises, and a position built from
    several orders may be larger than one may be, and either must still close."""
    if not transaction.get_connection().in_atomic_block:
        raise transaction.TransactionManagementError("order_place_in_transaction needs a transaction")
    if closing and not (reduce_only and order_type == OrderType.MARKET):
        raise ValueError("only a reduce-only MARKET order closes a position")
    errors: dict[str, str] = {}
    # the instrument with its market state (the last traded price), in one read compiled once (the
    # symbol is unique: get(), with no ORDER BY to compile or run)
    try:
        instrument = _active_instrument.get(trading_symbol)
    except Instrument.DoesNotExist:
        raise ValidationError({"tradingSymbol": f"unknown instrument {trading_symbol!r}"}) from None
    if exchange and exchange != instrument.exchange:
        raise ValidationError({"exchange": f"{trading_symbol} trades on {instrument.exchange}, not {exchange}"})
    if order_type not in OrderType.values:
        errors["orderType"] = f"must be one of {', '.join(OrderType.values)}"
    if transaction_type not in Side.values:
        errors["transactionType"] = "must be BUY or SELL"
    if errors:
        raise ValidationError(errors)
    _validate_quantity(errors, instrument, quantity)
    _validate_prices(errors, instrument, order_type, transaction_type, price, trigger_price)
    if not errors and not closing:
        last = last_traded_price(instrument)
        _validate_against_market(errors, instrument, order_type, transaction_type, quantity, price, trigger_price, last)
    validity = validity or (Validity.DAY if instrument.exchange in sessions.SESSIONS else Validity.GTC)
    _validate_session(errors, instrument, order_type, validity, amo)
    # A position's own close is placed at 1x (margin.positions.closing_order): never refused here.
    cap, by_tier = leverage_cap(user.tier, instrument.max_leverage)
    if not 1 <= leverage <= cap:
        errors["leverage"] = f"must be between 1 and {cap} for {instrument.symbol}" + (
            f" ({user.tier} accounts may use at most {cap}x)" if by_tier else ""
        )
    elif 1 / Decimal(leverage) <= instrument.maintenance_margin_rate:
        # the initial margin must exceed the maintenance margin, or the position opens liquidated
        errors["leverage"] = (
            f"must be below {(1 / instrument.maintenance_margin_rate).normalize()} for {instrument.symbol}"
            f" (maintenance margin rate {instrument.maintenance_margin_rate.normalize()})"
        )
    if errors:
        raise ValidationError(errors)
    order = Order(
        user=user,
        instrument=instrument,
        order_type=order_type,
        transaction_type=transaction_type,
        quantity=quantity,
        pending_quantity=quantity,
        price=price,
        trigger_price=trigger_price,
        leverage=leverage,
        amo=amo,
        reduce_only=reduce_only,
        client_order_id=client_order_id,
        validity=validity,
        expires_at=sessions.day_end(instrument.exchange, sessions.clock()) if validity == Validity.DAY else None,
    )
    _check_client_order_id(user, client_order_id)
    for _ in range(5):
        order.order_id = _new_order_id()
        try:
            with transaction.atomic():
                order.save()
            break
        except IntegrityError:
            if Order.objects.filter(order_id=order.order_id).exists():
                continue  # id collision: draw again
            _check_client_order_id(user, client_order_id)  # placed at the same moment by another request
            raise
    _record(order, UpdateType.ORDER_PLACED)
    return order


# Place an order: validate and record it, in a transaction of its own (a savepoint when nested).
order_place = transaction.atomic(order_place_in_transaction)


@transaction.atomic
def order_modify(
    *,
    order: Order | str,
    quantity: Decimal | None = None,
    price: Decimal | None = None,
    trigger_price: Decimal | None = None,
) -> Order:
    order = order_lock(order)
    if order.order_status not in LIVE:
        raise Conflict(
            f"order {order.order_id} is {order.order_status}; it cannot be modified", code="invalid_transition"
        )
    # Each modification is an update row kept with the order (its history): at most this many per
    # order (Kite allows 25), so no order's history grows without bound.
    most = cast(int, settings.AXISOR_ORDERS["MAX_MODIFICATIONS"])
    if order.updates.filter(update_type=UpdateType.ORDER_MODIFIED).count() >= most:
        raise Conflict(
            f"order {order.order_id} was modified {most} times, the most an order may be; place a new one",
            code="limit_exceeded",
        )
    if quantity is None and price is None and trigger_price is None:
        raise ValidationError({"non_field_errors": "give at least one of quantity, price, triggerPrice"})
    errors: dict[str, str] = {}
    new_price = order.price if price is None else price
    new_trigger = order.trigger_price if trigger_price is None else trigger_price
    if price is not None and order.order_type not in PRICED:
        errors["price"] = f"{order.order_type} orders have no price"
    if trigger_price is not None and order.order_type not in TRIGGERED:
        errors["triggerPrice"] = f"{order.order_type} orders have no trigger price"
    if not errors:
        _validate_prices(errors, order.instrument, order.order_type, order.transaction_type, new_price, new_trigger)
    if not errors and (price is not None or trigger_price is not None or quantity is not None):
        _validate_against_market(
            errors,
            order.instrument,
            order.order_type,
            order.transaction_type,
            order.quantity if quantity is None else quantity,
            new_price if price is not None else None,
            new_trigger if trigger_price is not None and order.order_status == S.TRIGGER_PENDING else None,
            last_traded_price(order.instrument),
            priced_at=new_price or new_trigger,
        )
    if quantity is not None:
        _validate_quantity(errors, order.instrument, quantity)
        if "quantity" not in errors and quantity <= order.filled_quantity:
            errors["quantity"] = f"must be above the filled quantity {order.filled_quantity.normalize()}"
    if errors:
        raise ValidationError(errors)
    _check_leverage_still_allowed(order, quantity=quantity, price=price, trigger_price=trigger_price)
    if quantity is not None:
        order.quantity = quantity
        order.pending_quantity = quantity - order.filled_quantity
    order.price, order.trigger_price = new_price, new_trigger
    _record(order, UpdateType.ORDER_MODIFIED)
    return order


def _check_leverage_still_allowed(
    order: Order, *, quantity: Decimal | None, price: Decimal | None, trigger_price: Decimal | None
) -> None:
    """A working order whose leverage is above what its account's tier may use now (the tier went
    down after it was placed) is not modified in a way that could add exposure: only a smaller
    quantity, and the cancel, take no risk on. A reduce-only order adds none."""
    reducing = quantity is not None and quantity <= order.quantity and price is None and trigger_price is None
    if order.reduce_only or reducing:
        return
    tier = User.objects.values_list("tier", flat=True).get(pk=order.user_id)
    cap, by_tier = leverage_cap(tier, order.instrument.max_leverage)
    if order.leverage > cap:
        symbol = order.instrument.symbol
        most = f"the {cap} {tier} accounts may use for {symbol}" if by_tier else f"{symbol}'s maximum {cap}"
        raise ValidationError(
            {
                "leverage": f"the order's leverage {order.leverage} is above {most}:"
                f" cancel it and place it again at {cap} or less"
            }
        )


@transaction.atomic
def order_cancel(*, order: Order | str, reason: str = "") -> Order:
    """Cancel a working order; ``reason`` (the venue's: an expired DAY order, an IOC's rest) is
    sent as the update's status message (``rejectionReason``)."""
    order = order_lock(order)
    _move(order, S.CANCELLED)
    if reason:
        order.rejection_reason = reason[:255]
    _record(order, UpdateType.ORDER_CANCELLED)
    return order


def _check_client_order_id(user: User, client_order_id: str) -> None:
    if client_order_id and Order.objects.filter(user=user, client_order_id=client_order_id).exists():
        raise Conflict(
            f"you already have an order with clientOrderId {client_order_id!r}", code="duplicate_client_order_id"
        )


def order_cancel_all(*, user: User, symbol: str | None = None) -> tuple[list[Order], list[tuple[str, str, str]]]:
    """Cancel every working order of the user (of one symbol), each in its own transaction: one the
    venue completes meanwhile is reported in ``failed`` as (orderId, code, detail), not an error."""
    live = Order.objects.filter(user=user, order_status__in=LIVE).order_by("id")
    if symbol:
        live = live.filter(instrument__symbol=symbol)
    cancelled, failed = [], []
    for order_id in live.values_list("order_id", flat=True):
        try:
            cancelled.append(order_cancel(order=order_id))
        except Conflict as exc:
            failed.append((order_id, exc.code, str(exc)))
    return cancelled, failed


@transaction.atomic
def order_reject(*, order: Order | str, reason: str) -> Order:
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "a rejection needs a reason"})
    order = order_lock(order)
    _move(order, S.REJECTED)
    order.rejection_reason = reason[:255]
    _record(order, UpdateType.ORDER_REJECTED)
    _notify(order, "Order rejected", f"{_describe(order)} was rejected: {order.rejection_reason}", "error")
    return order


def _describe(order: Order) -> str:
    return f"{order.transaction_type} {num(order.quantity)} {order.instrument.symbol} ({order.order_id})"


def _notify(order: Order, title: str, message: str, type_: str) -> None:
    notification_create(
        user=order.user_id,
        title=title,
        message=message,
        type=type_,
        category="orders",
        data={"orderId": order.order_id, "orderStatus": order.order_status},
    )


def _accepted_status(order: Order) -> str:
    if order.order_status == S.PENDING:
        if order.amo:
            return S.AMO
        if order.order_type in TRIGGERED:
            return S.TRIGGER_PENDING
    return S.OPEN


@transaction.atomic
def order_accept(*, order: Order | str) -> Order:
    """The venue took the order: PENDING → OPEN (or TRIGGER_PENDING for stops, AMO for after-market);
    a stop whose trigger fired, or an AMO at the open: → OPEN."""
    order = order_lock(order)
    _move(order, _accepted_status(order))
    _record(order, UpdateType.ORDER_STATUS)
    return order


def _limits_had(order: Order) -> set[Decimal]:
    """Every limit price ``order`` has had: its own and those of the snapshots its updates sent
    (placement, modifications; numbers in JSON, each with at most 8 decimals, so a float's shortest
    repr is the price)."""
    limits = {order.price} if order.price is not None else set()
    for snapshot in order.updates.values_list("snapshot", flat=True):
        had = snapshot.get("price") if isinstance(snapshot, dict) else None
        if isinstance(had, int | float) and had > 0:
            limits.add(Decimal(repr(had)))
    return limits


def _on_tick(value: Decimal, tick: Decimal, rounding: str) -> Decimal:
    return (value / tick).to_integral_value(rounding=rounding) * tick


def _check_fill_band(order: Order, price: Decimal) -> None:
    """A fill with no limit to bound it, reported from outside: within ``AXISOR_RISK["FILL_BAND"]``
    of the instrument's last price, or before its first trade of its reference price (what the
    pre-trade check held the order at, and what its position is valued at until a tick comes).
    An outside venue's report of a MARKET BUY at 999,999,999,999,999 was booked, its fee alone
    taking the balance below zero; a refused report records nothing, its execId included, so the
    venue may send it again once the market has caught up."""
    instrument = order.instrument
    last = last_traded_price(instrument)
    anchor = instrument.reference_price if last is None else last
    band = Decimal(str(settings.AXISOR_RISK["FILL_BAND"]))
    low, high = anchor * (1 - band), anchor * (1 + band)
    if not low <= price <= high:
        which = "last price" if last is not None else "reference price"
        raise BadRequest(
            f"a {order.order_type} fill must be within {(band * 100).normalize():f} % of {instrument.symbol}'s"
            f" {which} {instrument.price_text(anchor)}{'' if last is not None else ' (no trade yet)'}"
            # the band's ends on the tick grid, inwards: every price shown as in it is
            f" ({instrument.price_text(_on_tick(low, instrument.tick_size, ROUND_CEILING))}"
            f" to {instrument.price_text(_on_tick(high, instrument.tick_size, ROUND_FLOOR))})",
            code="fill_price_out_of_band",
        )


@transaction.atomic
def order_trade_add(
    *,
    order: Order | str,
    exec_id: str,
    quantity: Decimal | None,
    price: Decimal | None,
    executed_at: datetime | None = None,
    liquidation: bool = False,
    banded: bool = False,
) -> tuple[Order, Trade]:
    """The order's side of one execution leg: the trade, the filled and pending quantities, COMPLETE
    when nothing is pending. A fill on a PENDING, TRIGGER_PENDING or AMO order implies acceptance.
    Sends nothing: ``margin.executions.execution_fill`` moves the position, then ``order_fill_record``.

    A limit never fills at a worse price than every limit it has had. ``banded`` (a report from
    outside the paper venue): a MARKET or SL-M fill, which has no limit, is refused (BadRequest
    ``fill_price_out_of_band``) further than ``AXISOR_RISK["FILL_BAND"]`` from the last price."""
    order = order_lock(order)
    if order.order_status in (S.PENDING, S.TRIGGER_PENDING, S.AMO):
        _move(order, S.OPEN)
    if order.order_status != S.OPEN:
        raise Conflict(
            f"order {order.order_id} is {order.order_status}; it cannot be filled", code="invalid_transition"
        )
    errors: dict[str, str] = {}
    _validate_quantity(errors, order.instrument, quantity)
    if price is None or _bad_number(price) or price <= 0 or price != price.quantize(Decimal("1e-8")):
        errors["price"] = "a fill needs a positive price with at most 8 decimals"
    elif order.order_type in PRICED and order.price is not None:
        # A limit is a promise: never a worse price. An outside venue's report of a BUY limit at 625
        # filled at 999,999,999,999,999 was booked, and its fee alone took the balance to -5e16.
        buy = order.transaction_type == Side.BUY
        if price > order.price if buy else price < order.price:
            # ... than any limit the order has had: a venue that filled at the limit it had, before
            # a modification reached it, reports an honest trade (refused, it was never booked).
            limits = _limits_had(order)
            widest = max(limits) if buy else min(limits)
            if price > widest if buy else price < widest:
                above_below = "above" if buy else "below"
                errors["price"] = (
                    f"a {order.transaction_type} limit at {widest.normalize():f} cannot fill {above_below} it"
                )
    if errors:
        raise ValidationError(errors)
    assert quantity is not None and price is not None  # else refused just above
    if banded and order.order_type in (OrderType.MARKET, OrderType.SL_M):
        _check_fill_band(order, price)
    if quantity > order.pending_quantity:
        raise Conflict(
            f"fill of {quantity.normalize()} exceeds the pending {order.pending_quantity.normalize()}", code="overfill"
        )
    trade = Trade.objects.create(
        trade_id=f"{order.order_id}{order.trades.count() + 1:03d}",
        exec_id=exec_id,
        order=order,
        user_id=order.user_id,
        quantity=quantity,
        price=price,
        time=executed_at or timezone.now(),
        liquidation=liquidation,
    )
    order.filled_quantity += quantity
    order.filled_notional += quantity * price
    order.average_price = (order.filled_notional / order.filled_quantity).quantize(AVG_QUANT)
    order.pending_quantity = order.quantity - order.filled_quantity
    if order.pending_quantity == 0:
        _move(order, S.COMPLETE)
    return order, trade


def order_fill_record(*, order: Order, trade: Trade) -> None:
    """The updates (and, once complete, the notification) of a fill ``order_trade_add`` made."""
    _record(order, UpdateType.TRADE_UPDATE, trade)
    _record(order, UpdateType.ORDER_EXECUTED if order.order_status == S.COMPLETE else UpdateType.ORDER_PARTIAL)
    if order.order_status == S.COMPLETE:
        price = order.instrument.price_text(order.average_price)
        _notify(order, "Order executed", f"{_describe(order)} executed at {price}", "success")


# ---- order-socket sessions ---------------------------------------------------------------------


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@transaction.atomic
def order_session_create(*, user: User) -> tuple[OrderSession, str]:
    """A session + token for /ws/orders. The token is returned once; only its hash is kept. Refused
    (409 ``limit_exceeded``) past the tier's CAP_ORDER_SESSIONS live ones (expired and revoked
    sessions do not count)."""
    live = OrderSession.objects.filter(user=user, revoked_at__isnull=True, expires_at__gt=timezone.now())
    cap_check(user=user, name="ORDER_SESSIONS", what="live order-socket sessions", count=live.count)
    token = secrets.token_urlsafe(32)
    session = OrderSession.objects.create(
        session=f"sess_{secrets.token_hex(12)}",
        token_hash=_token_hash(token),
        user=user,
        # AXISOR_ORDERS mixes value types, so mypy reads its values as object.
        expires_at=timezone.now() + timedelta(seconds=cast(int, settings.AXISOR_ORDERS["SESSION_SECONDS"])),
    )
    return session, token


@transaction.atomic
def order_session_revoke(*, session: OrderSession) -> OrderSession:
    if session.revoked_at is None:
        session.revoked_at = timezone.now()
        session.save(update_fields=["revoked_at"])
        account_access_changed.send(sender=User, user=session.user)
    return session


def order_session_check(session_id: str, token: str) -> OrderSession | None:
    """The live session these credentials open, or None (bad, expired, revoked, inactive user)."""
    if not (isinstance(session_id, str) and isinstance(token, str)) or len(session_id) > 40 or len(token) > 200:
        return None
    if "\x00" in session_id:  # PostgreSQL text cannot hold NUL: the query raised (handshake 500, not 403)
        return None
    found = OrderSession.objects.select_related("user").filter(session=session_id).first()
    if found is None or not hmac.compare_digest(found.token_hash, _token_hash(token)):
        return None
    if found.revoked_at is not None or found.expires_at <= timezone.now() or not found.user.is_active:
        return None
    return found
