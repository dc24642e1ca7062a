"""The REST middleware stack runs synchronously on the request's thread."""

from __future__ import annotations


def test_rest_middleware_stack_runs_synchronously():
    """The innermost middleware is sync-only, so Django adapts the whole stack to sync once and
    runs it on the request's thread, instead of hopping to the event loop around each built-in
    middleware (settings.MIDDLEWARE)."""
    from django.conf import settings
    from django.utils.module_loading import import_string

    innermost = import_string(settings.MIDDLEWARE[-1])
    assert getattr(innermost, "sync_capable", True) and not getattr(innermost, "async_capable", False)
