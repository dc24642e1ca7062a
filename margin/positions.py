"""Positions: each fill folded into the user's net position (open, add, reduce, close, flip),
and the guard levels each position is indexed by. ``margin.executions.execution_fill`` calls
``position_apply_fill`` in the fill's transaction.

Lock order: a Position row before the user's event sequence (publishing), everywhere.
"""

from __future__ import annotations

import logging
import uuid
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from core.errors import Conflict
from ledger.models import EntryKind
from ledger.services import ledger_post
from market.models import decimal_text
from notifications.services import notification_create
from orders.models import LIVE, Order, Side
from orders.services import order_cancel, order_place
from wire import iso, num

from .formula import MONEY_QUANT, FillEffect, fill_effect, liquidation_price, price_at_distance
from .models import (
    CloseKind,
    MarginGuardConfig,
    MarginGuardExecution,
    Position,
    PositionSide,
    PositionStatus,
)
from .signals import auto_closed, positions_changed

logger = logging.getLogger(__name__)


LONG, SHORT = PositionSide.LONG, PositionSide.SHORT
OPEN = PositionStatus.OPEN


PRICE_QUANT = Decimal("1e-8")


LEVERAGE_QUANT = Decimal("0.01")


MAX_COOLDOWN_SECONDS = 7 * 86400


def _band() -> Decimal:
    return Decimal(str(settings.AXISOR_MARGIN["REARM_BAND"]))


def guard_config(user_id: int) -> MarginGuardConfig:
    """The user's guard settings; an unsaved row with the defaults when the user never set them."""
    return MarginGuardConfig.objects.filter(user_id=user_id).first() or MarginGuardConfig(user_id=user_id)


def guard_configs(user_ids) -> dict[int, MarginGuardConfig]:
    found = {c.user_id: c for c in MarginGuardConfig.objects.filter(user_id__in=list(user_ids))}
    return {uid: found.get(uid) or MarginGuardConfig(user_id=uid) for uid in user_ids}


def position_reindex(position: Position, config: MarginGuardConfig) -> None:
    """Liquidation, guard and re-arm prices from the position's entry, leverage and the settings."""
    m = position.instrument.maintenance_margin_rate
    position.liquidation_price = liquidation_price(position.side, position.entry_price, position.leverage, m)
    if config.enabled:
        position.guard_price = price_at_distance(position.entry_price, position.liquidation_price, config.threshold)
        position.rearm_price = price_at_distance(
            position.entry_price, position.liquidation_price, min(Decimal(1), config.threshold + _band())
        )
    else:
        position.guard_price = position.rearm_price = None
        position.guard_armed, position.guard_rearm_at = True, None


def _open(order: Order, signed: Decimal, price: Decimal, config: MarginGuardConfig) -> Position:
    position = Position(
        user_id=order.user_id,
        instrument=order.instrument,
        side=LONG if signed > 0 else SHORT,
        quantity=abs(signed),
        entry_price=price,
        leverage=Decimal(order.leverage),
    )
    position_reindex(position, config)
    position.save()
    return position


def _closed(position: Position, order: Order, now, *, flipped: bool) -> Order | None:
    """Mark the position closed by ``order``. Returns a close order of its own still working (the
    user's close, the guard's) that this fill made stale: the caller withdraws it once the fill's
    money is booked, because the withdrawal publishes (the user's event sequence) and the ledger
    locks the account, which comes first in the order of locks."""
    position.status = PositionStatus.CLOSED
    position.closed_at = now
    ours = position.close_order_id == order.pk
    position.close_reason = position.close_kind if ours and position.close_kind else ("flipped" if flipped else "order")
    position.guard_price = position.rearm_price = None
    stale = position.close_order if position.close_order_id and not ours else None
    return stale if stale is not None and stale.order_status in LIVE else None


def close_order_withdraw(order: Order) -> None:
    """Cancel a close order left over when the position closed otherwise, unless the venue holds the
    order right now: waiting on it here could deadlock against that fill. It is reduce-only, so if
    it fills after all, the fill is clamped to nothing and the order cancelled then."""
    if Order.objects.select_for_update(skip_locked=True, of=("self",)).filter(pk=order.pk).exists():
        try:
            order_cancel(order=order.order_id)
        except Conflict:
            pass


def closing_order(position: Position) -> Order:
    """A reduce-only MARKET order for the whole position, on the other side, through the orders
    service: it can only ever bring the position to flat, so the pre-trade limits (order size,
    price band) do not hold it back (``closing``)."""
    return order_place(
        user=position.user,
        trading_symbol=position.instrument.symbol,
        exchange=None,
        order_type="MARKET",
        transaction_type=Side.SELL if position.side == LONG else Side.BUY,
        quantity=position.quantity,
        leverage=1,
        reduce_only=True,
        closing=True,
    )


def fee_rate(*, liquidation: bool = False) -> Decimal:
    """The trading fee per unit of notional (``AXISOR_RISK["FEE_RATE"]``), or the liquidation fee's."""
    return Decimal(str(settings.AXISOR_RISK["LIQUIDATION_FEE_RATE" if liquidation else "FEE_RATE"]))


