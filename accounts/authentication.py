"""REST's JWT authentication: simplejwt's ``JWTAuthentication``, its rules unchanged (the user
exists, is active, has not changed its password since the token), with the one read it makes of
the user built and compiled once per process instead of once per request.

simplejwt reads the user with ``user_model.objects.get(<USER_ID_FIELD>=<claim>)`` and catches
``user_model.DoesNotExist``; ``UserById`` answers both, with the ORM's own statement compiled
once (``core.compiled.CompiledGet``). Building and compiling that query was ~0.4–0.5 ms of each
authenticated request (docs/benchmarks.md)."""

from __future__ import annotations

import functools
from typing import Any

from django.contrib.auth import get_user_model
from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from rest_framework_simplejwt import authentication

from core.compiled import CompiledGet


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


class JWTScheme(SimpleJWTScheme):
    """The OpenAPI security scheme of simplejwt's class (``jwtAuth``), for this one too."""

    target_class = "accounts.authentication.JWTAuthentication"
