"""The newcomer test (tests/newcomer) waits for alice's demo guard on the walk of one feed seed:
here, in seconds, that walk still fires it inside the test's window (after the test's clients have
connected, well before its two minutes), whatever the instruments, the demo's positions or the
guard's rules have become."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from jobs.schedule import Simulator
from margin.models import MarginGuardExecution
from tests.newcomer import FEED_SEED

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("instruments")]

STEP_SECONDS = 0.5  # MARKET_FEED_INTERVAL_SECONDS's default, which scripts/run uses


def test_the_newcomer_seed_fires_alices_demo_guard_inside_the_tests_window(settings):
    settings.MARKET_FEED_SEED = FEED_SEED
    call_command("seed_demo", stdout=io.StringIO())
    simulator = Simulator(feed=True)
    fired, steps = None, 0
    while fired is None and steps < 240:  # two minutes of the walk
        simulator.step()
        steps += 1
        fired = MarginGuardExecution.objects.filter(user__username="alice").first()
    assert fired is not None, "no guard within two minutes of the seeded walk"
    # ≥ 10 s: the test's clients are connected by then (the feed starts with the first request)
    assert 10 <= steps * STEP_SECONDS <= 60, steps
    assert fired.positions, fired
