"""What one account may multiply, per tier (settings.AXISOR_CAPS): the cap that applies to a user,
the check services make, under a lock on the user's row, before they add one more, and the REST
request rates per tier."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from rest_framework.exceptions import Throttled

from core.errors import Conflict

from .models import User
from .throttles import CountingThrottle

LIMIT_EXCEEDED = "limit_exceeded"


def cap_for(tier: str, name: str) -> int:
    """The cap ``name`` (a key of AXISOR_CAPS) of an account tier; 0 means no cap."""
    caps: dict[str, int] = settings.AXISOR_CAPS[name]
    return caps.get(tier, caps["basic"])


def leverage_cap(tier: str, instrument_cap: int) -> tuple[int, bool]:
    """The highest leverage an account of ``tier`` may use on an instrument capped at
    ``instrument_cap``: the lower of that and the tier's ``CAP_LEVERAGE`` (0: the instrument's
    alone), and whether the tier's is the one that holds."""
    cap = cap_for(tier, "LEVERAGE")
    if 0 < cap < instrument_cap:
        return cap, True
    return instrument_cap, False


def cap_check(*, user: User, name: str, what: str, count: Callable[[], int], locked: bool = False) -> None:
    """Raise Conflict ``limit_exceeded`` (409) if ``user`` already holds its tier's cap of ``what``.

    Call inside the transaction that adds the new one: the user's row is locked first, so two
    requests at once cannot both see room for one more. ``locked``: the caller already holds a lock
    that every add of ``what`` for this user takes (margin's order_submit: the account's)."""
    cap = cap_for(user.tier, name)
    if cap <= 0:
        return
    if not locked:
        # FOR NO KEY UPDATE, not FOR UPDATE: rows that reference the user (a fill's trade and ledger
        # entry) take FOR KEY SHARE on it, which FOR UPDATE would block: a placement holding the
        # user and waiting for the account deadlocked against a fill holding the account.
        User.objects.select_for_update(no_key=True).filter(pk=user.pk).values_list("pk", flat=True).first()
    if count() >= cap:
        raise Conflict(f"{user.tier} accounts may hold at most {cap} {what}", code=LIMIT_EXCEEDED)


class TierRateThrottle(CountingThrottle):
    """At most ``AXISOR_CAPS[cap][tier]`` requests a minute per user (0: no cap), counted like the
    credential throttles (an atomic counter per fixed one-minute window in the shared cache, so
    every server process counts together; a cache that cannot be reached lets requests through).
    Beyond it: 429 ``throttled`` with ``Retry-After`` and a detail naming the cap."""

    cap = ""  # a key of settings.AXISOR_CAPS, in requests per minute
    what = "requests"  # for the message

    def __init__(self) -> None:  # the rate depends on the caller's tier: set per request
        self.scope = f"cap_{self.cap.lower()}"
        self.num, self.period, self.retry_after = 0, 60, 0.0

    def identity(self, request, view) -> str | None:
        user = request.user
        return str(user.pk) if user is not None and user.is_authenticated else None

    def allow_request(self, request, view) -> bool:
        user = request.user
        if user is None or not user.is_authenticated:
            return True
        self.num = cap_for(user.tier, self.cap)
        if self.num <= 0 or super().allow_request(request, view):
            return True
        raise Throttled(self.wait(), f"{user.tier} accounts may make {self.num} {self.what} a minute.")


class OrderRateThrottle(TierRateThrottle):
    """``POST /api/orders``: ``CAP_ORDERS_PER_MINUTE_<TIER>``."""

    cap = "ORDERS_PER_MINUTE"
    what = "order placements and modifications"
