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
from django.core.exceptions import ImproperlyConfigured
from django.urls import path

from gateway.events_consumer import EventsConsumer
from gateway.orders_consumer import OrderUpdatesConsumer
from gateway.origin import BrowserOriginValidator, host_allowed, origin_validator

websocket_urlpatterns = [
    path("ws", EventsConsumer.as_asgi()),
    path("ws/orders", OrderUpdatesConsumer.as_asgi()),
]


class SocketRouter:
    """channels' ``OriginValidator(URLRouter(routes))`` as the outermost router of WebSocket
    scopes, without a coroutine of its own: a Host that ALLOWED_HOSTS does not allow, or a
    refused Origin, gets channels' ``WebsocketDenier`` (403, before accept), a path no route
    matches the error URLRouter raises, and a match its consumer, with ``url_route`` and
    ``path_remaining`` in the scope as the outermost URLRouter puts them. The
    scope is the connection's own (daphne makes one per socket), so they are set in it rather than
    in a copy. Routes are consumers or applications; a nested router is refused (URLRouter's
    handling of one is not here). Whatever the call raises, the caller (``BackgroundStarter``)
    raises inside the coroutine it returns."""

    def __init__(self, routes: list, origins: BrowserOriginValidator | None = None) -> None:
        for route in routes:
            if getattr(route.callback, "_path_routing", False):
                raise ImproperlyConfigured(f"{route}: SocketRouter does not nest routers")
        self.routes = routes
        self.origins = origins if origins is not None else origin_validator()

    @markcoroutinefunction  # an ASGI 3 application to whoever asks (daphne, uvicorn, asgiref)
    def __call__(self, scope, receive, send):
        if not host_allowed(scope) or not self.origins.allows(scope):
            return WebsocketDenier()(scope, receive, send)
        path = scope["path"]
        root_path = scope.get("root_path", "")
        if root_path and not path.startswith(root_path):
            raise ValueError(f"No route found for path {path!r}.")  # URLRouter's error
        path = path[len(root_path) :].lstrip("/")
        for route in self.routes:
            match = route.pattern.match(path)
            if match:
                remaining, args, kwargs = match
                scope["path_remaining"] = remaining
                scope["url_route"] = {"args": args, "kwargs": {**kwargs, **route.default_args}}
                callback = route.callback
                consumer: type | None = getattr(callback, "consumer_class", None)
                wrapped: object = getattr(callback, "__wrapped__", None)
                if consumer is not None and wrapped is consumer:  # as_asgi()'s own function
                    return consumer(**callback.consumer_initkwargs)(scope, receive, send)
                # an application of its own, or a wrapper of an as_asgi() that copied its attributes
                # (functools.wraps): called, not bypassed
                return callback(scope, receive, send)
        raise ValueError(f"No route found for path {path!r}.")  # URLRouter's error
