"""Broadcast account changes: a deactivated, demoted or re-keyed user's sockets re-check access,
and so do a staff member's whose permissions changed (the admin rooms hang on them)."""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth.models import Group, Permission
from django.db.models import Q
from django.db.models.signals import m2m_changed, pre_delete
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


# ---- permissions: a staff member's open sockets re-check their admin rooms -----------------------
# Only staff members who are not superusers hold rooms by permission (broadcast.rooms). The sockets
# are told on commit (signal_access_changed); the related managers' add, remove and clear run in a
# transaction of their own, so a clear is announced before it runs (its rows are gone after it).

_ANNOUNCED = ("post_add", "post_remove", "pre_clear")


def _permissions_changed(users: Q) -> None:
    staff = User.objects.filter(users, is_staff=True, is_superuser=False, is_active=True)
    for user_id in staff.values_list("pk", flat=True).distinct():
        signal_access_changed(user_id=user_id, reason="permissions changed")


def _ids(pk_set: Iterable[int] | None) -> list[int]:
    return list(pk_set or ())


@receiver(m2m_changed, sender=User.user_permissions.through)
@receiver(m2m_changed, sender=User.groups.through)
def on_user_grants_changed(sender, instance, action, reverse, pk_set, **kwargs) -> None:
    """``user.user_permissions`` / ``user.groups`` changed, from either side."""
    if action not in _ANNOUNCED:
        return
    if not reverse:  # instance: the user
        _permissions_changed(Q(pk=instance.pk))
    elif action == "pre_clear":  # instance: the permission or group, losing every user
        _permissions_changed(Q(pk__in=instance.user_set.values("pk")))
    else:
        _permissions_changed(Q(pk__in=_ids(pk_set)))


@receiver(m2m_changed, sender=Group.permissions.through)
def on_group_permissions_changed(sender, instance, action, reverse, pk_set, **kwargs) -> None:
    """A group's permissions changed (``group.permissions`` or ``permission.group_set``)."""
    if action not in _ANNOUNCED:
        return
    if not reverse:  # instance: the group
        _permissions_changed(Q(groups=instance))
    elif action == "pre_clear":  # instance: the permission, leaving every group
        _permissions_changed(Q(groups__in=instance.group_set.all()))
    else:
        _permissions_changed(Q(groups__in=_ids(pk_set)))


@receiver(pre_delete, sender=Group)
def on_group_deleted(sender, instance, **kwargs) -> None:
    """Deleting a group removes its members' permissions through it (no m2m_changed is sent)."""
    _permissions_changed(Q(groups=instance))


@receiver(pre_delete, sender=Permission)
def on_permission_deleted(sender, instance, **kwargs) -> None:
    _permissions_changed(Q(user_permissions=instance) | Q(groups__permissions=instance))
