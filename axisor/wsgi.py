"""WSGI entry point of the REST tier: the HTTP API, the staff panel and the Django admin served by
gunicorn workers (deploy/gunicorn.conf.py), the sockets by daphne (deploy/run-daphne.sh).

A WSGI request runs on one thread from start to finish. Under ASGI, Django hands each request
between the event loop and a thread several times, and on a daphne process that also serves
sockets those hand-overs cost more than the request (docs/benchmarks.md, *Order placement →
update*). What a request here commits reaches the sockets through Redis, so a process-local channel
layer is refused: its events would reach no socket at all.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "axisor.settings")
django_application = get_wsgi_application()

from channels.layers import InMemoryChannelLayer, get_channel_layer  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402

layer = get_channel_layer()
if layer is None or isinstance(layer, InMemoryChannelLayer):
    raise ImproperlyConfigured(
        "the WSGI REST tier needs the Redis channel layer (set REDIS_URL or REDIS_SENTINELS): with a process-local "
        "layer, what it commits would reach no socket; serve everything from daphne instead (scripts/run)"
    )

from django.urls import get_resolver  # noqa: E402

from core import tier  # noqa: E402
from core.collector import tune_gc  # noqa: E402
from core.middleware import WsgiBodyLimit  # noqa: E402

tier.TIER = "wsgi"
# A body over DATA_UPLOAD_MAX_MEMORY_SIZE is refused (413) before Django reads it (gunicorn has no
# body limit of its own).
application = WsgiBodyLimit(django_application)

get_resolver().url_patterns  # noqa: B018 - imports every view now, so tune_gc freezes them too
tune_gc()  # last, as in axisor.asgi: a worker's collections scan only what requests build
