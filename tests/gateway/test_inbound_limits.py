"""The per-user inbound budget of a process (gateway.inbound_limits.UserBudgets) on a clock of its
own: one bucket per user whatever the socket, refilled at the tier's rate, and dropped from the map
only when it is full again (when a new bucket would be the same)."""

from __future__ import annotations

import pytest

from gateway.inbound_limits import UserBudgets


@pytest.fixture
def caps(settings):
    per_tier = {"basic": 10, "premium": 20, "enterprise": 0}
    settings.AXISOR_CAPS = {**settings.AXISOR_CAPS, "WS_MESSAGES_PER_SECOND": per_tier}
    settings.AXISOR_WS = {**settings.AXISOR_WS, "USER_BURST_SECONDS": 2.0}


def spend(budgets: UserBudgets, user: int, tier: str, now: float, n: int) -> int:
    return sum(budgets.take(user, tier, now) for _ in range(n))


def test_a_burst_of_the_tiers_seconds_then_its_rate(caps):
    budgets = UserBudgets()
    assert spend(budgets, 1, "basic", 100.0, 25) == 20  # 10 a second, 2 seconds' worth
    assert spend(budgets, 1, "basic", 100.5, 10) == 5  # half a second: five more
    assert spend(budgets, 2, "basic", 100.5, 25) == 20  # another user: a budget of its own
    assert spend(budgets, 3, "enterprise", 100.5, 1000) == 1000  # 0: no cap
    assert 3 not in budgets.buckets


def test_a_tier_change_takes_the_new_rate(caps):
    budgets = UserBudgets()
    assert spend(budgets, 1, "basic", 0.0, 25) == 20
    assert spend(budgets, 1, "premium", 0.0, 50) == 0  # what was spent stays spent
    assert spend(budgets, 1, "premium", 2.0, 50) == 40  # refilled at 20 a second, up to its burst


def test_only_full_buckets_are_pruned_so_reopening_sockets_gains_nothing(caps):
    budgets = UserBudgets()
    budgets.prune_at = 2
    spend(budgets, 1, "basic", 0.0, 20)  # empty at 0; full again at 2 s
    spend(budgets, 2, "basic", 1.5, 1)  # one short at 1.5; full again at 1.6 s
    budgets.take(3, "basic", 1.55)  # the map is full: prune at 1.55
    assert set(budgets.buckets) == {1, 2, 3}  # none was full yet
    assert spend(budgets, 1, "basic", 1.55, 20) == 15  # user 1 kept its spent bucket
    budgets.prune_at = 3
    budgets.take(4, "basic", 10.0)  # all full again by now: only the new one stays
    assert set(budgets.buckets) == {4}
    assert budgets.prune_at == 1024


def test_sockets_bound_under_two_tiers_share_what_is_left(caps):
    """A tier changed while some of a user's sockets stayed open: each switch between the two rates
    made a full bucket (the review: 1,000 of 1,000 alternating messages passed)."""
    budgets = UserBudgets()
    passed = sum(budgets.take(1, "basic" if i % 2 else "premium", 100.0) for i in range(1000))
    assert passed <= 40  # the larger burst (premium: 20 a second, 2 seconds' worth)
