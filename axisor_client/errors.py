"""The errors of the REST API as exceptions: one class per HTTP status, each carrying the server's
machine-readable ``code``, its ``detail``, the per-field ``fields`` of a 400 and, on 429 and 503,
``retry_after`` (seconds, from the ``Retry-After`` header). Standard library only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ApiError(Exception):
    """A non-2xx answer: ``status``, the JSON ``body`` (``{"code","detail","fields"?}``), and from it
    ``code``, ``detail`` and ``fields``; ``retry_after`` when the server sent ``Retry-After``."""

    def __init__(self, status: int, body: Mapping[str, Any], *, retry_after: float | None = None) -> None:
        body = dict(body)
        super().__init__(f"HTTP {status}: {body.get('code', '')} {body.get('detail', '')}".strip())
        self.status = status
        self.body = body
        self.code: str | None = body.get("code") if isinstance(body.get("code"), str) else None
        self.detail: str = str(body.get("detail", ""))
        fields = body.get("fields")
        self.fields: dict[str, list[dict[str, str]]] = fields if isinstance(fields, dict) else {}
        self.retry_after = retry_after


class BadRequest(ApiError):
    """400: bad input (``validation_error`` with ``fields``, ``invalid_input``, ``parse_error``)."""


class Unauthorized(ApiError):
    """401: no, expired or revoked credentials (``not_authenticated``, ``token_not_valid``, …)."""


class PermissionDenied(ApiError):
    """403: signed in but not allowed."""


class NotFound(ApiError):
    """404: no such thing, or not yours."""


class Conflict(ApiError):
    """409: the state refuses the change (``invalid_transition``, ``insufficient_funds``,
    ``duplicate_client_order_id``, ``limit_exceeded``, ``close_pending``, ``position_closed``, …)."""


class Gone(ApiError):
    """410 ``too_old``: the events asked for are past retention (``body["lastSeq"]`` is the latest)."""


class PayloadTooLarge(ApiError):
    """413 ``request_too_large``."""


class Unprocessable(ApiError):
    """422 ``idempotency_key_reused``: the same ``Idempotency-Key`` with another body."""


class RateLimited(ApiError):
    """429 ``throttled``: wait ``retry_after`` seconds."""


class ServiceUnavailable(ApiError):
    """503 ``service_unavailable``: nothing was changed; retry after ``retry_after`` seconds."""


class ServerError(ApiError):
    """Any other 5xx; 502 ``upstream_unavailable`` (nginx: no server process answered) may or may
    not have taken effect: retry with the same ``Idempotency-Key``."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    410: Gone,
    413: PayloadTooLarge,
    422: Unprocessable,
    429: RateLimited,
    503: ServiceUnavailable,
}


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds (the server sends whole seconds; an HTTP date is not used)."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def error_for(status: int, body: Any, retry_after: str | None = None) -> ApiError:
    """The exception for a non-2xx answer: its class by status, ``ApiError`` for others."""
    if not isinstance(body, Mapping):
        body = {"detail": body}
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    return cls(status, body, retry_after=parse_retry_after(retry_after))
