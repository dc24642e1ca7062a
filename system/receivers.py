"""Broadcast every system-notice change to the ``system`` room (every connection)."""

from django.dispatch import receiver

from broadcast.outbox import publish
from broadcast.rooms import system_room

from .events import notice_event
from .signals import notice_changed


@receiver(notice_changed)
def on_notice_changed(sender, notice, **kwargs) -> None:
    publish(room=system_room(), event=notice_event(notice))
