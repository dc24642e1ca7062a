"""Every write to positions and the Margin Guard.

- ``position_apply_fill``: the orders service calls it for each fill, in the fill's transaction
  (open, add, reduce, close, flip).
- ``positions_evaluate``: ``ticks_ingest`` calls it with each symbol's tick path, in the ingest's
  transaction. It reads only the positions whose state can change at these prices, through
  indexes on the liquidation price, the guard price (distance = threshold) and the re-arm price
  (distance = threshold + band): liquidations, guards that fire, guards that re-arm.
- ``position_close``, ``position_liquidate``, ``margin_guard_config_set``.

Lock order: a Position row before the user's event sequence (publishing), everywhere.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from axisor.errors import Conflict
from axisor.realtime.publish import iso
from market.models import decimal_text
from notifications.services import notification_create, notification_create_each
from orders.events import num
from orders.models import LIVE, Order, Side

from .formula import distance_to_liquidation, in_risk, liquidation_price, price_at_distance, recovered
from .models import (
    CloseKind,
    GuardAction,
    MarginGuardConfig,
    MarginGuardExecution,
    Position,
    PositionSide,
    PositionStatus,
)
from .signals import auto_closed, guard_executed, positions_changed, prices_moved

logger = logging.getLogger(__name__)

LONG, SHORT = PositionSide.LONG, PositionSide.SHORT
OPEN = PositionStatus.OPEN
PRICE_QUANT = Decimal("1e-8")
LEVERAGE_QUANT = Decimal("0.01")
MAX_COOLDOWN_SECONDS = 7 * 86400


def _band() -> Decimal:
    return Decimal(str(settings.AXISOR_MARGIN["REARM_BAND"]))


# ---- configuration -----------------------------------------------------------------------------


def guard_config(user_id: int) -> MarginGuardConfig:
    """The user's guard settings; an unsaved row with the defaults when the user never set them."""
    return MarginGuardConfig.objects.filter(user_id=user_id).first() or MarginGuardConfig(user_id=user_id)


def guard_configs(user_ids) -> dict[int, MarginGuardConfig]:
    found = {c.user_id: c for c in MarginGuardConfig.objects.filter(user_id__in=list(user_ids))}
    return {uid: found.get(uid) or MarginGuardConfig(user_id=uid) for uid in user_ids}


def _reindex(position: Position, config: MarginGuardConfig) -> None:
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


@transaction.atomic
def margin_guard_config_set(
    *,
    user,
    enabled: bool | None = None,
    threshold: Decimal | None = None,
    action: str | None = None,
    cooldown_seconds: int | None = None,
) -> MarginGuardConfig:
    """Change any of the settings (None keeps the current value); re-index the open positions."""
    errors = {}
    if enabled is not None and not isinstance(enabled, bool):
        errors["enabled"] = "must be true or false"
    if threshold is not None and not (isinstance(threshold, Decimal) and threshold.is_finite() and 0 < threshold < 1):
        errors["threshold"] = "must be a number strictly between 0 and 1"
    if action is not None and action not in GuardAction.values:
        errors["action"] = f"must be one of {', '.join(GuardAction.values)}"
    if cooldown_seconds is not None and (
        isinstance(cooldown_seconds, bool)
        or not isinstance(cooldown_seconds, int)
        or not 0 <= cooldown_seconds <= MAX_COOLDOWN_SECONDS
    ):
        errors["cooldownSeconds"] = f"must be a whole number of seconds from 0 to {MAX_COOLDOWN_SECONDS}"
    if errors:
        raise ValidationError(errors)
    config, _ = MarginGuardConfig.objects.select_for_update().get_or_create(user=user)
    was_enabled = config.enabled
    if enabled is not None:
        config.enabled = enabled
    if threshold is not None:
        config.threshold = threshold.quantize(Decimal("0.00001"))
        if not 0 < config.threshold < 1:
            raise ValidationError({"threshold": "must be a number strictly between 0 and 1"})
    if action is not None:
        config.action = action
    if cooldown_seconds is not None:
        config.cooldown_seconds = cooldown_seconds
    config.save()
    positions = list(
        Position.objects.select_for_update().select_related("instrument").filter(user=user, status=OPEN).order_by("pk")
    )
    for position in positions:
        _reindex(position, config)
        if config.enabled and not was_enabled:
            position.guard_armed, position.guard_rearm_at = True, None
    Position.objects.bulk_update(positions, ["guard_price", "rearm_price", "guard_armed", "guard_rearm_at"])
    if positions:
        positions_changed.send(sender=Position, positions=positions)
    return config


