"""Broadcast account changes: a deactivated, demoted or re-keyed user's sockets re-check access."""

from django.dispatch import receiver

from broadcast.outbox import signal_access_changed

from .signals import account_access_changed, account_disconnect_requested


@receiver(account_access_changed)
def on_account_access_changed(sender, user, **kwargs) -> None:
    signal_access_changed(user_id=user.pk, reason="account changed")


@receiver(account_disconnect_requested)
def on_account_disconnect_requested(sender, user, endpoints, **kwargs) -> None:
    signal_access_changed(user_id=user.pk, reason="disconnected by staff", disconnect=endpoints)
