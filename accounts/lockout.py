"""The django-axes hooks (settings AXES_*): what a locked-out panel or admin sign-in sees, and which
requests axes leaves to the REST throttles (accounts/throttles.py)."""

from __future__ import annotations

import math

from axes.helpers import get_cool_off, get_failure_limit
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def is_api_request(request: HttpRequest, credentials: dict | None = None) -> bool:
    """The REST token endpoint is throttled per address and username before the password is hashed;
    axes neither counts nor locks it (its lockout would answer in another shape)."""
    return (getattr(request, "path", "") or "").startswith("/api/")


def lockout_response(request: HttpRequest, original_response=None, credentials: dict | None = None) -> HttpResponse:
    """429 with Retry-After: the cool-off, which every further failure restarts."""
    cool_off = get_cool_off(request)
    seconds = math.ceil(cool_off.total_seconds()) if cool_off else 0
    context = {
        "failure_limit": get_failure_limit(request, credentials),
        "retry_after_minutes": max(1, math.ceil(seconds / 60)),
    }
    response = render(request, "accounts/locked_out.html", context, status=429)
    if seconds:
        response["Retry-After"] = str(seconds)
    return response