# ---- fills -------------------------------------------------------------------------------------


def _open(order: Order, signed: Decimal, price: Decimal, config: MarginGuardConfig) -> Position:
    position = Position(
        user_id=order.user_id,
        instrument=order.instrument,
        side=LONG if signed > 0 else SHORT,
        quantity=abs(signed),
        entry_price=price,
        leverage=Decimal(order.leverage),
    )
    _reindex(position, config)
    position.save()
    return position


def _closed(position: Position, order: Order, now, *, flipped: bool) -> None:
    position.status = PositionStatus.CLOSED
    position.closed_at = now
    ours = position.close_order_id == order.pk
    position.close_reason = position.close_kind if ours and position.close_kind else ("flipped" if flipped else "order")
    position.guard_price = position.rearm_price = None
    stale = position.close_order if position.close_order_id and not ours else None
    if stale is not None and stale.order_status in LIVE:
        _cancel_if_free(stale, f"{position.public_id} already closed")


def _cancel_if_free(order: Order, reason: str) -> None:
    """Withdraw a close order left over when the position closed otherwise (a PENDING order cannot
    be cancelled, the venue rejects it), unless the venue holds the order right now: waiting on it
    here could deadlock against that fill."""
    from orders.services import order_cancel, order_reject

    if Order.objects.select_for_update(skip_locked=True, of=("self",)).filter(pk=order.pk).exists():
        try:
            if order.order_status == "PENDING":
                order_reject(order=order.order_id, reason=reason)
            else:
                order_cancel(order=order.order_id)
        except Conflict:
            pass


@transaction.atomic
def position_apply_fill(*, order: Order, quantity: Decimal, price: Decimal) -> list[Position]:
    """Fold one fill into the user's net position in the instrument. Returns the rows changed
    (a flip closes one row and opens another)."""
    signed = quantity if order.transaction_type == Side.BUY else -quantity
    config = guard_config(order.user_id)
    now = timezone.now()
    position = (
        Position.objects.select_for_update(of=("self",))
        .select_related("instrument", "close_order", "guard_execution")
        .filter(user_id=order.user_id, instrument_id=order.instrument_id, status=OPEN)
        .first()
    )
    if position is None:
        changed = [_open(order, signed, price, config)]
    elif (position.side == LONG) == (signed > 0):  # add: average entry, margin-weighted leverage
        added = abs(signed)
        margin = position.margin + added * price / Decimal(order.leverage)
        quantity_after = position.quantity + added
        position.entry_price = ((position.quantity * position.entry_price + added * price) / quantity_after).quantize(
            PRICE_QUANT
        )
        position.quantity = quantity_after
        position.leverage = max(Decimal(1), (quantity_after * position.entry_price / margin).quantize(LEVERAGE_QUANT))
        _reindex(position, config)
        position.save()
        changed = [position]
    else:  # reduce, close or flip
        closing = min(abs(signed), position.quantity)
        sign = 1 if position.side == LONG else -1
        position.realized_pnl += (price - position.entry_price) * closing * sign
        rest = abs(signed) - closing
        if closing == position.quantity:
            _closed(position, order, now, flipped=rest > 0)
        else:
            position.quantity -= closing
        position.save()
        changed = [position]
        if position.status == PositionStatus.CLOSED:
            _after_close(position, order, now)
        if rest > 0:
            changed.append(_open(order, rest if signed > 0 else -rest, price, config))
    positions_changed.send(sender=Position, positions=changed)
    return changed


