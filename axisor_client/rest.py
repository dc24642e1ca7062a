"""The few REST calls a socket client needs (standard library only): a JWT from a password, order-socket
credentials, the event log. ``Login`` caches them and hands them to the clients as providers."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime
from urllib.parse import urlencode, urlsplit, urlunsplit

from .errors import ApiError, error_for

# Fetch a fresh JWT / order session this long before the current one expires.
REFRESH_MARGIN_SECONDS = 60.0


def http_base(server: str) -> str:
    """``ws(s)://host:port/...`` or ``http(s)://host:port/...`` → ``http(s)://host:port``."""
    parts = urlsplit(server)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    if scheme not in ("http", "https"):
        raise ValueError(f"not a server URL: {server!r}")
    return urlunsplit((scheme, parts.netloc, "", "", ""))


def call(method: str, url: str, body: dict | None = None, *, token: str | None = None, timeout: float = 15) -> dict:
    """One JSON request; returns the body or raises an ``ApiError`` (its subclass for the status,
    see ``errors``)."""
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(), method=method)
    request.add_header("Content-Type", "application/json")
    request.add_header("Accept", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            payload = json.loads(raw or b"{}")
        except ValueError:
            payload = {"detail": raw[:200].decode("utf-8", "replace")}
        raise error_for(err.code, payload, err.headers.get("Retry-After")) from None


def obtain_token(server: str, username: str, password: str) -> dict:
    """``POST /api/auth/token`` → ``{"access","refresh"}``."""
    return call("POST", f"{http_base(server)}/api/auth/token", {"username": username, "password": password})


def refresh_pair(server: str, refresh: str) -> dict:
    """``POST /api/auth/token/refresh`` → a new ``{"access","refresh"}``: the refresh token given is
    spent (single-use), keep the new one."""
    return call("POST", f"{http_base(server)}/api/auth/token/refresh", {"refresh": refresh})


def refresh_token(server: str, refresh: str) -> str:
    """A new access token (the refresh token is spent: prefer ``refresh_pair`` to keep its successor)."""
    return refresh_pair(server, refresh)["access"]


def logout(server: str, refresh: str) -> None:
    """``POST /api/auth/logout``: revoke the refresh token (access tokens expire on their own)."""
    call("POST", f"{http_base(server)}/api/auth/logout", {"refresh": refresh})


def create_order_session(server: str, jwt: str) -> dict:
    """``POST /api/auth/sessions`` → ``{"session","token","expiresAt"}`` for ``/ws/orders``."""
    return call("POST", f"{http_base(server)}/api/auth/sessions", token=jwt)


def events_since(server: str, jwt: str, since: int, limit: int = 200) -> dict:
    """``GET /api/events?since=N`` → ``{"events","lastSeq","hasMore"}``; ApiError 410 when too old."""
    query = urlencode({"since": since, "limit": limit})
    return call("GET", f"{http_base(server)}/api/events?{query}", token=jwt)


def current_seq(server: str, jwt: str) -> int:
    """The account's latest seq (the 410 of a pruned log carries it too)."""
    try:
        return int(events_since(server, jwt, 0, limit=1)["lastSeq"])
    except ApiError as exc:
        if exc.status == 410 and isinstance(exc.body.get("lastSeq"), int):
            return exc.body["lastSeq"]
        raise


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim (epoch seconds), read without verifying: only to know when to refresh."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, KeyError, TypeError, ValueError):
        return None


def _epoch(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class Login:
    """A username and password that give JWTs and order-socket sessions on demand, cached until
    shortly before they expire. Pass its methods to the clients as providers:

    ``AxisorClient(server, token=login.jwt)``,
    ``OrderUpdatesClient(server, credentials=login.order_session, baseline=login.last_seq)``.
    The clients call ``invalidate()`` when the server refuses what they got.
    """

    def __init__(self, server: str, username: str, password: str) -> None:
        self.server = http_base(server)
        self.username = username
        self._password = password
        self._lock = threading.Lock()
        self._access: str | None = None
        self._refresh: str | None = None
        self._session: dict | None = None

    def __repr__(self) -> str:
        return f"Login({self.server!r}, {self.username!r})"

    def invalidate(self) -> None:
        with self._lock:
            self._access = self._session = None

    def jwt(self) -> str:
        """A valid access token: the cached one, a refreshed one, or a new login."""
        with self._lock:
            return self._jwt()

    def _jwt(self) -> str:
        if self._access and (jwt_expiry(self._access) or 0) - time.time() > REFRESH_MARGIN_SECONDS:
            return self._access
        if self._refresh:
            try:
                pair = refresh_pair(self.server, self._refresh)
                self._access, self._refresh = pair["access"], pair.get("refresh")
                return self._access
            except ApiError:
                self._refresh = None  # expired or revoked: log in again
        pair = obtain_token(self.server, self.username, self._password)
        self._access, self._refresh = pair["access"], pair.get("refresh")
        return self._access

    def order_session(self) -> tuple[str, str]:
        """``(session, token)`` for ``/ws/orders``: the cached session, or a new one."""
        with self._lock:
            session = self._session
            if session is None or (_epoch(session.get("expiresAt")) or 0) - time.time() < REFRESH_MARGIN_SECONDS:
                session = self._session = create_order_session(self.server, self._jwt())
            return session["session"], session["token"]

    def last_seq(self) -> int:
        with self._lock:
            jwt = self._jwt()
        return current_seq(self.server, jwt)
