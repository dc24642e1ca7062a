"""REST's JWT authentication: simplejwt's ``JWTAuthentication``, its rules (the user exists, is
active) and ours (the token's credentials are the user's current ones: accounts/tokens.py), with
the one read it makes of the user built and compiled once per process instead of once per request.

simplejwt reads the user with ``user_model.objects.get(<USER_ID_FIELD>=<claim>)`` and catches
``user_model.DoesNotExist``; ``UserById`` answers both, with the ORM's own statement compiled
once (``core.compiled.CompiledGet``). Building and compiling that query was ~0.4–0.5 ms of each
authenticated request (docs/benchmarks.md).

``HmacKeyCheckedOnce``: PyJWT checks an HMAC key before every signature it verifies (that it is
not a PEM, SSH or DER key, each tried by parsing it), though ours is the same bytes every time;
the check's verdict is kept for the process. ~30–70 µs of every token checked, half of a
``/ws`` connect's token check (docs/benchmarks.md)."""

from __future__ import annotations

import functools
from typing import Any

import jwt
from django.contrib.auth import get_user_model
from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from jwt.algorithms import HMACAlgorithm
from rest_framework_simplejwt import authentication
from rest_framework_simplejwt.exceptions import AuthenticationFailed

from core.compiled import CompiledGet

from .tokens import credentials_current


class UserById:
    """``objects.get(<field>=value)`` and ``DoesNotExist`` of the user model, for simplejwt: a
    ``CompiledGet`` for each field it is asked by (simplejwt's USER_ID_FIELD)."""

    def __init__(self) -> None:
        self.model = get_user_model()
        self.DoesNotExist = self.model.DoesNotExist
        self.objects = self
        self._by: dict[str, CompiledGet] = {}

    def get(self, **lookup: Any):
        ((field, value),) = lookup.items()
        if field not in self._by:
            self._by[field] = CompiledGet(lambda: self.model.objects.all(), field, lenient=True)  # a token's claim
        return self._by[field].get(value)


@functools.cache
def user_by_id() -> UserById:
    """Built on first use: the user model is read once the apps are ready."""
    return UserById()


class JWTAuthentication(authentication.JWTAuthentication):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user_model = user_by_id()  # type: ignore[assignment]

    def get_user(self, validated_token):
        """simplejwt's rules, and the token's credentials claim (accounts/tokens.py) in place of its
        password-hash claim: a password changed or credentials revoked since the token refuse it
        (simplejwt's refusal, its code and message kept)."""
        user = super().get_user(validated_token)
        if not credentials_current(validated_token, user):
            raise AuthenticationFailed("The user's password has been changed.", code="password_changed")
        return user


class JWTScheme(SimpleJWTScheme):
    """The OpenAPI security scheme of simplejwt's class (``jwtAuth``), for this one too."""

    target_class = "accounts.authentication.JWTAuthentication"


class HmacKeyCheckedOnce(HMACAlgorithm):
    """PyJWT's HMAC algorithm, each key's check run once: a key that passed it is kept (a few at
    most: they come from the settings, never from a token) and given back as PyJWT prepared it;
    a key that failed is checked, and refused, every time. Kept by its bytes (PyJWT's check reads
    nothing else of a key: a str is its UTF-8)."""

    KEPT = 4

    def __init__(self, hash_alg) -> None:
        super().__init__(hash_alg)
        self._checked: dict[bytes, bytes] = {}

    def prepare_key(self, key: str | bytes) -> bytes:
        if type(key) is str:
            key = key.encode("utf-8")
        elif type(key) is not bytes:  # anything else (a subclass, a key object): PyJWT's check, every time
            return super().prepare_key(key)
        checked = self._checked.get(key)
        if checked is not None:
            return checked
        prepared = super().prepare_key(key)
        if len(self._checked) < self.KEPT:
            self._checked[key] = prepared
        return prepared


def check_hmac_keys_once() -> None:
    """At start-up: PyJWT's process-wide HS256/384/512 (what simplejwt's decode and encode use)
    through ``HmacKeyCheckedOnce``, by PyJWT's own ``register_algorithm``."""
    for name, hash_alg in (("HS256", HMACAlgorithm.SHA256), ("HS384", HMACAlgorithm.SHA384),
                           ("HS512", HMACAlgorithm.SHA512)):  # fmt: skip
        if isinstance(jwt.get_algorithm_by_name(name), HmacKeyCheckedOnce):
            continue
        jwt.unregister_algorithm(name)
        jwt.register_algorithm(name, HmacKeyCheckedOnce(hash_alg))
