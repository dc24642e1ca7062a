"""Python client of Axisor Realtime: ``/ws`` events and ``/ws/orders`` order updates, with reconnect
(backoff 1, 2, 4, 8 s capped at 10 s, 300 tries), heartbeat and read timeout, resubscribe, resume
from the last ``seq`` and dedupe; async, with thin synchronous wrappers and a ``tail`` CLI; and the
REST API, typed, synchronous (``RestClient``) and async (``AsyncRestClient``), over httpx."""

from .api import AsyncRestClient, RestClient
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
from .errors import (
    ApiError,
    BadRequest,
    Conflict,
    Gone,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    Unauthorized,
    Unprocessable,
)
from .events import CATEGORIES, AxisorClient
from .orders import OrderUpdatesClient
from .rest import Login
from .sync import SyncAxisorClient, SyncClient, SyncOrderUpdatesClient

__version__ = "0.2.0"

__all__ = [
    "CATEGORIES",
    "CONNECTED",
    "DISCONNECTED",
    "NORECONNECT",
    "RECONNECTING",
    "ApiError",
    "AsyncRestClient",
    "AxisorClient",
    "AxisorError",
    "Backoff",
    "BadRequest",
    "Conflict",
    "ConnectionStatus",
    "Gone",
    "Login",
    "NotFound",
    "OrderUpdatesClient",
    "PayloadTooLarge",
    "PermissionDenied",
    "RateLimited",
    "ReconnectingClient",
    "RestClient",
    "ServerError",
    "ServiceUnavailable",
    "SyncAxisorClient",
    "SyncClient",
    "SyncOrderUpdatesClient",
    "Unauthorized",
    "Unprocessable",
]
