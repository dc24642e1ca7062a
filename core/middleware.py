"""Request checks that belong before any view, and the request-body limit that belongs before the
framework reads a body at all (wrapped around the ASGI and WSGI applications)."""

from __future__ import annotations

import io
import json

from django.conf import settings
from django.http import JsonResponse

TOO_LARGE = "request_too_large"
PROBES = frozenset({"/healthz", "/readyz", "/metrics"})


class ProbesAnswerAnyHost:
    """``/healthz``, ``/readyz`` and ``/metrics`` answer whatever ``Host`` a request names: load
    balancers and Prometheus probe each process at its own address (``127.0.0.1:8001``), not at the
    public name in ``ALLOWED_HOSTS``, and an outside operator's probes met a 400 (with an error
    and a traceback logged for each). Host validation guards the absolute URLs a response builds
    (redirects, links in emails); these three build none. Placed before anything that asks for the
    host (CommonMiddleware)."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        if request.path in PROBES:
            sent = request.META.get("HTTP_HOST") or request.META.get("SERVER_NAME", "")
            request.get_host = lambda: sent
        return self.get_response(request)


class RefuseNulCharacters:
    """A NUL character in the path or query string can reach no valid object or filter, and
    PostgreSQL refuses it in any text parameter: answer 400 here rather than a 500 from the query.
    (Request bodies are checked by their serializers: DRF's CharField refuses NUL.)"""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        if "\x00" in request.path or any(
            "\x00" in key or any("\x00" in v for v in values) for key, values in request.GET.lists()
        ):
            return JsonResponse(
                {"code": "invalid_input", "detail": "NUL characters are not allowed in the URL"}, status=400
            )
        return self.get_response(request)


# ---- request bodies over the limit ------------------------------------------------------------------
# settings.DATA_UPLOAD_MAX_MEMORY_SIZE bounds the whole body (the API takes no file uploads). Django
# checks it only when a view reads ``request.body``, and by then the server has read the body: daphne
# (Twisted) into a temporary file, Django's ASGI handler again into its own. These wrappers refuse
# before: a declared Content-Length over the limit without reading a byte, a chunked body as soon as
# it passes the limit. (daphne itself is patched the same way in core/internals.py, since Twisted
# reads the whole body before the application is called; behind nginx, client_max_body_size.)


def body_limit() -> int | None:
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE


def too_large_detail(limit: int) -> str:
    return f"the request body is over the limit of {limit} bytes (DATA_UPLOAD_MAX_MEMORY_SIZE)"


def too_large_body(limit: int) -> bytes:
    """The 413 answer of every tier, in the API's error shape."""
    return json.dumps({"code": TOO_LARGE, "detail": too_large_detail(limit)}).encode()


def _declared_length(value: bytes | str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None  # the server refuses a malformed Content-Length before we see it


class _TooLarge(Exception):
    pass


class AsgiBodyLimit:
    """ASGI: answer 413 to a body over the limit before the application reads it."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        limit = body_limit()
        if scope["type"] != "http" or limit is None:
            return await self.app(scope, receive, send)
        declared = next((_declared_length(v) for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and declared > limit:
            return await self._refuse(send, limit)
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge
            return message

        try:
            return await self.app(scope, counted_receive, send)
        except _TooLarge:
            # Django reads the whole body before it starts an answer, so none has been sent.
            return await self._refuse(send, limit)

    @staticmethod
    async def _refuse(send, limit: int) -> None:
        body = too_large_body(limit)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": [*headers, (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class WsgiBodyLimit:
    """WSGI (gunicorn): the same. A chunked body (no Content-Length) is read up to the limit and
    handed on with its length, or refused once it passes the limit."""

    def __init__(self, app) -> None:
        self.app = app

    def __call__(self, environ, start_response):
        limit = body_limit()
        if limit is None:
            return self.app(environ, start_response)
        declared = _declared_length(environ.get("CONTENT_LENGTH"))
        if declared is not None and declared > limit:
            return self._refuse(start_response, limit)
        if declared is None and "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            body = environ["wsgi.input"].read(limit + 1)
            if len(body) > limit:
                return self._refuse(start_response, limit)
            environ["wsgi.input"], environ["CONTENT_LENGTH"] = io.BytesIO(body), str(len(body))
        return self.app(environ, start_response)

    @staticmethod
    def _refuse(start_response, limit: int):
        body = too_large_body(limit)
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))), ("Connection", "close")]
        start_response("413 Content Too Large", headers)
        return [body]
