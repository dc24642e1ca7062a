"""Payload builders for order updates: the seed's flat order-update object (seed 004)."""

from __future__ import annotations

from django.utils import timezone

from wire import iso, num


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
    return message
