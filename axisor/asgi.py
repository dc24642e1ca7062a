"""ASGI entry point: HTTP goes to Django, WebSockets to the realtime gateway."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "axisor.settings")
django_asgi_app = get_asgi_application()

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from core import collector, internals  # noqa: E402
from core.middleware import AsgiBodyLimit  # noqa: E402
from gateway import limits  # noqa: E402
from gateway.hub import close_every_socket  # noqa: E402
from gateway.routing import SocketRouter, websocket_urlpatterns  # noqa: E402
from jobs.schedule import BackgroundStarter  # noqa: E402

internals.check()  # refuse to start on framework releases our patches were not written for
internals.tune_daphne()

# channels' ProtocolTypeRouter, OriginValidator and URLRouter, in two plain calls (BackgroundStarter,
# SocketRouter) that hand each socket's task its consumer's coroutine itself (gateway/routing.py).
application = BackgroundStarter(
    {
        # The browser client and the admin's assets; behind nginx, serve STATIC_ROOT there instead.
        # A body over DATA_UPLOAD_MAX_MEMORY_SIZE is refused (413) before Django reads it.
        "http": AsgiBodyLimit(ASGIStaticFilesHandler(django_asgi_app)),
        "websocket": SocketRouter(websocket_urlpatterns),
    },
    # On SIGTERM the sockets are told to reconnect elsewhere (4013) as the ports close; daphne then
    # cancels the consumers of any left without their disconnect: the tier caps' leases of this
    # process's sockets go back at once once requests are done (presence is left after it).
    on_stopping=[close_every_socket],
    on_stop=[limits.release_all],
)
collector.tune_gc()  # last: what start-up built is frozen out of every collection
