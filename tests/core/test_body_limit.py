"""The body limit of the ASGI and WSGI entry points (core/middleware.py), for servers other than
daphne (which refuses in Twisted first: tests/hardening/test_request_bodies.py): the application is
never reached by a body over DATA_UPLOAD_MAX_MEMORY_SIZE."""

from __future__ import annotations

import io
import json

from asgiref.testing import ApplicationCommunicator

from core.middleware import AsgiBodyLimit, WsgiBodyLimit

LIMIT = 1000


def scope(headers: list[tuple[bytes, bytes]]) -> dict:
    return {"type": "http", "method": "POST", "path": "/api/orders", "headers": headers, "query_string": b""}


class Recorder:
    """An ASGI app that reads the whole body, and says how much it got."""

    def __init__(self) -> None:
        self.read: int | None = None

    async def __call__(self, scope, receive, send):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.read = len(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def answer(app, headers, chunks: list[bytes]) -> tuple[int, bytes]:
    comm = ApplicationCommunicator(app, scope(headers))
    for n, chunk in enumerate(chunks):
        await comm.send_input({"type": "http.request", "body": chunk, "more_body": n < len(chunks) - 1})
    start = await comm.receive_output(5)
    body = await comm.receive_output(5)
    await comm.wait(5)
    return start["status"], body["body"]


async def test_asgi_refuses_a_declared_length_over_the_limit_without_reading(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = LIMIT
    inner = Recorder()
    status, body = await answer(AsgiBodyLimit(inner), [(b"content-length", b"1001")], [])  # nothing sent
    assert status == 413 and json.loads(body)["code"] == "request_too_large"
    assert inner.read is None


async def test_asgi_refuses_a_chunked_body_once_past_the_limit_and_passes_one_under_it(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = LIMIT
    inner = Recorder()
    status, body = await answer(AsgiBodyLimit(inner), [], [b"x" * 600, b"x" * 600, b"x" * 600])
    assert status == 413 and json.loads(body)["code"] == "request_too_large"
    assert inner.read is None  # its read never completed
    status, _ = await answer(AsgiBodyLimit(inner), [(b"content-length", b"1000")], [b"x" * 1000])
    assert (status, inner.read) == (200, 1000)


def wsgi(app, environ: dict) -> tuple[str, bytes]:
    got = {}
    body = b"".join(app({"REQUEST_METHOD": "POST", **environ}, lambda status, headers: got.update(status=status)))
    return got["status"], body


class Counting(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.asked = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.asked += len(chunk)
        return chunk


def test_wsgi_refuses_a_declared_length_unread_and_a_chunked_body_past_the_limit(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = LIMIT
    seen = []

    def inner(environ, start_response):
        seen.append(environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"])))
        start_response("200 OK", [])
        return [b"ok"]

    stream = Counting(b"x" * 5000)
    status, body = wsgi(WsgiBodyLimit(inner), {"CONTENT_LENGTH": "5000", "wsgi.input": stream})
    assert status.startswith("413") and json.loads(body)["code"] == "request_too_large"
    assert stream.asked == 0

    stream = Counting(b"x" * 50_000)
    chunked = {"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input": stream}
    status, _ = wsgi(WsgiBodyLimit(inner), chunked)
    assert status.startswith("413") and stream.asked == LIMIT + 1
    status, _ = wsgi(WsgiBodyLimit(inner), {"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input": Counting(b"y" * 10)})
    assert status == "200 OK" and seen == [b"y" * 10]  # under the limit: handed on, with its length


async def test_asgi_limit_around_django_answers_413_for_a_chunked_body(settings):
    """Django's handler reads the body before anything else: the refusal reaches the client whole."""
    from django.core.asgi import get_asgi_application

    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = LIMIT
    status, body = await answer(AsgiBodyLimit(get_asgi_application()), [], [b"{" * 800, b"x" * 800, b"}"])
    assert status == 413 and json.loads(body)["code"] == "request_too_large"
