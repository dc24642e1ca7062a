"""Broadcast each order update to its owner's personal stream (channel ``orders``)."""

from django.dispatch import receiver

from broadcast.outbox import publish
from broadcast.rooms import user_room

from .signals import order_updated

ORDER_EVENT = "order_update"


@receiver(order_updated)
def on_order_updated(sender, order, update, **kwargs) -> None:
    publish(
        room=user_room(order.user_id), type=ORDER_EVENT, channel="orders", data=update.snapshot, user_id=order.user_id
    )
