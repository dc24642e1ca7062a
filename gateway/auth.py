"""Credential checks for sockets, reusing simplejwt's validation (signature, exp, aud/iss,
active user) and the REST API's credentials claim (accounts/tokens.py) so the sockets and the REST
API agree on who is in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError
from rest_framework_simplejwt.settings import api_settings

from accounts.tokens import credentials_current

if TYPE_CHECKING:
    from accounts.models import User

_jwt = JWTAuthentication()


class AuthError(Exception):
    """The credentials are not good (→ AUTHENTICATION_FAILED, close 4001)."""


@dataclass(frozen=True)
class Identity:
    user: User
    expires_at: datetime | None


def jwt_decode(raw: object):
    """A token's signature, expiry and claims only: no database, cheap enough for the event loop."""
    # A JWT is ASCII (base64url segments and dots): anything else, a lone surrogate from a JSON
    # "\ud800" escape included, is refused here (its encode() raised and the socket closed 1011).
    if not isinstance(raw, str) or not raw or len(raw) > 4096 or not raw.isascii():
        raise AuthError("token must be a JWT string")
    try:
        return _jwt.get_validated_token(raw.encode())
    except (InvalidToken, TokenError, AuthenticationFailed) as exc:
        raise AuthError(_reason(exc)) from None


def jwt_user_id(token) -> str:
    return str(token[api_settings.USER_ID_CLAIM])


def identity_load(token) -> Identity:
    """Sync, reads the database: the token's user, if still active and the token not revoked."""
    try:
        user_id = token[api_settings.USER_ID_CLAIM]
    except KeyError:
        raise AuthError("Token contained no recognizable user identification") from None
    user = get_user_model().objects.filter(**{api_settings.USER_ID_FIELD: user_id}).first()
    return identity_check(token, user)


def identity_check(token, user: User | None) -> Identity:
    """The token's identity, given its user as read (None: no such user). simplejwt's rules for a
    request (``JWTAuthentication.get_user``), as its settings set them: the user exists, is active
    when CHECK_USER_IS_ACTIVE; and the REST API's (accounts.authentication): its credentials are
    the token's (no password change, no revocation since)."""
    if user is None:
        raise AuthError("User not found")
    if api_settings.CHECK_USER_IS_ACTIVE and not user.is_active:
        raise AuthError("User is inactive")
    if not credentials_current(token, user):
        raise AuthError("The user's password has been changed.")
    exp = token.get("exp")
    expires_at = datetime.fromtimestamp(exp, tz=UTC) if exp else None
    return Identity(user=user, expires_at=expires_at)


def _jwt_authenticate(raw: object) -> Identity:
    """Decode, then load and check the user: the whole check, for a fresh ``auth`` on an open socket."""
    return identity_load(jwt_decode(raw))


def _reason(exc: Exception) -> str:
    detail = getattr(exc, "detail", None)
    if isinstance(detail, dict):
        messages = detail.get("messages") or []
        if messages and isinstance(messages[0], dict) and "message" in messages[0]:
            return str(messages[0]["message"])
        return str(detail.get("detail", "invalid token"))
    return str(detail or exc or "invalid token")


jwt_authenticate = database_sync_to_async(_jwt_authenticate)


@database_sync_to_async
def user_still_allowed(user_id: int, credentials_version: int, is_staff: bool, is_superuser: bool) -> str | None:
    """None while the user may keep its socket as it is; otherwise why not. The credentials, not
    the password hash: a sign-in elsewhere that re-hashed the password closes nothing."""
    row = (
        get_user_model()
        .objects.filter(pk=user_id)
        .values("is_active", "credentials_version", "is_staff", "is_superuser")
        .first()
    )
    if row is None or not row["is_active"]:
        return "account deactivated"
    if row["credentials_version"] != credentials_version:
        return "password changed"
    if (row["is_staff"], row["is_superuser"]) != (is_staff, is_superuser):
        return "role changed"
    return None


def bearer_token(scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            kind, _, token = value.decode("latin1").partition(" ")
            if kind.lower() == "bearer" and token.strip():
                return token.strip()
            return ""
    return None
