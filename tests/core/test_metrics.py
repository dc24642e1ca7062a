"""/metrics: off without METRICS_TOKEN, token-protected, Prometheus text with our figures."""

import pytest
from channels.db import database_sync_to_async
from django.test import AsyncClient

from tests.conftest import connected, jwt_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("instruments")]


async def test_metrics_protected_and_counting(make_user, settings):
    client = AsyncClient()
    settings.METRICS_TOKEN = None
    assert (await client.get("/metrics")).status_code == 404
    settings.METRICS_TOKEN = "scrape-me"
    assert (await client.get("/metrics")).status_code == 401
    assert (await client.get("/metrics", headers={"Authorization": "Bearer wrong"})).status_code == 401

    def value(body: str, name: str) -> float:
        line = next((x for x in body.splitlines() if x.startswith(name + " ")), None)
        return float(line.split()[-1]) if line else 0.0

    scrape = {"Authorization": "Bearer scrape-me"}
    before = (await client.get("/metrics", headers=scrape)).content.decode()
    user = await database_sync_to_async(make_user)("m")
    comm, _ = await connected(jwt_for(user))
    await comm.send_json_to({"type": "subscribe", "channel": "market:BTC_USD"})
    await comm.receive_json_from()
    await database_sync_to_async(auth_get)(user)
    body = (await client.get("/metrics", headers=scrape)).content.decode()
    ws = 'axisor_connections{endpoint="/ws"}'
    assert value(body, ws) == value(before, ws) + 1
    assert value(body, "axisor_hub_rooms") >= 2  # at least system and market:BTC_USD in this process
    assert 'axisor_http_request_duration_seconds_count{method="GET",route="api/orders",status="200"}' in body
    await comm.disconnect()


def auth_get(user):
    from tests.conftest import auth_api

    assert auth_api(user).get("/api/orders").status_code == 200
