"""Order updates go to their owner's personal stream (logged, with seq); a new password ends the
owner's order-socket sessions."""

from django.dispatch import receiver
from django.utils import timezone

from accounts.signals import account_password_changed
from broadcast.outbox import publish_personal_many

from .events import order_update_event
from .models import OrderSession
from .signals import order_updated


@receiver(order_updated)
def on_order_updated(sender, order, update, **kwargs) -> None:
    publish_personal_many([(order.user_id, order_update_event(update.snapshot))])


@receiver(account_password_changed)
def on_account_password_changed(sender, user, **kwargs) -> None:
    """A new password ends the user's order-socket sessions, as it ends its JWTs: the open
    /ws/orders sockets re-check on the access change sent with it and close 4003, and the
    credentials open nothing more (an outside test: they kept streaming for their 24 hours)."""
    OrderSession.objects.filter(user=user, revoked_at__isnull=True).update(revoked_at=timezone.now())
