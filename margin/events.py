"""Payload builders for the seed's margin events: position_status_update, margin_guard_execution,
auto_close_execution (seed 000, "Margin Guard Events")."""

from __future__ import annotations

from decimal import Decimal

from broadcast import stafffeed
from broadcast.messages import layer_event
from broadcast.rooms import user_room
from wire import dumps, envelope, iso, num

from .formula import distance_to_liquidation

POSITION_STATUS_UPDATE = "position_status_update"
MARGIN_GUARD_EXECUTION = "margin_guard_execution"
AUTO_CLOSE_EXECUTION = "auto_close_execution"
CHANNEL = "margin_guard"
POSITIONS_CHANNEL = "positions"


def _round(value: Decimal | int, places: int = 8) -> int | float:
    return num(Decimal(value).quantize(Decimal(1).scaleb(-places)))


def position_values(position, price: Decimal | None, threshold: Decimal, at=None) -> dict:
    """The seed's position object, plus quantity, liquidationPrice, realized/unrealized pnl,
    status and the close details. ``pnl`` is the unrealized pnl at ``price``."""
    current = price if price is not None else position.entry_price
    sign = 1 if position.side == "long" else -1
    unrealized = (current - position.entry_price) * position.quantity * sign if position.status == "open" else 0
    distance = distance_to_liquidation(position.side, position.entry_price, position.liquidation_price, current)
    return {
        "id": position.public_id,
        "symbol": position.instrument.symbol,
        "side": position.side,
        "quantity": num(position.quantity),
        "size": _round(position.size),
        "entryPrice": num(position.entry_price),
        "currentPrice": num(current),
        "margin": _round(position.margin),
        "leverage": num(position.leverage),
        "liquidationPrice": _round(position.liquidation_price),
        "pnl": _round(unrealized),
        "unrealizedPnl": _round(unrealized),
        "realizedPnl": _round(position.realized_pnl),
        "distanceToLiquidation": _round(distance, 4),
        "isAtRisk": position.status == "open" and distance <= threshold,
        "status": position.status,
        "openedAt": iso(position.opened_at),
        "closedAt": iso(position.closed_at),
        "closeReason": position.close_reason or None,
        "updatedAt": iso(at or position.updated_at),
    }


def position_status_update(user_id: int, values: dict) -> dict:
    return envelope(POSITION_STATUS_UPDATE, POSITIONS_CHANNEL, {"userId": str(user_id), "position": values})


def position_update_item(
    user_id: int, position_pk: int, values: dict, version: float | None = None
) -> tuple[str, str, dict]:
    """A position_status_update as a conflated value: (conflation key, the holder's group, layer
    message). A newer value of the same position replaces an unsent older one; ``version``: when
    the values' rows were read (epoch seconds), so that no older value follows a newer one."""
    key = f"pos:{position_pk}"
    text = dumps(position_status_update(user_id, values))
    message = layer_event(channel=POSITIONS_CHANNEL, seq=None, text=text, key=key, version=version)
    return key, user_room(user_id).layer_group, message


def guard_execution_data(execution) -> dict:
    return {
        "executionId": execution.execution_id,
        "userId": str(execution.user_id),
        "action": execution.action,
        "positions": execution.positions,
        "summary": execution.summary,
        "threshold": num(execution.threshold),
        "trigger": execution.trigger,
        "executedAt": iso(execution.executed_at),
    }


def auto_close_data(execution, position, record: dict) -> dict:
    return {
        "executionId": record["executionId"],
        "userId": str(position.user_id),
        "guardExecutionId": execution.execution_id,
        "position": {
            "id": position.public_id,
            "symbol": position.instrument.symbol,
            "closedAt": iso(position.closed_at),
            "reason": "margin_guard_auto_close",
            "pnl": _round(position.realized_pnl),
            "orderId": record["orderId"],
        },
        "executedAt": record["executedAt"],
    }


def guard_execution_event(execution) -> dict:
    return envelope(MARGIN_GUARD_EXECUTION, CHANNEL, guard_execution_data(execution))


def auto_close_event(execution, position, record: dict) -> dict:
    return envelope(AUTO_CLOSE_EXECUTION, CHANNEL, auto_close_data(execution, position, record))


stafffeed.show(MARGIN_GUARD_EXECUTION, ("executionId", "action", "trigger", "summary", "executedAt"))
stafffeed.show(AUTO_CLOSE_EXECUTION, ("executionId", "guardExecutionId", "position", "executedAt"))
