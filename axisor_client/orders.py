"""``OrderUpdatesClient``: the ``/ws/orders`` order-updates protocol (seed 004) with the seed's
reconnect, heartbeat and read timeout, plus resume (``&since=``) and dedupe by ``seq``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from websockets.asyncio.client import ClientConnection

from .base import ReconnectingClient, Source, resolve, with_query


def _pair(credentials: Any) -> tuple[str, str]:
    if isinstance(credentials, dict):
        credentials = (credentials.get("session"), credentials.get("token"))
    try:
        session, token = credentials
    except (TypeError, ValueError):
        raise RuntimeError("credentials are (session, token) or {'session':..., 'token':...}") from None
    if not session or not token:
        raise RuntimeError("credentials without a session or a token")
    return str(session), str(token)


class OrderUpdatesClient(ReconnectingClient):
    """Order-updates client for ``/ws/orders``, modelled on the seed's ``OrderUpdatesClient``.

    ``url``: the server (``http://host:8000`` or ``ws://host:8000/ws/orders``), a list to rotate
    through, or a callable. ``credentials``: ``(session, token)`` / ``{"session","token"}`` from
    ``POST /api/auth/sessions``, or a callable (sync or async) returning them for every (re)connect.
    ``last_seq``: resume after this seq. ``baseline``: a callable returning the account's current seq
    (``Login.last_seq``), asked once when ``last_seq`` is None, so that even the first connection
    resumes and nothing published before it opens is missed. ``snapshot``: ask for the open orders
    on the first connection (delivered with ``"snapshot": true``, outside the seq order).

    Callbacks get the flat order update as received (``updateType``, ``orderId``, ..., ``version``,
    ``seq``), exactly once and in seq order across reconnects.
    """

    path = "/ws/orders"
    heartbeat_text = "PONG"

    def __init__(
        self,
        url: str | Sequence[str] | Callable[[], Any],
        credentials: Source,
        *,
        baseline: Source = None,
        snapshot: bool = False,
        heartbeat_interval: float | None = 30.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(url, heartbeat_interval=heartbeat_interval, **kwargs)
        self._credentials = credentials
        self._baseline_source = baseline
        self._snapshot = snapshot
        # After resume_failed we take events as they come (the socket's own start is not told to
        # us); this is where a reconnect resumes if none arrives before it.
        self._fallback: int | None = None

    # ---- callbacks (the seed's names) -------------------------------------------------------

    def on_order_update(self, order_id: str, callback: Callable[[dict], Any]) -> Callable:
        """``callback(update)`` for the updates of one order; ``"*"`` for all of them."""
        return self._add("order", str(order_id), callback)

    def on_all_orders(self, callback: Callable[[dict], Any]) -> Callable:
        return self.on_order_update("*", callback)

    def on_update_type(self, update_type: str, callback: Callable[[dict], Any]) -> Callable:
        """``callback(update)`` for one ``updateType`` (``"TRADE_UPDATE"``...)."""
        return self._add("update_type", update_type, callback)

    def on_heartbeat(self, callback: Callable[[dict], Any]) -> Callable:
        return self._add("heartbeat", "*", callback)

    # ---- connection -------------------------------------------------------------------------

    @property
    def resume_from(self) -> int | None:
        return self.last_seq if self.last_seq is not None else self._fallback

    def _credentials_source(self) -> Source:
        return self._credentials

    async def _prepare(self, url: str) -> tuple[str, dict | None]:
        if self.resume_from is None and self._baseline_source is not None:
            seq = await resolve(self._baseline_source)
            self._baseline_source = None  # once: later connections resume from what we saw
            await self._set_last_seq(int(seq))
        session, token = _pair(await resolve(self._credentials))
        params: dict[str, Any] = {"session": session, "token": token, "since": self.resume_from}
        if self._snapshot:
            params["snapshot"] = "1"
        return with_query(url, params), None

    async def _on_open(self, ws: ClientConnection) -> None:
        self._snapshot = False  # the first connection's snapshot only
        await self._announce()

    async def _handle(self, message: dict) -> None:
        kind = message.get("type")
        if "updateType" in message:
            await self._update(message)
        elif kind == "heartbeat":
            await self._fire("heartbeat", "*", message)
        elif kind == "resumed":
            last = message.get("lastSeq")
            if isinstance(last, int) and (self.resume_from is None or last > self.resume_from):
                # Everything up to lastSeq was sent; what we did not get was not an order update.
                before = self.resume_from
                self._fallback, self.last_seq = None, last
                await self._moved(before)
            await self._fire("resumed", "*", message)
        elif kind == "resume_failed":
            last, before = message.get("lastSeq"), self.resume_from
            self._fallback = last if isinstance(last, int) else None
            self.last_seq = None  # take the live stream as it comes; resume_from is the fallback now
            await self._fire("resume_failed", "*", message)
            await self._moved(before)
        elif kind == "error":
            await self._fire("error", "*", message)

    async def _update(self, update: dict) -> None:
        seq = update.get("seq")
        if update.get("snapshot") or not isinstance(seq, int):
            await self._dispatch(update)
            return
        if self.last_seq is not None and seq <= self.last_seq:
            self.duplicates += 1
            return
        await self._dispatch(update)
        before = self.resume_from
        self._fallback, self.last_seq = None, seq
        await self._moved(before)

    async def _dispatch(self, update: dict) -> None:
        await self._fire("order", str(update.get("orderId")), update)
        await self._fire("update_type", str(update.get("updateType")), update)
        await self._fire("order", "*", update)