def _after_close(position: Position, order: Order, now) -> None:
    symbol = position.instrument.symbol
    pnl = num(position.realized_pnl.quantize(PRICE_QUANT))
    if position.close_reason == CloseKind.LIQUIDATION:
        notification_create(
            user=position.user_id,
            title="Position liquidated",
            message=f"Your {position.side} {symbol} position was liquidated at "
            f"{position.instrument.price_text(position.liquidation_price)} (realized pnl {decimal_text(pnl)})",
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


# ---- closing -----------------------------------------------------------------------------------


@transaction.atomic
def position_close(*, position: Position, kind: str = CloseKind.MANUAL, execution=None) -> Order:
    """Close with a MARKET order through the orders service (order updates flow as for any order);
    the position closes when the order fills."""
    position = (
        Position.objects.select_for_update(of=("self",)).select_related("instrument", "close_order").get(pk=position.pk)
    )
    if position.status != OPEN:
        raise Conflict(f"{position.public_id} is already closed", code="position_closed")
    if position.close_order is not None and position.close_order.order_status in LIVE:
        raise Conflict(
            f"{position.public_id} already has a close order {position.close_order.order_id} working",
            code="close_pending",
        )
    order = _closing_order(position)
    position.close_order, position.close_kind, position.guard_execution = order, kind, execution
    position.save(update_fields=["close_order", "close_kind", "guard_execution", "updated_at"])
    return order


def _closing_order(position: Position) -> Order:
    """A MARKET order for the whole position, on the other side, through the orders service."""
    from orders.services import order_place

    return order_place(
        user=position.user,
        trading_symbol=position.instrument.symbol,
        exchange=None,
        order_type="MARKET",
        transaction_type=Side.SELL if position.side == LONG else Side.BUY,
        quantity=position.quantity,
        leverage=1,
    )


@transaction.atomic
def position_liquidate(*, position: Position) -> Order:
    """The venue takes over a position that reached its liquidation price: a MARKET order filled at
    the liquidation price at once (a trade and order updates like any other), the position closed
    with reason ``liquidation`` and a ``margin_guard`` notification."""
    from orders.services import execution_apply

    live = position.close_order if position.close_order_id else None
    order = _closing_order(position)
    Position.objects.filter(pk=position.pk).update(close_order=order, close_kind=CloseKind.LIQUIDATION)
    execution_apply(
        order_id=order.order_id,
        exec_id=f"liq-{uuid.uuid4().hex}",
        kind="fill",
        quantity=position.quantity,
        price=position.liquidation_price,
    )
    if live is not None and live.order_status in LIVE:
        _cancel_if_free(live, f"{position.public_id} was liquidated")
    return order


# ---- ticks -------------------------------------------------------------------------------------


# One branch per partial index and side, for one instrument: (condition, which path price).
# One branch per partial index and side: (condition on the row, which bound of the tick path).
_BRANCHES = (
    ("side = 'long' AND liquidation_price >= {lo}", "lo"),
    ("side = 'short' AND liquidation_price <= {hi}", "hi"),
    ("guard_armed AND guard_price IS NOT NULL AND side = 'long' AND guard_price >= {lo}", "lo"),
    ("guard_armed AND guard_price IS NOT NULL AND side = 'short' AND guard_price <= {hi}", "hi"),
    ("NOT guard_armed AND side = 'long' AND rearm_price < {last}", "last"),
    ("NOT guard_armed AND side = 'short' AND rearm_price > {last}", "last"),
    ("NOT guard_armed AND guard_rearm_at <= {now}", "now"),
)


def _candidate_ids(paths: dict[int, list[Decimal]], now) -> set[int]:
    """Ids of the open positions whose state can change on these paths. Each branch is a range read
    of one partial index (liquidation price, armed guard price, disarmed re-arm price, cooldown end)
    for one instrument and side, so the cost follows the positions that cross, not the positions
    held. Raw SQL: building the querysets cost more than running them."""
    table = Position._meta.db_table
    ids, los, his, lasts = [], [], [], []
    for instrument_id, prices in paths.items():
        ids.append(instrument_id)
        los.append(min(prices))
        his.append(max(prices))
        lasts.append(prices[-1])
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # The instruments' bounds as a table; the seven branches planned once, run per row.
            # No JIT: the summed estimates cross jit_above_cost, and compiling took ~240 ms for a
            # query that runs in a few.
            cursor.execute("SET LOCAL jit = off")
            bounds = {"lo": "b.lo", "hi": "b.hi", "last": "b.last", "now": "%s"}
            branches = " UNION ALL ".join(
                f"SELECT id FROM {table} WHERE status = 'open' AND instrument_id = b.instrument_id"
                f" AND {condition.format(**bounds)}"
                for condition, _ in _BRANCHES
            )
            cursor.execute(
                "SELECT c.id FROM unnest(%s::bigint[], %s::numeric[], %s::numeric[], %s::numeric[])"
                f" AS b(instrument_id, lo, hi, last) CROSS JOIN LATERAL ({branches}) AS c",
                [ids, los, his, lasts, now],
            )
        else:
            when = connection.ops.adapt_datetimefield_value(now)
            parts, params = [], []
            for instrument_id, lo, hi, last in zip(ids, los, his, lasts, strict=True):
                bound = {"lo": lo, "hi": hi, "last": last, "now": when}
                for condition, which in _BRANCHES:
                    parts.append(
                        f"SELECT id FROM {table} WHERE status = 'open' AND instrument_id = %s"
                        f" AND {condition.format(**{which: '%s'})}"
                    )
                    params += [instrument_id, bound[which]]
            cursor.execute(" UNION ALL ".join(parts), params)
        return {row[0] for row in cursor.fetchall()}


def _candidates(paths: dict[int, list[Decimal]], now) -> list[Position]:
    found = _candidate_ids(paths, now)
    if not found:
        return []
    # Rows a concurrent fill holds are skipped: every condition here is a level, so the next tick
    # sees them again.
    return list(
        Position.objects.select_for_update(skip_locked=True, of=("self",))
        .select_related("instrument")
        .filter(pk__in=sorted(found), status=OPEN)
        .order_by("pk")
    )


@transaction.atomic
def positions_evaluate(*, paths: dict[int, list[Decimal]]) -> dict[str, int]:
    """Re-evaluate the open positions of the instruments in ``paths`` (instrument id → the call's
    prices in order): liquidate those whose liquidation price was reached, fire the guards that
    are armed and at risk, re-arm those that recovered or whose cooldown ended."""
    now = timezone.now()
    last = {i: prices[-1] for i, prices in paths.items()}
    candidates = _candidates(paths, now)
    liquidated, fired, guard_rows = [], {}, []
    for p in candidates:
        prices = paths[p.instrument_id]
        worst = min(prices) if p.side == LONG else max(prices)
        if in_risk(p.side, p.liquidation_price, worst):
            liquidated.append(p)
            continue
        if p.guard_price is None:
            continue
        if not p.guard_armed:
            if recovered(p.side, p.rearm_price, last[p.instrument_id]):
                p.guard_armed, p.guard_rearm_at = True, None
                guard_rows.append(p)
                continue  # out of risk by definition
            if p.guard_rearm_at is not None and p.guard_rearm_at <= now:
                p.guard_armed, p.guard_rearm_at = True, None
                guard_rows.append(p)
                if in_risk(p.side, p.guard_price, last[p.instrument_id]):
                    fired.setdefault(p.user_id, []).append((p, "cooldown"))
            continue
        if in_risk(p.side, p.guard_price, worst):
            fired.setdefault(p.user_id, []).append((p, "threshold"))
            guard_rows.append(p)
    for p in liquidated:
        _isolated(position_liquidate, p, position=p)
    if fired:
        _guard_execute(fired, last, now)
    _save_guard_state(guard_rows)
    prices_moved.send(sender=Position, instrument_ids=list(paths))
    return {"candidates": len(candidates), "liquidated": len(liquidated), "fired": sum(map(len, fired.values()))}


def _isolated(action, subject: Position, **kwargs):
    """Run one position's order in a savepoint: an order the orders service refuses (say the
    instrument's lot size changed under an old position) is logged and retried on the next tick,
    and never stops the ingest of the market's prices."""
    try:
        with transaction.atomic():
            return action(**kwargs)
    except (ValidationError, Conflict):
        logger.exception("%s of %s failed; the next tick retries", action.__name__, subject.public_id)
        return None


def _save_guard_state(rows: list[Position]) -> None:
    """One UPDATE per distinct guard state (re-armed; fired with a given cooldown end): the rows of
    a call share a handful of states, and bulk_update's per-row CASE is slow at hundreds of rows."""
    groups: dict[tuple, list[int]] = {}
    for p in rows:
        groups.setdefault((p.guard_armed, p.guard_rearm_at, p.guard_fired_at), []).append(p.pk)
    for (armed, rearm_at, fired_at), ids in groups.items():
        Position.objects.filter(pk__in=ids).update(guard_armed=armed, guard_rearm_at=rearm_at, guard_fired_at=fired_at)


def _guard_execute(fired: dict[int, list[tuple[Position, str]]], last: dict, now) -> None:
    """One guard run per user with positions that fired on this call, all users together: check
    all their open positions, notify, and with ``close_position`` place a close order for each
    position that fired. A fixed handful of statements however many users fired (plus the close
    orders)."""
    from market.models import MarketState

    configs = guard_configs(fired)
    held: dict[int, list[Position]] = {}
    for p in Position.objects.select_related("instrument").filter(user_id__in=list(fired), status=OPEN).order_by("pk"):
        held.setdefault(p.user_id, []).append(p)
    others = {p.instrument_id for ps in held.values() for p in ps} - set(last)
    prices = {
        **dict(MarketState.objects.filter(instrument_id__in=others).values_list("instrument_id", "price")),
        **last,
    }
    executions, notes = [], []
    for user_id, items in fired.items():
        config = configs[user_id]
        fired_ids = {p.pk for p, _ in items}
        rows, at_risk = [], 0
        for p in held.get(user_id, []):
            price = prices.get(p.instrument_id, p.entry_price)
            distance = distance_to_liquidation(p.side, p.entry_price, p.liquidation_price, price)
            risky = distance <= config.threshold
            at_risk += risky
            rows.append(
                {
                    "id": p.public_id,
                    "symbol": p.instrument.symbol,
                    "distanceToLiquidation": num(distance.quantize(Decimal("0.0001"))),
                    "isAtRisk": risky,
                    "recommendedAction": "close_position" if risky else "none",
                    "guardFired": p.pk in fired_ids,
                }
            )
        closing = config.action == GuardAction.CLOSE_POSITION
        actions = ["notification_sent", *(["close_order_placed"] if closing else [])]
        execution = MarginGuardExecution(
            execution_id=f"mg_exec_{uuid.uuid4().hex[:12]}",
            user_id=user_id,
            action="close_position" if closing else "notification_sent",
            trigger=items[0][1],
            threshold=config.threshold,
            positions=rows,
            summary={"positionsChecked": len(rows), "positionsAtRisk": at_risk, "actionsExecuted": actions},
            executed_at=now,
        )
        executions.append(execution)
        first = next(r for r in rows if r["id"] == items[0][0].public_id)
        symbols = ", ".join(p.instrument.symbol for p, _ in items)
        notes.append(
            {
                "user_id": user_id,
                "title": "Margin Guard Alert",
                "message": f"Position {symbols} is at risk of liquidation"
                if len(items) == 1
                else f"Positions {symbols} are at risk of liquidation",
                "type": "warning",
                "category": "margin_guard",
                "data": {
                    "positionId": first["id"],
                    "distanceToLiquidation": first["distanceToLiquidation"],
                    "executionId": execution.execution_id,
                    "action": execution.action,
                },
            }
        )
    MarginGuardExecution.objects.bulk_create(executions, batch_size=2000)
    notification_create_each(notes)
    guard_executed.send(sender=MarginGuardExecution, executions=executions)
    for execution in executions:
        for p, _ in fired[execution.user_id]:
            config = configs[execution.user_id]
            p.guard_armed, p.guard_fired_at = False, now
            p.guard_rearm_at = now + timedelta(seconds=config.cooldown_seconds) if config.cooldown_seconds else None
            working = p.close_order_id is not None and p.close_order.order_status in LIVE
            if config.action == GuardAction.CLOSE_POSITION and not working:
                order = _isolated(position_close, p, position=p, kind=CloseKind.AUTO_CLOSE, execution=execution)
                if order is not None:
                    p.close_order, p.close_kind, p.guard_execution = order, CloseKind.AUTO_CLOSE, execution
