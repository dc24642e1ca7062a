"""Broadcast notification changes to their owners' personal streams."""

from django.dispatch import receiver

from broadcast.outbox import publish_personal_many

from .events import CHANNEL, IN_APP, STATUS, delivery_status_data, notification_data, read_status_data
from .signals import delivery_changed, notification_created, notifications_read


@receiver(notification_created)
def on_created(sender, notifications, in_app, **kwargs) -> None:
    publish_personal_many([(n.user_id, IN_APP, CHANNEL, notification_data(n)) for n in notifications if n.pk in in_app])


@receiver(delivery_changed)
def on_delivery_changed(sender, delivery, **kwargs) -> None:
    user_id = delivery.notification.user_id
    publish_personal_many([(user_id, STATUS, CHANNEL, delivery_status_data(delivery))])


@receiver(notifications_read)
def on_read(sender, user_id, notifications, **kwargs) -> None:
    publish_personal_many([(user_id, STATUS, CHANNEL, read_status_data(n)) for n in notifications])
