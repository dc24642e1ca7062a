"""Properties of money and risk under random trading (hypothesis): whatever sequence of orders,
venue steps, ticks, cancels and liquidations, the balance is the sum of the ledger, no fill is
worse than its order's limit, a reduce-only order never grows or flips a position, and
available margin never goes below zero, whatever gaps, slippage, fees and liquidations."""

from __future__ import annotations

import os
from decimal import Decimal as D

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs.schedule import LatestPrices
from ledger.models import Account, LedgerEntry
from margin.account import account_figures, order_submit
from margin.models import Position
from margin.services import margin_guard_config_set
from margin.ticks import ticks_ingest
from margin.venue import PaperVenue
from orders.models import LIVE, Order, Trade
from orders.services import order_cancel

pytestmark = pytest.mark.django_db

START = D(40000)

actions = st.lists(
    st.one_of(
        st.tuples(
            st.just("order"),
            st.sampled_from(["BUY", "SELL"]),
            st.sampled_from(["0.1", "0.5", "1", "2"]),
            st.sampled_from(["MARKET", "LIMIT"]),
            st.integers(-8, 8),  # limit offset from the last price, in 0.5 % steps
            st.sampled_from([2, 10, 25]),
            st.booleans(),  # reduce-only
        ),
        st.tuples(st.just("tick"), st.integers(-40, 40)),  # move, in 0.5 % steps
        st.tuples(st.just("step")),
        st.tuples(st.just("cancel"), st.integers(0, 5)),
    ),
    min_size=5,
    max_size=20,
)


def on_tick(price: D) -> D:
    """The nearest multiple of BTC_USD's tick size, 0.5."""
    return (price * 2).quantize(D(1)) / 2


def last_price() -> D:
    from market.models import MarketState

    state = MarketState.objects.filter(instrument__symbol="BTC_USD").first()
    return state.price if state else START


def signed_position(user) -> D:
    p = Position.objects.filter(user=user, status="open").first()
    return D(0) if p is None else (p.quantity if p.side == "long" else -p.quantity)


EXAMPLES = int(os.environ.get("MONEY_PROPERTY_EXAMPLES", 15))  # more: MONEY_PROPERTY_EXAMPLES=150


@settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(script=actions, guard=st.sampled_from(["notify", "close_position"]))
def test_money_and_risk_invariants_hold_under_random_trading(make_user, instruments, script, guard):
    with transaction.atomic():
        sid = transaction.savepoint()
        user = make_user(balance=20_000, tier="enterprise")  # up to 100x: no tier cap below BTC_USD's
        margin_guard_config_set(user=user, threshold=D("0.8"), action=guard, cooldown_seconds=0)
        ticks_ingest([{"symbol": "BTC_USD", "price": str(START), "volume": "1"}])
        prices = LatestPrices()
        prices.refresh()
        venue = PaperVenue(prices)
        limits: dict[str, D] = {}
        for action in script:
            if action[0] == "order":
                _, side, qty, kind, offset, leverage, reduce_only = action
                price = on_tick(last_price() * (1 + D(offset) / 200)) if kind == "LIMIT" else None
                if reduce_only:
                    held = signed_position(user)
                    if held == 0 or (held > 0) == (side == "BUY"):
                        continue  # refused with 400 at placement; covered elsewhere
                order = order_submit(
                    user=user, trading_symbol="BTC_USD", exchange=None, order_type=kind, transaction_type=side,
                    quantity=D(qty), price=price, trigger_price=None, leverage=leverage, reduce_only=reduce_only,
                )  # fmt: skip
                if order.order_status != "REJECTED":
                    assert account_figures(user_id=user.pk).available >= 0
                if price is not None:
                    limits[order.order_id] = price
            elif action[0] == "tick":
                price = on_tick(last_price() * (1 + D(action[1]) / 200))
                ticks_ingest([{"symbol": "BTC_USD", "price": str(max(price, D(1000))), "volume": "1"}])
            elif action[0] == "step":
                prices.refresh()
                before = signed_position(user)
                reduce_only_live = set(
                    Order.objects.filter(user=user, reduce_only=True, order_status__in=LIVE).values_list(
                        "pk", flat=True
                    )
                )
                venue.step()
                after = signed_position(user)
                if (
                    reduce_only_live
                    and not Order.objects.filter(user=user, order_status__in=LIVE, reduce_only=False).exists()
                ):
                    # only reduce-only orders could have filled: never grown, never flipped
                    assert abs(after) <= abs(before) and (after == 0 or (after > 0) == (before > 0))
            else:
                live = list(Order.objects.filter(user=user, order_status__in=LIVE).order_by("pk"))
                if live:
                    order_cancel(order=live[action[1] % len(live)])
            # available margin never below zero: after orders (the pre-trade check), fills (the venue
            # checks again at the fill: slippage, gaps), liquidations through the bankruptcy price (the
            # loss stops at the position's margin) and fees (held with the order, capped at a close)
            assert account_figures(user_id=user.pk).available >= 0
            # the balance is the sum of the ledger
            entries = sum((e.amount for e in LedgerEntry.objects.filter(user=user)), D(0))
            assert Account.objects.get(user=user).balance == entries
            # no fill worse than its order's limit
            for trade in Trade.objects.filter(user=user).select_related("order"):
                limit = limits.get(trade.order.order_id)
                if limit is not None:
                    assert trade.price <= limit if trade.order.transaction_type == "BUY" else trade.price >= limit
        transaction.savepoint_rollback(sid)
