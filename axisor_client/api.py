"""The REST API, typed, over httpx: ``RestClient`` (synchronous) and ``AsyncRestClient`` (asyncio),
method for method the same, in the style of the Kite Connect and Alpaca SDKs.

Either signs in with a username and password (the access token is fetched on first use, refreshed
shortly before it expires with the single-use refresh token, which the server rotates on every
refresh, and fetched again by logging in when the refresh is refused) or uses a ``token`` you give
(a JWT, or a callable returning one). Errors raise the ``ApiError`` subclass of their status
(``errors``), with the server's ``code``, ``detail``, ``fields`` and ``retry_after``.

Amounts and prices go out as given (``Decimal`` is sent as a JSON number); answers are the server's
JSON as typed dictionaries (``types``), amounts of the account as strings of 8 decimals."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, cast

import httpx

from .errors import Unauthorized, error_for
from .rest import REFRESH_MARGIN_SECONDS, http_base, jwt_expiry
from .types import (
    Account,
    CancelAllResult,
    Candles,
    ClosePositionResult,
    EventsPage,
    Instrument,
    MarginGuard,
    Notification,
    NotificationPage,
    Order,
    OrderSession,
    OrderUpdate,
    Page,
    Position,
    Quote,
    Trade,
)

__all__ = ["DEFAULT_TIMEOUT", "AsyncRestClient", "RestClient"]

DEFAULT_TIMEOUT = 15.0
USER_AGENT = "axisor-client"

TokenSource = str | Callable[[], str] | None
AsyncTokenSource = str | Callable[[], str] | Callable[[], Awaitable[str]] | None


@dataclass
class _Call:
    """One request, built once and sent by either client."""

    method: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    auth: bool = True  # send the access token


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def _body(**fields: Any) -> dict[str, Any]:
    """The fields given (``None`` left out), numbers made JSON."""
    return {name: _jsonable(value) for name, value in fields.items() if value is not None}


def _query(**params: Any) -> dict[str, Any]:
    return {name: value for name, value in params.items() if value is not None}


class _Endpoints:
    """Every endpoint as a ``_Call``: what the two clients share."""

    @staticmethod
    def _place_order(
        trading_symbol: str,
        transaction_type: str,
        quantity: Decimal | float | int,
        order_type: str,
        price: Decimal | float | int | None,
        trigger_price: Decimal | float | int | None,
        leverage: int | None,
        exchange: str | None,
        validity: str | None,
        amo: bool | None,
        reduce_only: bool | None,
        client_order_id: str | None,
        idempotency_key: str | None,
    ) -> _Call:
        body = _body(
            tradingSymbol=trading_symbol,
            exchange=exchange,
            orderType=order_type,
            transactionType=transaction_type,
            quantity=quantity,
            price=price,
            triggerPrice=trigger_price,
            leverage=leverage,
            validity=validity,
            amo=amo,
            reduceOnly=reduce_only,
            clientOrderId=client_order_id,
        )
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return _Call("POST", "/api/orders", json=body, headers=headers)

    @staticmethod
    def _modify_order(order_id: str, quantity: Any, price: Any, trigger_price: Any) -> _Call:
        body = _body(quantity=quantity, price=price, triggerPrice=trigger_price)
        return _Call("PATCH", f"/api/orders/{order_id}", json=body)

    @staticmethod
    def _orders(status: str | None, symbol: str | None, client_order_id: str | None, limit, offset, cursor) -> _Call:
        params = _query(status=status, symbol=symbol, clientOrderId=client_order_id, limit=limit, offset=offset)
        if cursor is not None:
            params["cursor"] = cursor
        return _Call("GET", "/api/orders", params=params)

    @staticmethod
    def _set_margin_guard(enabled, threshold, action, cooldown_seconds) -> _Call:
        body = _body(enabled=enabled, threshold=threshold, action=action, cooldownSeconds=cooldown_seconds)
        return _Call("PUT", "/api/margin-guard", json=body)

    @staticmethod
    def _candles(symbol: str, timeframe: str, start: str | None, end: str | None, limit: int | None) -> _Call:
        params = _query(timeframe=timeframe, limit=limit)
        params.update(_query(**{"from": start, "to": end}))
        return _Call("GET", f"/api/market/{symbol}/candles", params=params)


class _Session:
    """The signed-in state: access and refresh tokens (the refresh token rotates on every use)."""

    def __init__(self, username: str | None, password: str | None) -> None:
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        self.username = username
        self.password = password
        self.access: str | None = None
        self.refresh: str | None = None

    def fresh(self) -> str | None:
        """The access token while it is good for more than the refresh margin."""
        if self.access and (jwt_expiry(self.access) or 0) - time.time() > REFRESH_MARGIN_SECONDS:
            return self.access
        return None

    def keep(self, pair: Mapping[str, Any]) -> str:
        self.access, self.refresh = pair["access"], pair.get("refresh")
        return cast(str, self.access)


def _decode(response: httpx.Response) -> Any:
    if response.is_success:
        if response.status_code == 204 or not response.content:
            return None
        return response.json()
    try:
        body = response.json()
    except ValueError:
        body = {"detail": response.text[:200]}
    raise error_for(response.status_code, body, response.headers.get("Retry-After"))


class RestClient(_Endpoints):
    """The REST API, synchronously. ``RestClient("http://127.0.0.1:8000", username=…, password=…)``,
    or ``token=`` (a JWT or a callable returning one). Thread-safe; use as a context manager or
    ``close()`` it."""

    def __init__(
        self,
        server: str,
        *,
        username: str | None = None,
        password: str | None = None,
        token: TokenSource = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.server = http_base(server)
        self._session = _Session(username, password)
        self._token = token
        self._lock = threading.Lock()
        self._http = httpx.Client(
            base_url=self.server,
            timeout=timeout,
            transport=transport,
            headers={"Accept": "application/json", "User-Agent": USER_AGENT},
        )

    def __enter__(self) -> RestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # ---- credentials ----------------------------------------------------------------------------

    def login(self) -> None:
        """Sign in now (otherwise the first call does)."""
        with self._lock:
            self._login()

    def _login(self) -> str:
        s = self._session
        return s.keep(
            self._send(
                _Call("POST", "/api/auth/token", json=_body(username=s.username, password=s.password), auth=False)
            )
        )

    def jwt(self) -> str:
        """A valid access token: pass ``client.jwt`` to ``AxisorClient(token=…)`` as a provider."""
        if self._token is not None:
            return self._token() if callable(self._token) else self._token
        if self._session.username is None:
            raise ValueError("no credentials: give username and password, or token")
        with self._lock:
            if access := self._session.fresh():
                return access
            if self._session.refresh:
                try:
                    pair = self._send(
                        _Call("POST", "/api/auth/token/refresh", json={"refresh": self._session.refresh}, auth=False)
                    )
                    return self._session.keep(pair)
                except Unauthorized:
                    self._session.refresh = None  # spent, expired or revoked: sign in again
            return self._login()

    def logout(self) -> None:
        """Revoke the refresh token (the access token runs out on its own)."""
        with self._lock:
            refresh, self._session.refresh, self._session.access = self._session.refresh, None, None
        if refresh:
            self._send(_Call("POST", "/api/auth/logout", json={"refresh": refresh}, auth=False))

    def order_session(self) -> OrderSession:
        """``/ws/orders`` credentials ``{"session","token","expiresAt"}``."""
        return self._call(_Call("POST", "/api/auth/sessions"))

    # ---- transport ------------------------------------------------------------------------------

    def _send(self, call: _Call, token: str | None = None) -> Any:
        headers = dict(call.headers)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        response = self._http.request(
            call.method, call.path, params=call.params or None, json=call.json, headers=headers
        )
        return _decode(response)

    def _call(self, call: _Call) -> Any:
        try:
            return self._send(call, self.jwt() if call.auth else None)
        except Unauthorized:
            if self._token is not None or self._session.username is None:
                raise
            with self._lock:  # the access token was refused (revoked, clock skew): sign in again, once
                self._session.access = None
            return self._send(call, self.jwt())

    # ---- orders ---------------------------------------------------------------------------------

    def place_order(
        self,
        trading_symbol: str,
        transaction_type: str,
        quantity: Decimal | float | int,
        order_type: str = "MARKET",
        *,
        price: Decimal | float | int | None = None,
        trigger_price: Decimal | float | int | None = None,
        leverage: int | None = None,
        exchange: str | None = None,
        validity: str | None = None,
        amo: bool | None = None,
        reduce_only: bool | None = None,
        client_order_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Order:
        """``POST /api/orders``: the order as placed (``orderStatus`` ``PENDING``, or ``REJECTED``
        for want of margin). ``idempotency_key``: the same key and body within 24 h place it once."""
        return self._call(
            self._place_order(
                trading_symbol, transaction_type, quantity, order_type, price, trigger_price, leverage,
                exchange, validity, amo, reduce_only, client_order_id, idempotency_key,
            )
        )  # fmt: skip

    def modify_order(
        self,
        order_id: str,
        *,
        quantity: Decimal | float | int | None = None,
        price: Decimal | float | int | None = None,
        trigger_price: Decimal | float | int | None = None,
    ) -> Order:
        """``PATCH /api/orders/{id}``: change a working order."""
        return self._call(self._modify_order(order_id, quantity, price, trigger_price))

    def cancel_order(self, order_id: str) -> Order:
        """``POST /api/orders/{id}/cancel``."""
        return self._call(_Call("POST", f"/api/orders/{order_id}/cancel"))

    def cancel_all_orders(self, symbol: str | None = None) -> CancelAllResult:
        """``POST /api/orders/cancel-all``: every working order, or those of one instrument."""
        return self._call(_Call("POST", "/api/orders/cancel-all", json=_body(symbol=symbol)))

    def order(self, order_id: str) -> Order:
        """``GET /api/orders/{id}``."""
        return self._call(_Call("GET", f"/api/orders/{order_id}"))

    def orders(
        self,
        *,
        status: str | None = None,
        symbol: str | None = None,
        client_order_id: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
        cursor: str | None = None,
    ) -> Page[Order]:
        """``GET /api/orders``: one page, newest first (``cursor=""`` for cursor pages)."""
        return self._call(self._orders(status, symbol, client_order_id, limit, offset, cursor))

    def order_history(self, order_id: str) -> list[OrderUpdate]:
        """``GET /api/orders/{id}/updates``: every update of the order, as it was sent."""
        return self._call(_Call("GET", f"/api/orders/{order_id}/updates"))

    def trades(
        self,
        *,
        symbol: str | None = None,
        order_id: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> Page[Trade]:
        """``GET /api/trades``: your fills, newest first."""
        return self._call(
            _Call("GET", "/api/trades", params=_query(symbol=symbol, orderId=order_id, limit=limit, offset=offset))
        )

    # ---- positions, account, margin guard -------------------------------------------------------

    def positions(
        self,
        *,
        status: str | None = None,
        symbol: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> Page[Position]:
        """``GET /api/positions``: open ones (``status="closed"`` for history)."""
        return self._call(
            _Call("GET", "/api/positions", params=_query(status=status, symbol=symbol, limit=limit, offset=offset))
        )

    def close_position(self, position_id: str | int) -> ClosePositionResult:
        """``POST /api/positions/{id}/close``: a reduce-only MARKET order → ``{"position","order"}``."""
        return self._call(_Call("POST", f"/api/positions/{position_id}/close"))

    def account(self) -> Account:
        """``GET /api/account``: balance, margin held, available, equity."""
        return self._call(_Call("GET", "/api/account"))

    def margin_guard(self) -> MarginGuard:
        """``GET /api/margin-guard``."""
        return self._call(_Call("GET", "/api/margin-guard"))

    def set_margin_guard(
        self,
        *,
        enabled: bool | None = None,
        threshold: Decimal | float | None = None,
        action: str | None = None,
        cooldown_seconds: int | None = None,
    ) -> MarginGuard:
        """``PUT /api/margin-guard``: fields left out keep their values."""
        return self._call(self._set_margin_guard(enabled, threshold, action, cooldown_seconds))

    # ---- market ---------------------------------------------------------------------------------

    def instruments(self) -> list[Instrument]:
        """``GET /api/market/instruments``."""
        return self._call(_Call("GET", "/api/market/instruments"))

    def quote(self, symbol: str) -> Quote:
        """``GET /api/market/{symbol}``: the latest price, change, volume (``NotFound`` before the
        first tick)."""
        return self._call(_Call("GET", f"/api/market/{symbol}"))

    def candles(
        self, symbol: str, timeframe: str, *, start: str | None = None, end: str | None = None, limit: int | None = None
    ) -> Candles:
        """``GET /api/market/{symbol}/candles``, oldest first (``start``/``end``: the ``from``/``to``
        ISO times)."""
        return self._call(self._candles(symbol, timeframe, start, end, limit))

    # ---- notifications and events ---------------------------------------------------------------

    def notifications(
        self,
        *,
        status: str | None = None,
        category: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> NotificationPage:
        """``GET /api/notifications``: your inbox, newest first, by cursor (follow ``next``)."""
        return self._call(
            _Call(
                "GET", "/api/notifications", params=_query(status=status, category=category, limit=limit, cursor=cursor)
            )
        )

    def mark_read(self, notification_id: str | int) -> Notification:
        """``POST /api/notifications/{id}/read`` (idempotent)."""
        return self._call(_Call("POST", f"/api/notifications/{notification_id}/read"))

    def mark_all_read(self) -> int:
        """``POST /api/notifications/read-all``: how many were marked."""
        return self._call(_Call("POST", "/api/notifications/read-all"))["updated"]

    def events_since(self, since: int, limit: int | None = None) -> EventsPage:
        """``GET /api/events?since=N``: your personal events after seq N (``Gone`` past retention)."""
        return self._call(_Call("GET", "/api/events", params=_query(since=since, limit=limit)))


class AsyncRestClient(_Endpoints):
    """The REST API on asyncio: the methods of ``RestClient``, awaited. ``async with
    AsyncRestClient(server, username=…, password=…) as api: await api.orders()``."""

    def __init__(
        self,
        server: str,
        *,
        username: str | None = None,
        password: str | None = None,
        token: AsyncTokenSource = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.server = http_base(server)
        self._session = _Session(username, password)
        self._token = token
        self._lock: asyncio.Lock | None = None  # made on first use, in the loop that uses it
        self._http = httpx.AsyncClient(
            base_url=self.server,
            timeout=timeout,
            transport=transport,
            headers={"Accept": "application/json", "User-Agent": USER_AGENT},
        )

    async def __aenter__(self) -> AsyncRestClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def _guard(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    # ---- credentials ----------------------------------------------------------------------------

    async def login(self) -> None:
        async with self._guard():
            await self._login()

    async def _login(self) -> str:
        s = self._session
        call = _Call("POST", "/api/auth/token", json=_body(username=s.username, password=s.password), auth=False)
        return s.keep(await self._send(call))

    async def jwt(self) -> str:
        """A valid access token (an async provider for ``AxisorClient(token=client.jwt)``)."""
        if self._token is not None:
            if not callable(self._token):
                return self._token
            if inspect.iscoroutinefunction(self._token):
                return await self._token()
            value = await asyncio.to_thread(self._token)  # a sync provider may block (Login.jwt does)
            return cast(str, await value if inspect.isawaitable(value) else value)
        if self._session.username is None:
            raise ValueError("no credentials: give username and password, or token")
        async with self._guard():
            if access := self._session.fresh():
                return access
            if self._session.refresh:
                try:
                    call = _Call("POST", "/api/auth/token/refresh", json={"refresh": self._session.refresh}, auth=False)
                    return self._session.keep(await self._send(call))
                except Unauthorized:
                    self._session.refresh = None
            return await self._login()

    async def logout(self) -> None:
        async with self._guard():
            refresh, self._session.refresh, self._session.access = self._session.refresh, None, None
        if refresh:
            await self._send(_Call("POST", "/api/auth/logout", json={"refresh": refresh}, auth=False))

    async def order_session(self) -> OrderSession:
        return await self._call(_Call("POST", "/api/auth/sessions"))

    # ---- transport ------------------------------------------------------------------------------

    async def _send(self, call: _Call, token: str | None = None) -> Any:
        headers = dict(call.headers)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        response = await self._http.request(
            call.method, call.path, params=call.params or None, json=call.json, headers=headers
        )
        return _decode(response)

    async def _call(self, call: _Call) -> Any:
        try:
            return await self._send(call, await self.jwt() if call.auth else None)
        except Unauthorized:
            if self._token is not None or self._session.username is None:
                raise
            async with self._guard():
                self._session.access = None
            return await self._send(call, await self.jwt())

    # ---- the endpoints (see RestClient for each) -------------------------------------------------

    async def place_order(
        self,
        trading_symbol: str,
        transaction_type: str,
        quantity: Decimal | float | int,
        order_type: str = "MARKET",
        *,
        price: Decimal | float | int | None = None,
        trigger_price: Decimal | float | int | None = None,
        leverage: int | None = None,
        exchange: str | None = None,
        validity: str | None = None,
        amo: bool | None = None,
        reduce_only: bool | None = None,
        client_order_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Order:
        return await self._call(
            self._place_order(
                trading_symbol, transaction_type, quantity, order_type, price, trigger_price, leverage,
                exchange, validity, amo, reduce_only, client_order_id, idempotency_key,
            )
        )  # fmt: skip

    async def modify_order(
        self,
        order_id: str,
        *,
        quantity: Decimal | float | int | None = None,
        price: Decimal | float | int | None = None,
        trigger_price: Decimal | float | int | None = None,
    ) -> Order:
        return await self._call(self._modify_order(order_id, quantity, price, trigger_price))

    async def cancel_order(self, order_id: str) -> Order:
        return await self._call(_Call("POST", f"/api/orders/{order_id}/cancel"))

    async def cancel_all_orders(self, symbol: str | None = None) -> CancelAllResult:
        return await self._call(_Call("POST", "/api/orders/cancel-all", json=_body(symbol=symbol)))

    async def order(self, order_id: str) -> Order:
        return await self._call(_Call("GET", f"/api/orders/{order_id}"))

    async def orders(
        self,
        *,
        status: str | None = None,
        symbol: str | None = None,
        client_order_id: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
        cursor: str | None = None,
    ) -> Page[Order]:
        return await self._call(self._orders(status, symbol, client_order_id, limit, offset, cursor))

    async def order_history(self, order_id: str) -> list[OrderUpdate]:
        return await self._call(_Call("GET", f"/api/orders/{order_id}/updates"))

    async def trades(
        self,
        *,
        symbol: str | None = None,
        order_id: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> Page[Trade]:
        params = _query(symbol=symbol, orderId=order_id, limit=limit, offset=offset)
        return await self._call(_Call("GET", "/api/trades", params=params))

    async def positions(
        self,
        *,
        status: str | None = None,
        symbol: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> Page[Position]:
        params = _query(status=status, symbol=symbol, limit=limit, offset=offset)
        return await self._call(_Call("GET", "/api/positions", params=params))

    async def close_position(self, position_id: str | int) -> ClosePositionResult:
        return await self._call(_Call("POST", f"/api/positions/{position_id}/close"))

    async def account(self) -> Account:
        return await self._call(_Call("GET", "/api/account"))

    async def margin_guard(self) -> MarginGuard:
        return await self._call(_Call("GET", "/api/margin-guard"))

    async def set_margin_guard(
        self,
        *,
        enabled: bool | None = None,
        threshold: Decimal | float | None = None,
        action: str | None = None,
        cooldown_seconds: int | None = None,
    ) -> MarginGuard:
        return await self._call(self._set_margin_guard(enabled, threshold, action, cooldown_seconds))

    async def instruments(self) -> list[Instrument]:
        return await self._call(_Call("GET", "/api/market/instruments"))

    async def quote(self, symbol: str) -> Quote:
        return await self._call(_Call("GET", f"/api/market/{symbol}"))

    async def candles(
        self, symbol: str, timeframe: str, *, start: str | None = None, end: str | None = None, limit: int | None = None
    ) -> Candles:
        return await self._call(self._candles(symbol, timeframe, start, end, limit))

    async def notifications(
        self,
        *,
        status: str | None = None,
        category: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> NotificationPage:
        params = _query(status=status, category=category, limit=limit, cursor=cursor)
        return await self._call(_Call("GET", "/api/notifications", params=params))

    async def mark_read(self, notification_id: str | int) -> Notification:
        return await self._call(_Call("POST", f"/api/notifications/{notification_id}/read"))

    async def mark_all_read(self) -> int:
        return (await self._call(_Call("POST", "/api/notifications/read-all")))["updated"]

    async def events_since(self, since: int, limit: int | None = None) -> EventsPage:
        return await self._call(_Call("GET", "/api/events", params=_query(since=since, limit=limit)))
