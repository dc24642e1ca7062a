"""The tokens this server issues: simplejwt's, with a credentials claim in place of simplejwt's
password-hash claim (``CHECK_REVOKE_TOKEN``, off in the settings).

simplejwt's claim is a digest of the stored password hash, which Django rewrites at a sign-in when
the hasher's parameters changed (more PBKDF2 iterations after an upgrade): that sign-in refused
every other device's tokens. Ours names the user's ``credentials_version``, which only
``accounts.services.credentials_revoke`` raises (a new password, a deactivation)."""

from __future__ import annotations

from typing import Any

from rest_framework_simplejwt import tokens

CREDENTIALS_CLAIM = "cv"


def credentials_current(token: Any, user: Any) -> bool:
    """Whether ``token`` (a validated simplejwt token) was issued under the user's credentials as
    they are now. A token without the claim (issued before it existed) is not."""
    return token.get(CREDENTIALS_CLAIM) == user.credentials_version


class CredentialsClaimed(tokens.Token):
    """``for_user`` with the credentials claim. Placed after simplejwt's classes in each token's
    bases, so it runs inside their ``for_user``: the refresh token's outstanding-token record
    (BlacklistMixin) holds the token with its claim."""

    @classmethod
    def for_user(cls, user):
        token = super().for_user(user)
        token[CREDENTIALS_CLAIM] = user.credentials_version
        return token


class AccessToken(tokens.AccessToken, CredentialsClaimed):
    pass


class RefreshToken(tokens.RefreshToken, CredentialsClaimed):  # type: ignore[misc]
    access_token_class = AccessToken  # its access tokens copy the claim
