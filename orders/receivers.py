"""Each order update goes to its owner's personal stream (logged, with seq)."""

from django.dispatch import receiver

from broadcast.outbox import publish_personal_many

from .events import order_update_event
from .signals import order_updated


@receiver(order_updated)
def on_order_updated(sender, order, update, **kwargs) -> None:
    publish_personal_many([(order.user_id, order_update_event(update.snapshot))])
