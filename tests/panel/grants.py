"""Granting staff members panel permissions in tests (panel/permissions.py names them)."""

from __future__ import annotations

from django.contrib.auth.models import Permission
from django.db.models import Q
from django.test import Client

from panel.permissions import ABILITIES


def perm_objects(*perms: str) -> list[Permission]:
    """``app_label.codename`` names as Permission rows (each must exist)."""
    query = Q(pk__in=[])
    for perm in perms:
        app, codename = perm.split(".")
        query |= Q(content_type__app_label=app, codename=codename)
    found = list(Permission.objects.filter(query))
    assert len(found) == len(set(perms)), (perms, found)
    return found


def signed_in(user) -> Client:
    """A browser session of ``user`` (the panel's pages and forms)."""
    client = Client()
    client.force_login(user)
    return client


def grant(user, *perms: str) -> None:
    """Exactly these permissions (and drop the user's permission cache)."""
    user.user_permissions.set(perm_objects(*perms))
    for cache in ("_perm_cache", "_user_perm_cache", "_group_perm_cache"):
        user.__dict__.pop(cache, None)


EVERY_PANEL_PERMISSION = tuple(sorted({p for perms in ABILITIES.values() for p in perms}))


def feed_reader(make_user, username: str, *also: str):
    """A staff account that may have the staff feed (admin:staff): the event log's view permission
    (and the permissions ``also``)."""
    from broadcast.rooms import STAFF_FEED_PERMISSION

    user = make_user(username, staff=True)
    grant(user, STAFF_FEED_PERMISSION, *also)
    return user