@transaction.atomic
def position_apply_fill(*, order: Order, quantity: Decimal, price: Decimal) -> list[Position]:
    """Fold one fill into the user's net position in the instrument, and book its money: the
    realised PnL of what it closed, the trading fee, and a liquidation's fee (``margin.formula.
    fill_effect``: isolated margin, a loss never beyond the margin its part held). Returns the rows
    changed (a flip closes one row and opens another)."""
    signed = quantity if order.transaction_type == Side.BUY else -quantity
    config = guard_config(order.user_id)
    now = timezone.now()
    position = (
        Position.objects.select_for_update(of=("self",))
        # not the close order: read after the lock (in _closed), or it is the one this statement's
        # snapshot saw, from before a close that committed while this fill waited for the lock
        .select_related("instrument", "guard_execution")
        .filter(user_id=order.user_id, instrument_id=order.instrument_id, status=OPEN)
        .first()
    )
    held = Decimal(0) if position is None else (position.quantity if position.side == LONG else -position.quantity)
    effect = fill_effect(
        signed=held,
        entry=position.entry_price if position else price,
        leverage=position.leverage if position else Decimal(order.leverage),
        fill=signed,
        price=price,
        order_leverage=Decimal(order.leverage),
        fee_rate=fee_rate(),
    )
    note = f"order {order.order_id}: {quantity.normalize():f} at {price.normalize():f}"
    if position is None:
        changed = [_open(order, signed, price, config)]
    elif effect.closing == 0:  # add: average entry, margin-weighted leverage
        position.quantity, position.entry_price, position.leverage = abs(effect.signed), effect.entry, effect.leverage
        position_reindex(position, config)
        position.save()
        changed = [position]
    else:  # reduce, close or flip
        position.realized_pnl += effect.pnl
        position.uncovered_loss += effect.uncovered
        stale = None
        outgrown = False
        if effect.closing == position.quantity:
            stale = _closed(position, order, now, flipped=effect.flipped)
        else:
            position.quantity -= effect.closing
            # The guard's close filled in full and the position is still open: it grew while the
            # close worked (an opening order the venue held when the guard fired, and so could not
            # be withdrawn, filled after it). The guard closes what is left.
            outgrown = (
                position.close_order_id == order.pk
                and position.close_kind == CloseKind.AUTO_CLOSE
                and order.order_status not in LIVE
            )
        liquidated = position.status == PositionStatus.CLOSED and position.close_reason == CloseKind.LIQUIDATION
        # What the closed part's margin has left after its loss and fee pays the liquidation fee.
        position.save()
        # The money, in the fill's transaction (after the position's lock, before the user's event
        # sequence: the order of locks everywhere).
        ledger_post(
            user_id=order.user_id,
            kind=EntryKind.LIQUIDATION if liquidated else EntryKind.REALIZED_PNL,
            amount=effect.pnl,
            reference=position.public_id,
            note=note + (f"; {effect.uncovered.normalize():f} beyond its margin not charged" * bool(effect.uncovered)),
        )
        if stale is not None:
            close_order_withdraw(stale)
        if outgrown:
            try:
                with transaction.atomic():  # a refusal (say the exchange's session closed) is not the fill's
                    position.close_order = closing_order(position)
                    position.save(update_fields=["close_order", "updated_at"])
            except (ValidationError, Conflict):
                position.close_order = order
                logger.exception("the guard's follow-up close of %s was refused", position.public_id)
        changed = [position]
        if position.status == PositionStatus.CLOSED:
            _after_close(position, order, now)
        if effect.flipped:
            changed.append(_open(order, effect.signed, price, config))
    ledger_post(
        user_id=order.user_id,
        kind=EntryKind.FEE,
        amount=-effect.fees,
        reference=changed[-1].public_id,
        note=f"trading fee, {note}",
    )
    if position is not None and position.close_reason == CloseKind.LIQUIDATION and effect.closing:
        _liquidation_fee(position, order, effect, price)
    positions_changed.send(sender=Position, positions=changed)
    return changed


def _liquidation_fee(position: Position, order: Order, effect: FillEffect, price: Decimal) -> None:
    """The liquidation fee, out of what the liquidated position's margin has left after its loss and
    the trading fee (never beyond it: isolated margin)."""
    held_margin = (effect.closing * position.entry_price / position.leverage).quantize(MONEY_QUANT)
    left = max(Decimal(0), held_margin + effect.pnl - effect.fees)
    amount = min(left, (effect.closing * price * fee_rate(liquidation=True)).quantize(MONEY_QUANT))
    ledger_post(
        user_id=order.user_id,
        kind=EntryKind.FEE,
        amount=-amount,
        reference=position.public_id,
        note=f"liquidation fee, order {order.order_id}",
    )


def _after_close(position: Position, order: Order, now) -> None:
    symbol = position.instrument.symbol
    pnl = num(position.realized_pnl.quantize(PRICE_QUANT))
    if position.close_reason == CloseKind.LIQUIDATION:
        notification_create(
            user=position.user_id,
            title="Position liquidated",
            message=f"Your {position.side} {symbol} position was liquidated at "
            f"{position.instrument.price_text(order.average_price or position.liquidation_price)}"
            f" (realized pnl {decimal_text(pnl)})",
            type="error",
            category="margin_guard",
            data={"positionId": position.public_id, "symbol": symbol, "orderId": order.order_id, "pnl": pnl},
        )
    elif position.close_reason == CloseKind.AUTO_CLOSE and position.guard_execution_id:
        execution = MarginGuardExecution.objects.select_for_update().get(pk=position.guard_execution_id)
        record = {
            "executionId": f"auto_close_{uuid.uuid4().hex[:12]}",
            "positionId": position.public_id,
            "orderId": order.order_id,
            "pnl": pnl,
            "executedAt": iso(now),
        }
        execution.auto_closes = [*execution.auto_closes, record]
        execution.save(update_fields=["auto_closes"])
        auto_closed.send(sender=MarginGuardExecution, execution=execution, position=position, record=record)
        notification_create(
            user=position.user_id,
            title="Position closed by Margin Guard",
            message=f"Your {position.side} {symbol} position was closed automatically"
            f" (realized pnl {decimal_text(pnl)})",
            type="warning",
            category="margin_guard",
            data={"positionId": position.public_id, "executionId": record["executionId"], "pnl": pnl},
        )
