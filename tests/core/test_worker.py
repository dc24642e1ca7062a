"""The worker's single steps: a PostgreSQL advisory lock makes each exclusive across processes
(connections), whatever the leases say."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from core.worker import exclusive


@pytest.mark.django_db(transaction=True)
def test_a_single_step_runs_in_one_place_at_a_time():
    held, release, seen = threading.Event(), threading.Event(), []

    def holder() -> None:  # another connection: as another process would be
        try:
            with exclusive("venue-test") as alone:
                seen.append(("holder", alone))
                held.set()
                release.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=holder)
    thread.start()
    assert held.wait(10)
    with exclusive("venue-test") as alone:
        seen.append(("other", alone))  # the holder is mid-step: skip
    with exclusive("retention-test") as alone:
        seen.append(("another job", alone))  # other jobs are not held up
    release.set()
    thread.join(10)
    with exclusive("venue-test") as alone:
        seen.append(("successor", alone))  # freed when the holder's step ended
    assert seen == [("holder", True), ("other", False), ("another job", True), ("successor", True)]
