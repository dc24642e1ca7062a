"""Review 14 (reproduction, not fixed): an outside venue's fill at the limit an order had when the
venue filled it, reported after the user lowered the limit (the fill and the modification crossed),
is refused (400 fields.price, since 60b63ed), so a trade made at the venue is never booked."""

from __future__ import annotations

from decimal import Decimal

import pytest

from orders import services
from tests.orders.factories import execute, place

pytestmark = [pytest.mark.django_db, pytest.mark.xfail(strict=True, reason="review 14: not fixed")]


def test_a_fill_at_the_limit_the_venue_had_is_booked(make_user):
    user = make_user("paper")
    order = place(user, side="BUY", price="630", quantity="5")
    execute(order, "accept")
    services.order_modify(order=order.order_id, price=Decimal("620"))  # on its way to the venue
    execute(order, "fill", quantity="5", price="630")  # the venue filled at 630 before it got there
    order.refresh_from_db()
    assert order.filled_quantity == 5
