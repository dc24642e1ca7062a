"""The server processes' garbage collector (core.collector): start-up frozen, the thresholds, a
REST worker's collections between requests, and every pause a metric."""

import gc
import threading
import weakref

from prometheus_client import REGISTRY


class Node:
    """A reference cycle: only a collection frees it."""

    def __init__(self) -> None:
        self.me = self


class Leaf:
    """An object the collector counts as allocated (lists are not always: a freed one is reused
    without counting)."""


def pauses(trigger: str, generation: int = 0) -> float:
    from core.metrics import gc_pauses_observe

    gc_pauses_observe()  # queued by the collector's callback (see core.metrics)
    labels = {"generation": str(generation), "trigger": trigger}
    return REGISTRY.get_sample_value("axisor_gc_pause_seconds_count", labels) or 0.0


def test_server_process_collects_garbage_at_the_configured_thresholds(settings):
    """axisor.asgi tunes the collector on import (core.collector.tune_gc): start-up objects frozen
    out of collections, thresholds from GC_THRESHOLDS, every collection timed."""
    import axisor.asgi  # noqa: F401 - the import does it

    assert gc.get_threshold() == settings.GC_THRESHOLDS
    assert gc.get_freeze_count() > 10_000
    before = pauses("other", 2)
    gc.collect()  # not run between requests
    assert pauses("other", 2) == before + 1


def test_a_collection_that_starts_while_its_thread_holds_a_metric_lock_does_not_wait_on_it():
    """An allocation inside prometheus_client's locked code can start a collection; the callback
    then must not take that lock (not reentrant: the thread would wait on itself for ever). The
    pause is queued and observed later, outside the lock."""
    import axisor.asgi  # noqa: F401 - installs the timing
    from core.metrics import GC_PAUSE

    before = pauses("other", 2)
    lock = GC_PAUSE.labels("2", "other")._sum._lock  # what observing a full collection takes

    def collect_holding_the_lock() -> None:
        with lock:
            gc.collect()

    worker = threading.Thread(target=collect_holding_the_lock, daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "the collector's callback waited on a lock its own thread holds"
    assert pauses("other", 2) == before + 1  # observed afterwards


def test_a_worker_collects_between_requests_once_enough_garbage_waits(settings):
    """What requests leave in cycles is collected where no request waits, once
    GC_BETWEEN_REQUESTS objects wait, and not before; the pause is counted as between requests."""
    import axisor.asgi  # noqa: F401 - installs the timing
    from core.collector import collect_between_requests

    settings.GC_BETWEEN_REQUESTS = 500
    gc.disable()  # no automatic collection may do it for us
    try:
        gc.collect()
        probe = weakref.ref(Node())
        before = pauses("between_requests")
        collect_between_requests()
        assert probe() is not None  # too little waits: left for later
        assert pauses("between_requests") == before
        kept = [Leaf() for _ in range(600)]  # what a request allocates, as the collector counts it
        collect_between_requests()
        assert probe() is None
        assert gc.get_count()[0] < 500
        assert pauses("between_requests") == before + 1
        del kept
        settings.GC_BETWEEN_REQUESTS = 0  # off: only the thresholds collect
        probe = weakref.ref(Node())
        kept = [Leaf() for _ in range(600)]
        collect_between_requests()
        assert probe() is not None and len(kept) == 600
    finally:
        gc.enable()


def test_every_so_many_young_collections_between_requests_one_is_of_the_older_generation(settings):
    """As CPython goes: the older generation is collected once GC_THRESHOLDS[1] young collections
    are past, so that what survived a young collection is not kept for ever when the thresholds
    are never reached."""
    from core.collector import collect_between_requests

    settings.GC_BETWEEN_REQUESTS = 50
    every = gc.get_threshold()[1]
    gc.disable()
    try:
        gc.collect()
        older = pauses("between_requests", 1)
        for _ in range(every + 1):
            kept = [Leaf() for _ in range(60)]
            collect_between_requests()
            del kept
        assert pauses("between_requests", 1) == older  # young collections only so far
        kept = [Leaf() for _ in range(60)]
        collect_between_requests()
        assert pauses("between_requests", 1) == older + 1 and len(kept) == 60
    finally:
        gc.enable()
