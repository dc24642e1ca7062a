"""The process's WebSocket routes, and the router that serves them.

channels composes a socket's application as wrappers (``OriginValidator(URLRouter([path(...,
Consumer.as_asgi())]))``), each an ``async`` call awaiting the next, so every idle socket holds a
suspended coroutine per wrapper for its whole life, plus URLRouter's copy of the scope: ~1.9 KB of
an idle socket's ~20 KB of Python heap (tracemalloc, 2,000 sockets). ``SocketRouter`` does their
work (the origin check, the URL match, the consumer's instance) in one plain call that returns the
consumer's own coroutine, so a socket's task runs the consumer and nothing above it.
"""

from __future__ import annotations

from asgiref.sync import markcoroutinefunction
from channels.security.websocket import WebsocketDenier
from django.urls import path

from gateway.events_consumer import EventsConsumer
from gateway.orders_consumer import OrderUpdatesConsumer
from gateway.origin import BrowserOriginValidator, origin_validator

websocket_urlpatterns = [
    path("ws", EventsConsumer.as_asgi()),
    path("ws/orders", OrderUpdatesConsumer.as_asgi()),
]


async def _no_route(path: str) -> None:
    raise ValueError(f"No route found for path {path!r}.")  # channels' URLRouter's error, as daphne logs it


class SocketRouter:
    """channels' ``OriginValidator(URLRouter(routes))`` for the outermost router of WebSocket
    scopes, without a coroutine of its own: a refused Origin gets channels' ``WebsocketDenier``
    (403), a path no route matches the error URLRouter raises, and a match its consumer, with
    ``url_route`` and ``path_remaining`` in the scope as URLRouter puts them. The scope is the
    connection's own (daphne makes one per socket), so they are set in it rather than in a copy."""

    def __init__(self, routes: list, origins: BrowserOriginValidator | None = None) -> None:
        self.routes = routes
        self.origins = origins if origins is not None else origin_validator()

    @markcoroutinefunction  # an ASGI 3 application to whoever asks (daphne, uvicorn, asgiref)
    def __call__(self, scope, receive, send):
        if not self.origins.allows(scope):
            return WebsocketDenier()(scope, receive, send)
        path = scope["path"]
        root_path = scope.get("root_path", "")
        if root_path and not path.startswith(root_path):
            return _no_route(path)
        path = path[len(root_path) :].lstrip("/")
        for route in self.routes:
            match = route.pattern.match(path)
            if match:
                remaining, args, kwargs = match
                scope["path_remaining"] = remaining
                scope["url_route"] = {"args": args, "kwargs": {**kwargs, **route.default_args}}
                consumer = getattr(route.callback, "consumer_class", None)
                if consumer is None:  # not a consumer's as_asgi(): an application of its own
                    return route.callback(scope, receive, send)
                return consumer(**route.callback.consumer_initkwargs)(scope, receive, send)
        return _no_route(path)
