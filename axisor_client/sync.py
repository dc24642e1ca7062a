"""Thin synchronous wrappers: the async client runs on a background thread with its own event loop.
Callbacks are invoked on that thread."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any

from .base import ReconnectingClient
from .events import AxisorClient
from .orders import OrderUpdatesClient


class SyncClient:
    """``start()`` / ``stop()`` (also ``connect()`` / ``disconnect()``, the seed's names) around an
    async client; everything else (``on_*`` registrations, ``last_seq``...) is the async client's."""

    client_class: type[ReconnectingClient] = ReconnectingClient

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.client = self.client_class(*args, **kwargs)
        self.result: str | None = None  # what run() returned, once it has
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()

    def __getattr__(self, name: str) -> Any:
        if name == "client":
            raise AttributeError(name)
        return getattr(self.client, name)

    def __enter__(self) -> SyncClient:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start connecting on a background thread; returns at once (see ``wait_connected``)."""
        if self.running:
            return
        self._started.clear()
        self.result = None
        self._thread = threading.Thread(target=self._main, name=f"axisor-{type(self.client).__name__}", daemon=True)
        self._thread.start()
        self._started.wait()

    connect = start

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            task = loop.create_task(self.client.run())
            self._started.set()
            self.result = loop.run_until_complete(task)
        finally:
            self._loop = None
            with contextlib.suppress(RuntimeError):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def stop(self, timeout: float = 15.0) -> None:
        """Close the connection, stop reconnecting and wait for the thread to end."""
        loop, thread = self._loop, self._thread
        if loop is not None and thread is threading.current_thread():
            # From one of the client's own callbacks: ask, and let the loop wind down after it returns.
            loop.create_task(self.client.stop())
            return
        if loop is not None and thread is not None and thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(self.client.stop(), loop)
            with contextlib.suppress(Exception):  # the loop may finish (and close) before it answers
                future.result(timeout)
        if thread is not None:
            thread.join(timeout)

    disconnect = stop

    def call(self, coroutine: Coroutine, timeout: float | None = 15.0) -> Any:
        """Run a coroutine of the client on its loop and wait for its result."""
        loop = self._loop
        if loop is None:
            coroutine.close()
            raise RuntimeError("the client is not running: call start() first")
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout)

    def wait_connected(self, timeout: float | None = None) -> bool:
        return self.call(self.client.wait_connected(timeout), None if timeout is None else timeout + 5)

    def wait(self, timeout: float | None = None) -> str | None:
        """Wait for the client to end (stop(), or "noreconnect"); returns what run() returned."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.result


class SyncAxisorClient(SyncClient):
    """``AxisorClient`` on a background thread."""

    client_class = AxisorClient
    client: AxisorClient

    def subscribe(self, channel: str, timeout: float = 10.0) -> dict | None:
        if self._loop is None:
            self.client._want(channel, True)  # joined on connect
            return None
        return self.call(self.client.subscribe(channel, timeout=timeout), timeout + 5)

    def unsubscribe(self, channel: str, timeout: float = 10.0) -> dict | None:
        if self._loop is None:
            self.client._want(channel, False)
            return None
        return self.call(self.client.unsubscribe(channel, timeout=timeout), timeout + 5)

    def list_rooms(self, timeout: float = 10.0) -> list[str]:
        return self.call(self.client.list_rooms(timeout=timeout), timeout + 5)

    def ping(self, timeout: float = 10.0) -> dict:
        return self.call(self.client.ping(timeout=timeout), timeout + 5)


class SyncOrderUpdatesClient(SyncClient):
    """``OrderUpdatesClient`` on a background thread; the seed's ``connect()`` / ``disconnect()``."""

    client_class = OrderUpdatesClient
    client: OrderUpdatesClient
