"""The process's ASGI application hands a socket's task its consumer's own coroutine: no wrapper
(the background starter, the protocol, origin and URL routing) stays suspended above it for the
socket's life. What those wrappers did is still done: a path with no route is an error, and the
consumer finds ``url_route`` in its scope (the Origin check: tests/gateway/test_events_consumer.py)."""

from __future__ import annotations

import pytest
from channels.consumer import AsyncConsumer
from django.urls import path

from axisor.asgi import application
from gateway.events_consumer import EventsConsumer
from gateway.routing import SocketRouter


def websocket_scope(path: str, headers=()) -> dict:
    """A handshake's scope, with the Host every HTTP client sends (gateway.origin.host_allowed)."""
    headers = [(b"host", b"testserver"), *headers]
    return {"type": "websocket", "path": path, "headers": headers, "query_string": b"", "subprotocols": []}


async def never(*_):
    raise AssertionError("not called")


def test_a_sockets_task_runs_its_consumer_and_nothing_above_it():
    run = application(websocket_scope("/ws"), never, never)
    try:
        assert run.cr_code is EventsConsumer.__call__.__code__  # the consumer's own call, not a wrapper's
        assert type(run.cr_frame.f_locals["self"]) is EventsConsumer
    finally:
        run.close()


def test_the_consumer_finds_its_route_in_the_scope():
    seen = {}

    class Echo(AsyncConsumer):
        async def __call__(self, scope, receive, send):
            seen.update(scope)

    router = SocketRouter([path("rooms/<str:name>", Echo.as_asgi())])
    run = router(websocket_scope("/rooms/lobby"), never, never)
    assert run.cr_code is Echo.__call__.__code__
    with pytest.raises(StopIteration):
        run.send(None)
    assert seen["url_route"] == {"args": (), "kwargs": {"name": "lobby"}} and seen["path_remaining"] == ""


async def test_a_path_with_no_route_is_an_error_as_channels_makes_it():
    with pytest.raises(ValueError, match=r"No route found for path 'nowhere'"):
        await application(websocket_scope("/nowhere"), never, never)


async def test_an_unknown_scope_type_is_an_error_as_channels_makes_it():
    with pytest.raises(ValueError, match=r"No application configured for scope type 'lifespan'"):
        await application({"type": "lifespan"}, never, never)


@pytest.mark.django_db(transaction=True)
async def test_a_connected_socket_keeps_no_handshake_headers(make_user):
    from channels.db import database_sync_to_async

    from tests.conftest import connected, jwt_for

    user = await database_sync_to_async(make_user)("headless")
    comm, hello = await connected(jwt_for(user), origin="http://localhost:8000")
    try:
        assert hello["userId"] == str(user.pk)  # the bearer token was read from them first
        assert comm.scope["headers"] == []  # then dropped: the list daphne's protocol holds too
    finally:
        await comm.disconnect()


async def test_what_the_call_raises_is_raised_in_its_coroutine_where_daphne_answers_it(monkeypatch):
    """daphne makes a socket's application by calling it: had the call itself raised (a malformed
    Origin for the check, a consumer that cannot be made), daphne would only log it and leave the
    handshake unanswered until its timeout. Raised in the coroutine, it is a prompt 500."""
    router = application.applications["websocket"]

    def broken(scope):
        raise ValueError("Port could not be cast to integer value as 'abc'")

    monkeypatch.setattr(router.origins, "allows", broken)
    run = application(websocket_scope("/ws", [(b"origin", b"http://host:abc")]), never, never)
    with pytest.raises(ValueError, match="Port could not be cast"):
        await run


def test_a_wrapper_around_a_consumers_application_is_called_not_bypassed():
    import functools

    calls = []

    class Echo(AsyncConsumer):
        async def __call__(self, scope, receive, send):
            calls.append("consumer")

    inner = Echo.as_asgi()

    @functools.wraps(inner)  # copies consumer_class and consumer_initkwargs too
    async def guard(scope, receive, send):
        calls.append("guard")
        return await inner(scope, receive, send)

    run = SocketRouter([path("ws", guard)])(websocket_scope("/ws"), never, never)
    with pytest.raises(StopIteration):
        run.send(None)
    assert calls == ["guard", "consumer"]


def test_a_nested_router_is_refused_at_start_up():
    from channels.routing import URLRouter
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match="does not nest routers"):
        SocketRouter([path("api/", URLRouter([]))])


async def test_a_host_allowed_hosts_does_not_allow_is_denied_before_the_consumer(settings):
    """As Django refuses such an HTTP request (DisallowedHost): channels' denier (403), not the
    consumer; ALLOWED_HOSTS is read per handshake, as Django reads it per request."""
    from channels.security.websocket import WebsocketDenier
    from channels.testing import WebsocketCommunicator

    def runs(headers) -> object:
        run = application({**websocket_scope("/ws"), "headers": headers}, never, never)
        try:
            return run.cr_code
        finally:
            run.close()

    denied = WebsocketDenier.__call__.__code__
    for host in (b"evil.example", b"testserver.evil.example", b"testserver@evil.example", b"", b"a b"):
        assert runs([(b"host", host)]) is denied, host
    assert runs([(b"host", b"testserver"), (b"host", b"evil.example")]) is denied  # joined, as Django does
    assert runs([]) is denied  # no Host and no server address: Django's "unknown"
    assert runs([(b"host", b"testserver:8000")]) is not denied
    assert runs([(b"x-forwarded-host", b"testserver"), (b"host", b"evil.example")]) is denied  # not read ...
    settings.USE_X_FORWARDED_HOST = True  # ... unless the settings say a proxy sets it
    assert runs([(b"x-forwarded-host", b"testserver"), (b"host", b"evil.example")]) is not denied
    settings.USE_X_FORWARDED_HOST = False
    no_host = {"type": "websocket", "path": "/ws", "headers": [], "query_string": b"", "subprotocols": []}
    run = application({**no_host, "server": ("127.0.0.1", 8000)}, never, never)  # the address daphne serves
    assert run.cr_code is not denied
    run.close()

    settings.ALLOWED_HOSTS = ["axisor.example.com"]
    assert runs([(b"host", b"axisor.example.com")]) is not denied
    assert runs([(b"host", b"testserver")]) is denied
    comm = WebsocketCommunicator(application, "/ws", headers=[(b"host", b"testserver")])
    ok, _ = await comm.connect()
    assert not ok  # closed before accept: daphne answers the handshake 403 (tests/hardening/test_ws_attack.py)
