"""The REST middleware stack runs synchronously on the request's thread."""

from __future__ import annotations

import pytest


def test_rest_middleware_stack_runs_synchronously():
    """The innermost middleware is sync-only, so Django adapts the whole stack to sync once and
    runs it on the request's thread, instead of hopping to the event loop around each built-in
    middleware (settings.MIDDLEWARE)."""
    from django.conf import settings
    from django.utils.module_loading import import_string

    innermost = import_string(settings.MIDDLEWARE[-1])
    assert getattr(innermost, "sync_capable", True) and not getattr(innermost, "async_capable", False)


@pytest.mark.django_db
def test_probes_answer_a_process_address_as_host_and_nothing_else_does(settings, client):
    """An outside operator deployed with ALLOWED_HOSTS=axisor.example.com, as the docs say: probes of
    each process at its own address (how load balancers and Prometheus reach it) answered 400."""
    settings.ALLOWED_HOSTS = ["axisor.example.com"]
    settings.METRICS_TOKEN = "probe-token"
    assert client.get("/healthz", HTTP_HOST="127.0.0.1:8001").json() == {"status": "ok"}
    assert client.get("/readyz", HTTP_HOST="10.0.0.7:8100").status_code == 200
    metrics = client.get("/metrics", HTTP_HOST="127.0.0.1:8001", HTTP_AUTHORIZATION="Bearer probe-token")
    assert metrics.status_code == 200 and b"# TYPE" in metrics.content
    assert client.get("/api/instruments", HTTP_HOST="127.0.0.1:8001").status_code == 400  # the rest: validated
    assert client.get("/healthz/", HTTP_HOST="evil.example").status_code == 400  # the three paths exactly
