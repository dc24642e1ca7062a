"""Reads of positions and Margin Guard state shared by the REST API, the admin and the position
sweeps (sweeps.py)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db.models import QuerySet
from django.db.models.functions import Now
from django.utils import timezone

from accounts.models import User
from core.errors import NotFound
from market.models import MarketState
from wire import whole_number

from .events import position_update_item, position_values
from .models import DEFAULT_THRESHOLD, MarginGuardConfig, MarginGuardExecution, Position, PositionStatus


def position_list(*, user: User, status: str = PositionStatus.OPEN, symbol: str | None = None) -> QuerySet[Position]:
    qs = Position.objects.filter(user=user, status=status).select_related("instrument")
    if symbol:
        qs = qs.filter(instrument__symbol=symbol)
    return qs.order_by("-opened_at", "-id")


def position_get(*, user: User, position_id: str) -> Position:
    """The caller's position by ``pos_123`` or ``123``; another user's is as good as missing."""
    pk = whole_number(position_id.removeprefix("pos_"))
    found = None if pk is None else Position.objects.select_related("instrument").filter(user=user, pk=pk).first()
    if found is None:
        raise NotFound(f"no position {position_id}")
    return found


def prices_for(instrument_ids: Iterable[int]) -> dict[int, Decimal]:
    return dict(MarketState.objects.filter(instrument_id__in=set(instrument_ids)).values_list("instrument_id", "price"))


def thresholds_for(user_ids: Collection[int]) -> dict[int, Decimal]:
    found = dict(MarginGuardConfig.objects.filter(user_id__in=set(user_ids)).values_list("user_id", "threshold"))
    return {uid: found.get(uid, DEFAULT_THRESHOLD) for uid in user_ids}


def positions_values(positions: list[Position]) -> list[dict]:
    """The wire values of these positions at the latest prices."""
    prices = prices_for(p.instrument_id for p in positions)
    thresholds = thresholds_for({p.user_id for p in positions})
    return [position_values(p, prices.get(p.instrument_id), thresholds[p.user_id]) for p in positions]


def position_update_items(
    positions: Sequence[Position], at: datetime | None = None, *, version: float
) -> list[tuple[str, str, dict]]:
    """(conflation key, user group, layer message) for each position's position_status_update.
    ``version``: when ``positions`` were read (``read_at``): a value read later reflects every
    commit this one does."""
    prices = prices_for(p.instrument_id for p in positions)
    thresholds = thresholds_for({p.user_id for p in positions})
    return [
        position_update_item(
            p.user_id, p.pk, position_values(p, prices.get(p.instrument_id), thresholds[p.user_id], at=at), version
        )
        for p in positions
    ]


def position_updates(*, instrument_ids: Iterable[int], user_ids: Iterable[int]) -> list[tuple[str, str, dict]]:
    """A tick sweep: the open positions in these instruments held by these (connected) users."""
    positions = list(
        Position.objects.select_related("instrument")
        .filter(instrument_id__in=list(instrument_ids), status=PositionStatus.OPEN, user_id__in=list(user_ids))
        .annotate(read_at=Now())
    )
    return position_update_items(positions, at=timezone.now(), version=read_at(positions))


def read_at(positions: Sequence[Any]) -> float:
    """When positions read with ``.annotate(read_at=Now())`` were read, by the database's clock (the
    statement's start: its snapshot holds every commit before it), as a values' version."""
    return positions[0].read_at.timestamp() if positions else 0.0


def execution_list(*, user: User) -> QuerySet[MarginGuardExecution]:
    return MarginGuardExecution.objects.filter(user=user).order_by("-executed_at", "-id")
