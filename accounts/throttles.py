"""Throttles of the credential endpoints: the token pair, the refresh and the order-socket sessions.

Each request is counted per client address and per username (or user) in the shared cache (Redis
when configured: every server process counts together), before any password is hashed, so a flood
of guesses costs the server a cache round trip each. The rates are ``AXISOR_AUTH_THROTTLES``.
A cache that cannot be reached lets requests through; one that hangs costs a process one socket
timeout, then is not asked until it answers again (the breaker of core/redis_clients.py).

The counters are fixed windows kept with an atomic increment, not DRF's request-history list: that
one is read, appended and written back, so a parallel flood all reads the same short history and
every request passes. A fixed window admits at most twice its rate across a window boundary.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time

from django.conf import settings
from django.core.cache import cache
from django.http import HttpResponse
from redis.exceptions import RedisError
from rest_framework.throttling import BaseThrottle
from rest_framework_simplejwt.exceptions import TokenBackendError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.state import token_backend

from core.redis_clients import ServerTripped

logger = logging.getLogger(__name__)

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smhd])[a-z]*\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(rate: str) -> tuple[int, int]:
    """``"10/m"`` → (10, 60); ``"5/30s"`` → (5, 30); ``"100/2h"`` → (100, 7200)."""
    match = _RATE.match(rate)
    if not match or int(match.group(1)) < 1:
        raise ValueError(f"a rate is '<requests>/<period>' with a period in s, m, h or d (e.g. 10/m, 5/30s): {rate!r}")
    count = int(match.group(2) or 1)
    if count < 1:
        raise ValueError(f"the period of a rate must be at least 1: {rate!r}")
    return int(match.group(1)), count * _SECONDS[match.group(3)]


def client_address(request) -> str | None:
    """The client's address: the peer's, or behind TRUSTED_PROXY_COUNT proxies the one the nearest
    proxy appended to X-Forwarded-For (what a client writes there itself is never trusted). DRF's
    rule (``NUM_PROXIES``), shared with axes (``AXES_CLIENT_IP_CALLABLE``)."""
    return BaseThrottle().get_ident(request) or None


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class CountingThrottle(BaseThrottle):
    """At most ``rate`` requests per window per identity (``scope`` names the rate)."""

    scope = ""

    def __init__(self) -> None:
        self.num, self.period = parse_rate(settings.AXISOR_AUTH_THROTTLES[self.scope])
        self.retry_after = 0.0

    def identity(self, request, view) -> str | None:
        """What is counted (None: this throttle does not apply to the request)."""
        raise NotImplementedError

    def allow_request(self, request, view) -> bool:
        ident = self.identity(request, view)
        if ident is None:
            return True
        now = time.time()
        window = int(now // self.period)
        key = f"throttle:{self.scope}:{ident}:{window}"
        try:
            count = self._increment(key)
        except ServerTripped:  # Redis hangs: not asked (its breaker logged the trip once), let it through
            return True
        except (RedisError, OSError) as exc:  # the cache is down: let the request through, keep serving
            logger.warning("throttle %s not counted: %s", self.scope, exc)
            return True
        if count <= self.num:
            return True
        self.retry_after = (window + 1) * self.period - now
        return False

    def _increment(self, key: str) -> int:
        counted = getattr(cache, "count_in_window", None)
        if counted is not None:  # Redis: one round trip (core/cache.py)
            return counted(key, self.period + 1)
        for _ in range(2):  # the key may expire between add and incr: once more then
            cache.add(key, 0, timeout=self.period + 1)
            try:
                return cache.incr(key)
            except ValueError:
                continue
        return cache.incr(key)

    def wait(self) -> float:
        return max(1, math.ceil(self.retry_after))


def _username(request) -> str | None:
    data = request.data
    name = data.get("username") if hasattr(data, "get") else None
    return _digest(name.casefold()) if isinstance(name, str) and name else None


def _refresh_user(request) -> str | None:
    """The user of a refresh token whose signature holds (a forged token counts against its sender's
    address only, never against the user it names)."""
    data = request.data
    raw = data.get("refresh") if hasattr(data, "get") else None
    if not isinstance(raw, str) or len(raw) > 4096:
        return None
    try:
        payload = token_backend.decode(raw, verify=True)  # type: ignore[arg-type]  # annotated Token, takes str
    except TokenBackendError:
        return None
    user_id = payload.get(jwt_settings.USER_ID_CLAIM)
    return _digest(str(user_id)) if user_id is not None else None


class LoginAddressThrottle(CountingThrottle):
    scope = "login_address"

    def identity(self, request, view) -> str | None:
        return client_address(request) or "unknown"


class LoginUsernameThrottle(CountingThrottle):
    scope = "login_username"

    def identity(self, request, view) -> str | None:
        return _username(request)


class RefreshAddressThrottle(CountingThrottle):
    scope = "refresh_address"

    def identity(self, request, view) -> str | None:
        return client_address(request) or "unknown"


class RefreshUserThrottle(CountingThrottle):
    scope = "refresh_user"

    def identity(self, request, view) -> str | None:
        return _refresh_user(request)


class SessionsAddressThrottle(CountingThrottle):
    scope = "sessions_address"

    def identity(self, request, view) -> str | None:
        return client_address(request) or "unknown"


class SessionsUserThrottle(CountingThrottle):
    scope = "sessions_user"

    def identity(self, request, view) -> str | None:
        user = request.user
        return str(user.pk) if user is not None and user.is_authenticated else None


LOGIN_THROTTLES = [LoginAddressThrottle, LoginUsernameThrottle]
REFRESH_THROTTLES = [RefreshAddressThrottle, RefreshUserThrottle]
SESSION_THROTTLES = [SessionsAddressThrottle, SessionsUserThrottle]


class SignInFormThrottle:
    """Middleware: the panel's and the admin's sign-in forms count against the same per-address rate
    as ``POST /api/auth/token`` (``THROTTLE_LOGIN_ADDRESS``), before the form hashes a password. The
    axes lockout is per username and address; this bounds one address trying many usernames (each
    guess costs a password hash). Beyond it: 429 with ``Retry-After``, nothing checked."""

    PATHS = ("/panel/login", "/admin/login/")

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        if request.method == "POST" and request.path in self.PATHS:
            throttle = LoginAddressThrottle()
            if not throttle.allow_request(request, None):
                response = HttpResponse(
                    "Too many sign-in attempts from this address; try again later.\n",
                    status=429,
                    content_type="text/plain; charset=utf-8",
                )
                response["Retry-After"] = str(throttle.wait())
                return response
        return self.get_response(request)
