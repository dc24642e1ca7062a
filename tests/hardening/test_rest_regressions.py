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
    staff = make_user("staff4", superuser=True)
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


@pytest.mark.django_db
@pytest.mark.parametrize("body", ["[" * 100_000 + "]" * 100_000, '{"a":' * 100_000 + "1" + "}" * 100_000])
def test_json_nested_past_the_interpreters_recursion_is_a_400_before_authentication(client, body):
    """Outside probe (twelfth session): DRF's parser catches ValueError alone, and the
    RecursionError of a deep body was a 500 (with DEBUG, Django's debug page) on
    /api/auth/token, which anyone may call."""
    response = client.post("/api/auth/token", body, content_type="application/json")
    assert response.status_code == 400, response.content[:200]
    assert response.json()["code"] == "parse_error"


@pytest.mark.django_db
def test_a_browser_gets_json_from_every_list_not_a_500(make_user):
    """Outside probe (twelfth session): DRF's browsable renderer answered any browser (Accept:
    text/html) or ?format=api with a 500 on the lists whose viewsets read their rows themselves."""
    api = auth_api(make_user("browser"))
    for url in ("/api/orders", "/api/positions", "/api/notifications", "/api/trades"):
        response = api.get(url, HTTP_ACCEPT="text/html,application/xhtml+xml,*/*;q=0.8")
        assert response.status_code == 200 and response["Content-Type"] == "application/json", url
        assert api.get(url + "?format=api").status_code == 404


@pytest.mark.django_db
def test_a_cursor_that_says_nothing_is_refused_not_read_as_the_first_page(make_user):
    """Outside probe (twelfth session): ?cursor=AAAA decodes to no position at all, and DRF served
    the first page for it: a client with a damaged cursor starts over, round and round."""
    from orders.models import Order
    from tests.orders.factories import place

    user = make_user("pages")
    for _ in range(3):
        place(user)
    api = auth_api(user)
    first = api.get("/api/orders?cursor=&limit=2").json()
    assert len(first["results"]) == 2 and first["next"]
    second = api.get(first["next"]).json()
    assert [o["orderId"] for o in second["results"]] == [Order.objects.order_by("id").first().order_id]
    assert api.get(second["previous"]).status_code == 200
    for bad in ("AAAA", "garbage"):
        response = api.get(f"/api/orders?cursor={bad}&limit=2")
        assert response.status_code == 404 and response.json()["code"] == "not_found", bad


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/nope", "/api/orders/", "/api/", "/api/market/BTC_USD/nope"])
def test_a_path_under_api_that_names_no_endpoint_is_a_json_404(make_user, settings, path):
    """Outside probe (twelfth session): with DEBUG (scripts/run) Django answered an HTML page
    listing the URL patterns; without, an HTML 404. An API client gets JSON either way."""
    settings.DEBUG = True
    from rest_framework.test import APIClient

    from tests.conftest import jwt_for

    api = APIClient(enforce_csrf_checks=True)  # a bearer client has no CSRF cookie; DRF's views need none
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {jwt_for(make_user('lost'))}")
    for method in ("get", "post", "delete"):
        response = getattr(api, method)(path)
        assert response.status_code == 404 and response["Content-Type"] == "application/json", (method, path)
        assert response.json()["code"] == "not_found"
