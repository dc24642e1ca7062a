"""Writes to accounts. Every path (command, admin, API) goes through here."""

from __future__ import annotations

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from .models import Tier, User
from .signals import account_disconnect_requested

SOCKET_ENDPOINTS = ("/ws", "/ws/orders")


@transaction.atomic
def account_upsert(
    *, username: str, password: str | None, tier: str, staff: bool = False, superuser: bool = False
) -> tuple[User, bool]:
    """Create the account or update its password, tier and staff flag. Returns (user, created).

    The same password again is no change: the user's tokens stay valid (``scripts/run`` upserts the
    demo accounts on every start, and a page's token must survive a restart)."""
    if tier not in Tier.values:
        raise ValueError(f"tier must be one of {', '.join(Tier.values)}")
    user = User.objects.select_for_update().filter(username=username).first()
    created = user is None
    if user is None:
        user = User(username=username)
    new_password = password is not None and (created or not user.check_password(password))
    if password is not None and new_password:
        validate_password(password, user)
        user.set_password(password)
    user.tier = tier
    user.is_staff = staff or superuser
    user.is_superuser = superuser
    user.is_active = True
    user.save()  # a demotion tells the open sockets, a new password ends the credentials (User.save)
    return user, created


@transaction.atomic
def account_deactivate(*, user: User) -> User:
    """Deactivate the account: no new tokens, the ones issued end, and its open sockets are closed
    (User.save: a deactivation ends the credentials however it is saved)."""
    user.is_active = False
    user.save(update_fields=["is_active"])
    return user


@transaction.atomic
def credentials_revoke(*, user: User) -> int:
    """End every credential issued to the user so far (a password change, a deactivation): raise its
    ``credentials_version``, which every token names (accounts/tokens.py), so no access token of
    before is accepted again, and blacklist every unexpired refresh token: none of them refreshes
    again, even if the account is later re-activated. Returns how many refresh tokens it ended."""
    User.objects.filter(pk=user.pk).update(credentials_version=F("credentials_version") + 1)
    user.credentials_version = User.objects.values_list("credentials_version", flat=True).get(pk=user.pk)
    live = OutstandingToken.objects.filter(user=user, expires_at__gt=timezone.now(), blacklistedtoken__isnull=True)
    revoked = BlacklistedToken.objects.bulk_create([BlacklistedToken(token=t) for t in live], ignore_conflicts=True)
    return len(revoked)


def refresh_tokens_prune() -> int:
    """Delete the records of expired refresh tokens (and their blacklist rows): an expired token is
    refused on its signature alone. simplejwt's ``flushexpiredtokens``, on the retention job."""
    deleted, _ = OutstandingToken.objects.filter(expires_at__lte=timezone.now()).delete()
    return deleted


@transaction.atomic
def account_disconnect(*, user: User, endpoints: list[str] | tuple[str, ...] = SOCKET_ENDPOINTS) -> User:
    """Close the user's open sockets on ``endpoints`` (close code 4004), on every server process.
    Nothing about the account changes: clients may reconnect (deactivate or revoke to keep them out)."""
    endpoints = list(dict.fromkeys(endpoints))
    if not endpoints or any(e not in SOCKET_ENDPOINTS for e in endpoints):
        raise ValidationError({"endpoint": f"must be one or more of {', '.join(SOCKET_ENDPOINTS)}"})
    account_disconnect_requested.send(sender=User, user=user, endpoints=endpoints)
    return user
