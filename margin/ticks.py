"""The tick pipeline: the market records ticks, the margin guard evaluates positions at the new
prices, then the market's events go out, all in one transaction. It sits here, above both, so the
market never calls up into margin."""

from __future__ import annotations

from django.db import transaction

from market.models import MarketState
from market.services import ticks_announce, ticks_record

from .services import positions_evaluate


@transaction.atomic
def ticks_ingest(raw: object) -> list[MarketState]:
    """Validate and apply ticks (see ``market.services.ticks_record``), evaluate every position
    they reach, and send their events; returns the changed market states."""
    recorded = ticks_record(raw)
    positions_evaluate(paths=recorded.marks, trades=recorded.price_paths())
    ticks_announce(recorded)
    return recorded.changed
