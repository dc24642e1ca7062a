"""Prometheus metrics, served at /metrics when METRICS_TOKEN is set. A daphne process answers
for itself (scrape each one); the gunicorn workers of the REST tier answer together, through
prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by deploy/gunicorn.conf.py)."""

from __future__ import annotations

import functools
import hmac
import os
import threading
import time
from collections import deque

from django.conf import settings
from django.http import Http404, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

# livesum: in the gunicorn workers' multiprocess mode, the sum over live workers, no series left
# behind by a worker that exited (ignored in a daphne process, which answers for itself).
CONNECTIONS = Gauge("axisor_connections", "Open WebSocket connections", ["endpoint"], multiprocess_mode="livesum")


@functools.cache
def open_sockets(endpoint: str):
    """``CONNECTIONS``' child for one endpoint, looked up once: ``labels()`` takes the metric's lock
    and builds a key each call, twice a socket. Made on first use, in the serving process."""
    return CONNECTIONS.labels(endpoint)


HUB_ROOMS = Gauge(
    "axisor_hub_rooms", "Rooms this process's hub holds a channel-layer membership for", multiprocess_mode="livesum"
)
PUBLISHED = Counter("axisor_events_published_total", "Events sent to the channel layer", ["channel"])
DELIVERED = Counter("axisor_events_delivered_total", "Events written to sockets", ["channel"])
CONFLATED = Counter(
    "axisor_events_conflated_total",
    "Value updates replaced by a newer one before sending (process, connection), or dropped as older"
    " than one of their key already passed on (stale)",
    ["where"],
)
SLOW_CLOSES = Counter("axisor_slow_consumer_closes_total", "Sockets closed because they read too slowly")
RESUMES = Counter("axisor_resume_requests_total", "Resume requests", ["endpoint", "outcome"])
GC_PAUSE = Histogram(
    "axisor_gc_pause_seconds",
    "Garbage collections and how long each stopped the process, by generation and by what ran it: "
    "a REST worker between requests (core.collector), or other (the thresholds, an explicit gc.collect)",
    ["generation", "trigger"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
# A collection can start while this thread holds a metric's lock (an allocation inside
# prometheus_client's own code), and those locks are not reentrant (in multiprocess mode one lock
# guards every metric): observing the pause from the collector's callback could wait for ever on
# a lock its own thread holds. The callback only queues the pause here; it is observed at a point
# outside any metric's lock: a REST worker's next post_request, or a scrape.
_gc_pauses: deque[tuple[int, str, float]] = deque(maxlen=10_000)


def gc_pause_queue(generation: int, trigger: str, seconds: float) -> None:
    """From the collector's callback: no lock taken."""
    _gc_pauses.append((generation, trigger, seconds))


def gc_pauses_observe() -> None:
    """Observe the queued pauses; never from inside a collection."""
    while _gc_pauses:
        try:
            generation, trigger, seconds = _gc_pauses.popleft()
        except IndexError:  # another thread took the last one
            return
        GC_PAUSE.labels(str(generation), trigger).observe(seconds)


HTTP_LATENCY = Histogram("axisor_http_request_duration_seconds", "REST request latency", ["method", "route", "status"])
# Every label value must come from a fixed set, never from the client: each new value is a new
# series kept for the life of the process. The method is the client's own word (daphne passes any
# token), so the ones the API answers are kept and anything else is OTHER; the route is the URL
# pattern, never the path; the status is the server's.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str | None) -> str:
    return method if method in METHODS else "OTHER"


def metrics_view(request):
    token = settings.METRICS_TOKEN
    if not token:
        raise Http404("metrics are off: set METRICS_TOKEN")
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), token.encode()):
        return HttpResponse(
            "metrics need Authorization: Bearer <METRICS_TOKEN>\n", status=401, content_type="text/plain"
        )
    gc_pauses_observe()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # a gunicorn worker: every worker's figures
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)


_in_flight = 0
_idle = threading.Condition()


def wait_until_idle(timeout: float) -> bool:
    """Block until no HTTP request is in its sync part (on a worker thread), at most ``timeout``."""
    with _idle:
        return _idle.wait_for(lambda: _in_flight == 0, timeout)


class RequestTimingMiddleware:
    """REST latency by route pattern (not raw path: ids would explode the label set); also counts
    requests in flight, so a stopping server can let them finish while its event loop still runs
    (a worker thread waiting on a stopped loop would keep the process from exiting)."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        global _in_flight
        with _idle:
            _in_flight += 1
        try:
            start = time.perf_counter()
            response = self.get_response(request)
            match = getattr(request, "resolver_match", None)
            route = match.route.replace("^", "").replace("$", "") if match else "unmatched"
            HTTP_LATENCY.labels(method_label(request.method), route, str(response.status_code)).observe(
                time.perf_counter() - start
            )
            return response
        finally:
            with _idle:
                _in_flight -= 1
                _idle.notify_all()
