"""Python client of Axisor Realtime: ``/ws`` events and ``/ws/orders`` order updates, with reconnect
(backoff 1, 2, 4, 8 s capped at 10 s, 300 tries), heartbeat and read timeout, resubscribe, resume
from the last ``seq`` and dedupe; async, with thin synchronous wrappers and a ``tail`` CLI."""

from .backoff import Backoff
from .base import (
    CONNECTED,
    DISCONNECTED,
    NORECONNECT,
    RECONNECTING,
    AxisorError,
    ConnectionStatus,
    ReconnectingClient,
)
from .events import CATEGORIES, AxisorClient
from .orders import OrderUpdatesClient
from .rest import ApiError, Login
from .sync import SyncAxisorClient, SyncClient, SyncOrderUpdatesClient

__version__ = "0.1.0"

__all__ = [
    "CATEGORIES",
    "CONNECTED",
    "DISCONNECTED",
    "NORECONNECT",
    "RECONNECTING",
    "ApiError",
    "AxisorClient",
    "AxisorError",
    "Backoff",
    "ConnectionStatus",
    "Login",
    "OrderUpdatesClient",
    "ReconnectingClient",
    "SyncAxisorClient",
    "SyncClient",
    "SyncOrderUpdatesClient",
]
