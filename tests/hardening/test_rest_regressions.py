"""Regressions found by the hardening suite's REST fuzzing (case 4), pinned as plain examples."""

from __future__ import annotations

import pytest

from notifications.models import Notification
from tests.conftest import auth_api


@pytest.mark.django_db
@pytest.mark.parametrize(
    "data",
    [
        '{"\\u0000": null}',  # jsonb refuses NUL: was a 500 at insert time
        '{"a": "x\\u0000y"}',
        '{"a": [NaN]}',  # DRF's parser refuses these (parse_error); jsonb could not store them
        '{"a": Infinity}',
        '{"a": "' + "x" * 20_000 + '"}',
    ],
)
def test_notification_data_that_jsonb_cannot_store_is_a_400(make_user, data):
    staff = make_user("staff4", staff=True)
    body = f'{{"userId": {staff.pk}, "title": "t", "message": "m", "category": "orders", "data": {data}}}'
    response = auth_api(staff).post("/api/notifications", body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["code"] in ("validation_error", "parse_error"), response.json()
    assert not Notification.objects.exists()


@pytest.mark.django_db
def test_nul_character_in_the_query_string_is_a_400_not_a_500(make_user):
    """Found by schemathesis: GET /api/trades?orderId=%00 reached PostgreSQL and answered 500."""
    api = auth_api(make_user("nul"))
    for url in ("/api/trades?orderId=%00", "/api/orders?symbol=a%00b", "/api/orders/%00"):
        response = api.get(url)
        assert response.status_code == 400, (url, response.status_code)
        assert response.json()["code"] == "invalid_input"
