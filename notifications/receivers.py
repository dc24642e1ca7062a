"""Notification changes go to their owners' personal streams (logged, with seq)."""

from django.dispatch import receiver

from broadcast.outbox import publish_personal_many

from .events import delivery_status_event, in_app_event, read_status_event
from .signals import delivery_changed, notification_created, notifications_read


@receiver(notification_created)
def on_created(sender, notifications, in_app, **kwargs) -> None:
    publish_personal_many([(n.user_id, in_app_event(n)) for n in notifications if n.pk in in_app])


@receiver(delivery_changed)
def on_delivery_changed(sender, delivery, **kwargs) -> None:
    publish_personal_many([(delivery.notification.user_id, delivery_status_event(delivery))])


@receiver(notifications_read)
def on_read(sender, user_id, notifications, **kwargs) -> None:
    publish_personal_many([(user_id, read_status_event(n)) for n in notifications])
