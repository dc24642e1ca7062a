"""The orders app's wire events: ``order_update`` on the ``orders`` channel of the owner's stream
(seed 000), and the same update as the flat ``/ws/orders`` frame (seed 004), built once per event."""

from __future__ import annotations

from django.utils import timezone

from broadcast import stafffeed
from broadcast.messages import register_frame
from wire import dumps, envelope, iso, num

ORDER_UPDATE = "order_update"
CHANNEL = "orders"


def order_fields(order) -> dict:
    return {
        "orderId": order.order_id,
        "orderStatus": order.order_status,
        "tradingSymbol": order.instrument.symbol,
        "exchange": order.instrument.exchange,
        "orderType": order.order_type,
        "transactionType": order.transaction_type,
        "quantity": num(order.quantity),
        "filledQuantity": num(order.filled_quantity),
        "pendingQuantity": num(order.pending_quantity),
        "price": num(order.price),
        "triggerPrice": num(order.trigger_price),
        "averagePrice": num(order.average_price),
        "rejectionReason": order.rejection_reason,
        "leverage": order.leverage,
        "amo": order.amo,
        "reduceOnly": order.reduce_only,
        "validity": order.validity,
        "clientOrderId": order.client_order_id or None,
        "version": order.version,
    }


def order_message(order, update_type: str, trade=None) -> dict:
    """One update as sent on /ws/orders (plus ``seq`` there) and as ``data`` of ``order_update`` on /ws."""
    message = {"updateType": update_type, **order_fields(order), "timestamp": iso(timezone.now())}
    if trade is not None:
        message.update(
            tradeId=trade.trade_id,
            execId=trade.exec_id,
            tradeQuantity=num(trade.quantity),
            tradePrice=num(trade.price),
            tradeTime=iso(trade.time),
        )
        if trade.liquidation:
            message["liquidation"] = True
    return message


def order_update_event(message: dict) -> dict:
    """The /ws event for one update (``message`` from ``order_message``, as recorded)."""
    return envelope(ORDER_UPDATE, CHANNEL, message)


def order_socket_frame(data: dict, seq: int) -> str:
    """The /ws/orders frame of an ``order_update``: the flat object plus ``seq``."""
    return dumps({**data, "seq": seq})


register_frame(ORDER_UPDATE, order_socket_frame)
stafffeed.show(
    ORDER_UPDATE,
    (
        "orderId",
        "updateType",
        "orderStatus",
        "tradingSymbol",
        "transactionType",
        "orderType",
        "quantity",
        "filledQuantity",
        "pendingQuantity",
        "price",
        "averagePrice",
        "rejectionReason",
        "version",
        "timestamp",
    ),
)
