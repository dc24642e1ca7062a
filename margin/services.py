"""The Margin Guard and system closes, on top of positions and executions.

- ``positions_evaluate``: ``margin.ticks.ticks_ingest`` calls it with each symbol's tick path, in
  the ingest's transaction. It reads only the positions whose state can change at these prices,
  through indexes on the liquidation price, the guard price (distance = threshold) and the re-arm
  price (distance = threshold + band): liquidations, guards that fire, guards that re-arm.
- ``position_close``, ``position_liquidate``, ``margin_guard_config_set``.

Lock order: a Position row before the user's event sequence (publishing), everywhere.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from accounts.models import User
from core.errors import Conflict
from ledger.services import account_lock
from margin.executions import execution_apply
from market.models import MarketState
from notifications.services import notification_create_each
from orders.models import LIVE, Order
from orders.services import order_cancel
from wire import num

from .formula import distance_to_liquidation, in_risk, recovered
from .models import (
    CloseKind,
    GuardAction,
    MarginGuardConfig,
    MarginGuardExecution,
    Position,
)
from .positions import (
    LONG,
    MAX_COOLDOWN_SECONDS,
    OPEN,
    closing_order,
    guard_configs,
    position_reindex,
)
from .signals import guard_executed, positions_changed, prices_moved

logger = logging.getLogger(__name__)


# ---- configuration -----------------------------------------------------------------------------


@transaction.atomic
def margin_guard_config_set(
    *,
    user: User,
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
        position_reindex(position, config)
        if config.enabled and not was_enabled:
            position.guard_armed, position.guard_rearm_at = True, None
    Position.objects.bulk_update(positions, ["guard_price", "rearm_price", "guard_armed", "guard_rearm_at"])
    if positions:
        positions_changed.send(sender=Position, positions=positions)
    return config


# ---- fills -------------------------------------------------------------------------------------


# ---- closing -----------------------------------------------------------------------------------


@transaction.atomic
def position_close(
    *, position: Position, kind: str = CloseKind.MANUAL, execution: MarginGuardExecution | None = None
) -> Order:
    """Close with a reduce-only MARKET order through the orders service (order updates flow as for
    any order); the position closes when the order fills. A system close (the guard's auto-close)
    first cancels the user's other working orders on the instrument, so nothing the user left
    working can grow the position again or open the other side once it is flat."""
    position = Position.objects.select_for_update(of=("self",)).select_related("instrument").get(pk=position.pk)
    if position.status != OPEN:
        raise Conflict(f"{position.public_id} is already closed", code="position_closed")
    # The close order is read after the lock, not joined to the locked read: a joined row is the one
    # the statement's snapshot saw, so a close that waited for a concurrent one to commit saw no close
    # order working and placed a second (two POST /close at once both answered 202).
    close_id = position.close_order_id
    working = close_id and Order.objects.filter(pk=close_id, order_status__in=LIVE).first()
    if working:
        raise Conflict(
            f"{position.public_id} already has a close order {working.order_id} working", code="close_pending"
        )
    if kind != CloseKind.MANUAL:
        _withdraw_working_orders(position)
    order = closing_order(position)
    position.close_order, position.close_kind, position.guard_execution = order, kind, execution
    position.save(update_fields=["close_order", "close_kind", "guard_execution", "updated_at"])
    return order


def positions_close_all(
    *, user: User, symbol: str | None = None
) -> tuple[list[tuple[Position, Order]], list[tuple[str, str, str]]]:
    """Close every open position of the user (of one symbol), each with its own reduce-only order,
    in its own transaction. One that cannot be closed now (a close already working) is reported in
    ``failed`` as (positionId, code, detail)."""
    closed, failed = [], []
    positions = Position.objects.filter(user=user, status=OPEN).order_by("pk")
    if symbol:
        positions = positions.filter(instrument__symbol=symbol)
    for position in positions:
        try:
            closed.append((position, position_close(position=position)))
        except Conflict as exc:
            failed.append((position.public_id, exc.code, str(exc)))
    return closed, failed


def _withdraw_working_orders(position: Position) -> int:
    """Cancel the user's working orders on the position's instrument (stops, take-profits, an
    opening order still filling, a stale close). One the venue holds right now is not waited for
    here (that could deadlock against its fill): it is cancelled as soon as this close has committed,
    once the venue lets it go. Returns how many were cancelled now."""
    live = Order.objects.filter(user_id=position.user_id, instrument_id=position.instrument_id, order_status__in=LIVE)
    working = list(live.select_for_update(skip_locked=True, of=("self",)).order_by("pk"))
    held = list(live.exclude(pk__in=[o.pk for o in working]).values_list("order_id", flat=True))
    cancelled = 0
    for order in working:
        try:
            order_cancel(order=order)
            cancelled += 1
        except Conflict:
            pass
    if held:
        transaction.on_commit(lambda: _withdraw_held(held))
    return cancelled


def _withdraw_held(order_ids: list[str]) -> None:
    """After a system close committed: cancel the orders the venue held at that moment (waiting for
    the venue's transaction now holds nothing of ours). One it completed meanwhile stays as it is."""
    for order_id in order_ids:
        try:
            with transaction.atomic():
                order_cancel(order=order_id)
        except Conflict:
            pass


@transaction.atomic
def position_liquidate(*, position: Position, market: Decimal | None = None) -> Order:
    """The venue takes over a position that reached its liquidation price: its working orders on
    the instrument are cancelled, and a reduce-only MARKET order is filled at once (a trade marked
    ``liquidation``, order updates like any other) at the worse of the market and the liquidation
    price: when a tick gaps through the liquidation price, the gap's loss is the position's, booked
    in the ledger. The position closes with reason ``liquidation`` and a ``margin_guard``
    notification."""
    fill = position.liquidation_price
    if market is not None:
        fill = min(fill, market) if position.side == LONG else max(fill, market)
    # The account before anything publishes (the withdrawals, the close's ORDER_PLACED take the
    # user's event sequence; the fill's ledger entries lock the account): the order of locks
    # everywhere, or a placement of the same user's (account, then sequence) deadlocks with this.
    account_lock(position.user_id)
    _withdraw_working_orders(position)
    order = closing_order(position)
    Position.objects.filter(pk=position.pk).update(close_order=order, close_kind=CloseKind.LIQUIDATION)
    execution_apply(
        order_id=order.order_id,
        exec_id=f"liq-{uuid.uuid4().hex}",
        kind="fill",
        quantity=position.quantity,
        price=fill,
        liquidation=True,
    )
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


def _candidate_ids(paths: dict[int, list[Decimal]], now: datetime) -> set[int]:
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


def _candidates(paths: dict[int, list[Decimal]], now: datetime) -> list[Position]:
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
def positions_evaluate(
    *, paths: dict[int, list[Decimal]], trades: dict[int, list[Decimal]] | None = None
) -> dict[str, int]:
    """Re-evaluate the open positions of the instruments in ``paths`` (instrument id → the call's
    prices in order): liquidate those whose liquidation price was reached, fire the guards that
    are armed and at risk, re-arm those that recovered or whose cooldown ended."""
    now = timezone.now()
    last = {i: prices[-1] for i, prices in paths.items()}
    candidates = _candidates(paths, now)
    liquidated: list[Position] = []
    fired: dict[int, list[tuple[Position, str]]] = {}
    guard_rows: list[Position] = []
    for p in candidates:
        prices = paths[p.instrument_id]
        worst = min(prices) if p.side == LONG else max(prices)
        if in_risk(p.side, p.liquidation_price, worst):
            liquidated.append(p)
            continue
        if p.guard_price is None:
            continue
        if not p.guard_armed:
            assert p.rearm_price is not None  # set and cleared with guard_price (positions.position_reindex)
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
    # Every account this call will act on, locked in user order before anything publishes: two
    # ingests of different instruments reaching the same users then meet at the first account they
    # share, one after the other, instead of each holding one user's account or event sequence
    # while waiting for the other's (a deadlock PostgreSQL breaks by aborting a whole ingest).
    for user_id in sorted({p.user_id for p in liquidated} | fired.keys()):
        account_lock(user_id)
    for p in liquidated:
        # the market at the liquidation: the first price of the path at or past the liquidation price
        # judged on the mark path; filled at the trade price of the tick where the mark crossed
        at = next(i for i, x in enumerate(paths[p.instrument_id]) if in_risk(p.side, p.liquidation_price, x))
        breach = (trades or paths)[p.instrument_id][at]
        _isolated(position_liquidate, p, position=p, market=breach)
    if fired:
        _guard_execute(fired, last, now)
    _save_guard_state(guard_rows)
    prices_moved.send(sender=Position, instrument_ids=list(paths))
    return {"candidates": len(candidates), "liquidated": len(liquidated), "fired": sum(map(len, fired.values()))}


def _isolated(action: Callable[..., Order], subject: Position, **kwargs: Any) -> Order | None:
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


def _guard_execute(fired: dict[int, list[tuple[Position, str]]], last: dict, now: datetime) -> None:
    """One guard run per user with positions that fired on this call, all users together: check
    all their open positions, notify, and with ``close_position`` place a close order for each
    position that fired. A fixed handful of statements however many users fired (plus the close
    orders)."""

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
            working = p.close_order is not None and p.close_order.order_status in LIVE
            if config.action == GuardAction.CLOSE_POSITION and not working:
                order = _isolated(position_close, p, position=p, kind=CloseKind.AUTO_CLOSE, execution=execution)
                if order is not None:
                    p.close_order, p.close_kind, p.guard_execution = order, CloseKind.AUTO_CLOSE, execution
