"""Broadcast account changes: a deactivated, demoted or re-keyed user's sockets re-check access."""

from django.dispatch import receiver

from broadcast.outbox import signal_access_changed

from .models import User
from .services import credentials_revoke
from .signals import account_access_changed, account_disconnect_requested, account_password_changed


@receiver(account_access_changed)
def on_account_access_changed(sender, user, **kwargs) -> None:
    signal_access_changed(user_id=user.pk, reason="account changed")


@receiver(account_password_changed)
def on_account_password_changed(sender, user, **kwargs) -> None:
    """A new password (User.save): the credentials issued before it end, and the open sockets
    re-check access and close 4003 (orders/receivers.py ends the order-socket sessions)."""
    credentials_revoke(user=user)
    account_access_changed.send(sender=User, user=user)


@receiver(account_disconnect_requested)
def on_account_disconnect_requested(sender, user, endpoints, **kwargs) -> None:
    signal_access_changed(user_id=user.pk, reason="disconnected by staff", disconnect=endpoints)
