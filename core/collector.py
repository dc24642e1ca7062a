"""The server processes' garbage collector: what start-up built is frozen out of every collection,
collections run at ``settings.GC_THRESHOLDS``, a REST worker collects between requests rather than
inside them, and every collection's pause is a metric (``axisor_gc_pause_seconds``).

Why between requests: a placement leaves ~250 objects in reference cycles (Django's and DRF's
request, view, serializer and response point at each other), which only a collection frees. At
the socket tier's thresholds a gunicorn worker collected every ~300 requests, ~75,000 objects at a
time, and that one request waited ~110 ms. A sync worker has a moment when no request waits on
it: after its response is written (gunicorn's ``post_request``, deploy/gunicorn.conf.py)."""

from __future__ import annotations

import gc
import time
from typing import Any

from django.conf import settings

from core import metrics

_started = 0.0
_between = False


def tune_gc() -> None:
    """Freeze what start-up built (modules, settings, URL resolvers: never garbage) out of every
    future collection, collect at ``settings.GC_THRESHOLDS``, and time each collection. Reference
    cycles are still collected, in fewer and larger passes; a socket's objects are scanned ~50×
    less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*settings.GC_THRESHOLDS)
    if _timed not in gc.callbacks:
        gc.callbacks.append(_timed)


def _timed(phase: str, info: dict[str, Any]) -> None:
    global _started
    if phase == "start":
        _started = time.perf_counter()
        return
    # queued, not observed: this thread may hold a metric's lock (core.metrics.gc_pause_queue)
    trigger = "between_requests" if _between else "other"
    metrics.gc_pause_queue(info["generation"], trigger, time.perf_counter() - _started)


def collect_between_requests() -> None:
    """For a point where no request waits (a sync worker once its response is out): observe the
    pauses queued since the last call, and once ``settings.GC_BETWEEN_REQUESTS`` objects wait, run
    the collection the collector would run next, which then does not run inside a later request.
    The generation is chosen as CPython chooses it (an older one once its count is past its
    threshold), without CPython's long-lived rule for full collections: a worker that never
    restarts needs them. The thresholds stay as the backstop for a request that allocates more
    than they allow on its own."""
    metrics.gc_pauses_observe()
    enough = settings.GC_BETWEEN_REQUESTS
    young, young_collections, older_collections = gc.get_count()
    if not enough or young < enough:
        return
    _, every_young, every_older = gc.get_threshold()
    generation = 0
    if young_collections > every_young:
        generation = 2 if older_collections > every_older else 1
    global _between
    _between = True
    try:
        gc.collect(generation)
    finally:
        _between = False
    metrics.gc_pauses_observe()
