"""Cross-app REST plumbing: the error shape, the staff-or-service-key permission and the page size
cap."""

from __future__ import annotations

import hmac
import json
import logging
import math

from django import db
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, pagination, parsers, permissions, serializers, status
from rest_framework.response import Response

from core.errors import BadRequest, Conflict, NotFound, Unprocessable
from core.middleware import TOO_LARGE, too_large_detail
from wire import plain_number

SERVICE_KEY_HEADER = "X-Service-Key"
logger = logging.getLogger(__name__)

# The database is down, restarting or out of connections.
_DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (db.OperationalError, db.InterfaceError)
try:
    from psycopg_pool import PoolTimeout

    _DATABASE_UNAVAILABLE += (PoolTimeout,)
except ImportError:  # SQLite installs without the pool
    pass


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, with JSON nested deeper than the interpreter recurses (``[[[[…`` ten
    thousand deep, ~20 KB) a 400 ``parse_error`` like any malformed body: DRF catches
    ``ValueError`` alone, and the ``RecursionError`` was a 500 (with DEBUG, Django's debug page,
    settings and all), before authentication on ``/api/auth/token``."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - nested too deeply") from None


@csrf_exempt  # as DRF's views are: a POST to a wrong path is this 404, not an HTML CSRF 403
def no_such_endpoint(request, *args, **kwargs) -> JsonResponse:
    """Any path under ``/api/`` that names no endpoint: a JSON 404 like every other API error
    (Django's own 404 is an HTML page, with DEBUG its URL list)."""
    return JsonResponse({"code": "not_found", "detail": "no such endpoint (see /api/docs)"}, status=404)


def _codes(detail):
    if isinstance(detail, dict):
        return {k: _codes(v) for k, v in detail.items()}
    if isinstance(detail, list):
        return [_codes(v) for v in detail]
    return {"message": str(detail), "code": getattr(detail, "code", "invalid")}


def exception_handler(exc, context):
    """Every error is ``{"code": ..., "detail": ...}`` (+ ``fields`` for validation errors)."""
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        )
    if isinstance(exc, RequestDataTooBig):
        # The servers refuse such a body before reading it (core/middleware.py); this is the last
        # line, for a body whose length was not declared to them.
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return error_response(TOO_LARGE, too_large_detail(limit), status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, BadRequest):
        return error_response(exc.code, str(exc), status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, Conflict):
        return error_response(exc.code, str(exc), status.HTTP_409_CONFLICT)
    if isinstance(exc, Unprocessable):
        return error_response(exc.code, str(exc), status.HTTP_422_UNPROCESSABLE_ENTITY)
    if isinstance(exc, Http404 | NotFound):
        exc = exceptions.NotFound(str(exc) or None)
    if isinstance(exc, _DATABASE_UNAVAILABLE):
        # The database is down, restarting or out of connections: nothing was committed (the
        # request's transaction rolled back), so the caller may retry.
        logger.warning("database unavailable: %s", exc)
        unavailable = error_response("service_unavailable", "the database is unavailable; retry shortly", 503)
        unavailable["Retry-After"] = "1"
        return unavailable
    # Imported here, not at the top: rest_framework.views builds APIView, whose class body reads
    # DEFAULT_PARSER_CLASSES (this module's JSONParser). Imported while this module loads, the
    # first import of core.api (a system check's, in whatever order Django runs them) failed.
    from rest_framework.views import exception_handler as drf_exception_handler

    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        fields = _codes(exc.detail)
        if isinstance(fields, list):
            fields = {"non_field_errors": fields}
        first = next(iter(fields.items()), None)
        summary = "invalid input"
        if first:
            name, errs = first
            if isinstance(errs, list) and errs and isinstance(errs[0], dict):
                summary = f"{name}: {errs[0]['message']}"
        response.data = {"code": "validation_error", "detail": summary, "fields": fields}
        return response
    detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
    code = getattr(exc, "default_code", "error")
    if isinstance(detail, dict):
        code = str(detail.get("code", code))
        detail = detail.get("detail", detail)
        # simplejwt puts the interesting code on the detail itself
    elif hasattr(detail, "code") and detail.code:
        code = detail.code
    response.data = {"code": code, "detail": str(detail)}
    return response


def service_key_given(request) -> bool:
    key = settings.AXISOR_SERVICE_KEY
    given = request.headers.get(SERVICE_KEY_HEADER)
    return bool(key and given and hmac.compare_digest(key.encode(), given.encode()))


def acts_as_staff_with(request, perm: str) -> bool:
    """The request's user is staff and holds ``perm`` (a superuser holds every one)."""
    user = request.user
    return bool(user and user.is_authenticated and user.is_staff and user.has_perm(perm))


def staff_with(perm: str, *, service_key: bool = True) -> type[permissions.BasePermission]:
    """A staff user holding the Django permission ``perm`` (what the admin and the staff panel ask
    for the same thing; a superuser holds every one), or, with ``service_key``, a caller presenting
    the service key. Being staff is not enough: an outside review found that a staff member with
    no permission, refused by the panel, did the same through the API with the panel's token."""

    class StaffWith(permissions.BasePermission):
        message = f"staff with the permission {perm}" + (", or the service key," if service_key else "") + " required"

        def has_permission(self, request, view) -> bool:
            return acts_as_staff_with(request, perm) or (service_key and service_key_given(request))

    return StaffWith


def json_problem(value: object, *, max_bytes: int) -> str | None:
    """Why ``value`` (parsed client JSON bound for a jsonb column and the sockets) cannot be stored
    as it is, or None. PostgreSQL's jsonb refuses NUL characters (\\u0000) and NaN/Infinity, which
    Python's JSON parser lets through; without this check they surface as a 500 at insert time."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if any("\x00" in key for key in item):
                return "NUL characters are not allowed"
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and "\x00" in item:
            return "NUL characters are not allowed"
        elif isinstance(item, float) and not math.isfinite(item):
            return "numbers must be finite"
    if len(json.dumps(value)) > max_bytes:
        return f"at most {max_bytes} bytes of JSON"
    return None


class DecimalField(serializers.DecimalField):
    """DRF's, taking a string only as a plain number in ASCII digits: Python's ``Decimal`` also
    reads ``"1_0"`` (10) and other scripts' digits (``"٠.٠٠١"``), and an outside review placed an
    order for 10 with the first. A quantity, a price or an amount is ``invalid`` unless written
    plainly (a JSON number is always plain)."""

    def to_internal_value(self, data):
        if isinstance(data, str) and not plain_number(data):
            self.fail("invalid")
        return super().to_internal_value(data)


def error_response(code: str, detail: str, http_status: int) -> Response:
    return Response({"code": code, "detail": detail}, status=http_status)


class Page(pagination.LimitOffsetPagination):
    """``?limit=&offset=`` pages (the default for every list): ``PAGE_SIZE`` rows unless ``limit``
    asks otherwise, and never more than ``API_MAX_PAGE_SIZE`` (a larger ``limit`` is cut to it).

    On a view that names a ``cursor_ordering`` (lists that grow without bound: orders, trades, guard
    executions), ``?cursor=`` (empty for the first page) switches to DRF's cursor pages instead:
    ``{"next","previous","results"}``, stable while rows are added, with no ``COUNT(*)`` and no
    offset to skip through; follow ``next``."""

    cursor: pagination.CursorPagination | None = None

    @property
    def max_limit(self) -> int:  # type: ignore[override]  # DRF's is a plain class attribute
        return settings.API_MAX_PAGE_SIZE

    def get_limit(self, request) -> int:
        # DRF falls back to PAGE_SIZE for a limit it cannot read (-1, abc): never above the cap either
        return min(super().get_limit(request) or self.max_limit, self.max_limit)

    def paginate_queryset(self, queryset, request, view=None):
        ordering = getattr(view, "cursor_ordering", None)
        if ordering and "cursor" in request.query_params:
            self.cursor = Cursor(ordering)
            return self.cursor.paginate_queryset(queryset, request, view)
        return super().paginate_queryset(queryset, request, view)

    def get_paginated_response(self, data):
        if self.cursor is not None:
            return self.cursor.get_paginated_response(data)
        return super().get_paginated_response(data)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        if getattr(view, "cursor_ordering", None):
            parameters += [
                p for p in Cursor(view.cursor_ordering).get_schema_operation_parameters(view) if p["name"] == "cursor"
            ]
        return parameters


class Cursor(pagination.CursorPagination):
    """The cursor pages of ``Page``: ``limit`` rows (``PAGE_SIZE`` by default, at most
    ``API_MAX_PAGE_SIZE``) in ``ordering``, whose first field must say where a page ends."""

    page_size_query_param = "limit"

    def __init__(self, ordering: tuple[str, ...]) -> None:
        self.ordering = ordering

    @property
    def max_page_size(self) -> int:  # type: ignore[override]  # DRF's is a plain class attribute
        return settings.API_MAX_PAGE_SIZE

    def get_page_size(self, request) -> int:
        # DRF falls back to PAGE_SIZE for a limit it cannot read (-1, abc): never above the cap either
        return min(super().get_page_size(request) or self.max_page_size, self.max_page_size)

    def decode_cursor(self, request):
        if not request.query_params.get(self.cursor_query_param):
            return None  # ?cursor= (empty): the first page
        cursor = super().decode_cursor(request)  # 404 "Invalid cursor" for what does not decode
        if cursor is not None and not (cursor.offset or cursor.reverse or cursor.position is not None):
            # decodes, but says nothing (a made-up "AAAA"): DRF reads it as the first page, and a
            # client with a damaged cursor would start over at page one, round and round
            raise exceptions.NotFound(self.invalid_cursor_message)
        return cursor
