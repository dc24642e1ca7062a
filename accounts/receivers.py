"""Broadcast account changes: a deactivated, demoted or re-keyed user's sockets re-check access."""

from django.dispatch import receiver

from axisor.realtime.publish import signal_access_changed

from .signals import account_access_changed


@receiver(account_access_changed)
def on_account_access_changed(sender, user, **kwargs) -> None:
    signal_access_changed(user_id=user.pk, reason="account changed")
