"""System notices: REST, Django admin and broadcast to every connection."""

from __future__ import annotations

from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from system.models import SystemNotice
from system.services import system_notice_create, system_notice_end
from tests.conftest import auth_api, connected, jwt_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("instruments")]


def maintenance_body(hours_from_now: int = 2) -> dict:
    start = timezone.now() + timedelta(hours=hours_from_now)
    return {
        "kind": "maintenance",
        "message": "Scheduled maintenance will begin in 2 hours",
        "startTime": start.isoformat(),
        "endTime": (start + timedelta(hours=2)).isoformat(),
    }


async def test_staff_maintenance_notice_reaches_every_connection(make_user):
    staff = await database_sync_to_async(make_user)("ops", superuser=True)
    users = [await database_sync_to_async(make_user)(f"u{i}") for i in range(3)]
    socks = [(await connected(jwt_for(u)))[0] for u in users]

    resp = await database_sync_to_async(auth_api(staff).post)("/api/system/notices", maintenance_body(), format="json")
    assert resp.status_code == 201, resp.content
    for comm in socks:
        event = await comm.receive_json_from(timeout=5)
        assert event["type"] == "server_maintenance" and event["channel"] == "system"
        data = event["data"]
        assert data["scheduled"] is True and data["message"].startswith("Scheduled")
        assert data["startTime"].endswith("Z") and data["endTime"].endswith("Z")
        assert "seq" not in event
        await comm.disconnect()


async def test_service_status_update_shape_and_end(make_user):
    user = await database_sync_to_async(make_user)("u")
    comm, _ = await connected(jwt_for(user))
    recovery = timezone.now() + timedelta(minutes=30)
    notice = await database_sync_to_async(system_notice_create)(
        kind="service_status",
        service="margin_guard",
        status="degraded",
        message="Margin Guard service experiencing delays",
        estimated_recovery=recovery,
    )
    event = await comm.receive_json_from(timeout=5)
    assert event["type"] == "service_status_update" and event["channel"] == "system"
    assert {k: event["data"][k] for k in ("service", "status", "message")} == {
        "service": "margin_guard",
        "status": "degraded",
        "message": "Margin Guard service experiencing delays",
    }
    assert event["data"]["estimatedRecovery"].endswith("Z") and event["data"]["updatedAt"].endswith("Z")

    await database_sync_to_async(system_notice_end)(notice=notice)
    ended = await comm.receive_json_from(timeout=5)
    assert ended["data"]["status"] == "operational" and ended["data"]["id"] == str(notice.pk)
    await comm.disconnect()


async def test_notices_in_force_are_sent_after_connection(make_user):
    user = await database_sync_to_async(make_user)("late")
    create = database_sync_to_async(system_notice_create)
    now = timezone.now()
    await create(
        kind="maintenance", message="past", start_time=now - timedelta(hours=3), end_time=now - timedelta(hours=1)
    )
    await create(
        kind="maintenance", message="soon", start_time=now + timedelta(hours=1), end_time=now + timedelta(hours=2)
    )
    await create(kind="service_status", service="orders", status="down", message="orders down")
    await create(kind="service_status", service="market_data", status="degraded", message="slow")
    await create(kind="service_status", service="market_data", status="operational", message="recovered")

    comm, _ = await connected(jwt_for(user))
    first = await comm.receive_json_from()
    second = await comm.receive_json_from()
    assert [first["data"]["message"], second["data"]["message"]] == ["soon", "orders down"]
    assert await comm.receive_nothing(timeout=0.3)
    await comm.disconnect()


def test_notice_api_refuses_non_staff_and_bad_input(make_user):
    user = make_user("plain")
    staff = make_user("ops", superuser=True)
    assert auth_api(user).post("/api/system/notices", maintenance_body(), format="json").status_code == 403
    bad = maintenance_body()
    bad["endTime"] = bad["startTime"]
    resp = auth_api(staff).post("/api/system/notices", bad, format="json")
    assert resp.status_code == 400
    assert resp.json()["code"] == "validation_error" and "endTime" in resp.json()["fields"]
    resp = auth_api(staff).post("/api/system/notices", {"kind": "service_status", "message": "x"}, format="json")
    assert resp.status_code == 400 and set(resp.json()["fields"]) == {"service", "status"}
    resp = auth_api(staff).post("/api/system/notices", {"kind": "weather", "message": "x"}, format="json")
    assert resp.status_code == 400 and "kind" in resp.json()["fields"]
    assert SystemNotice.objects.count() == 0


def test_notice_api_accepts_service_key(api, settings):
    settings.AXISOR_SERVICE_KEY = "svc-key-for-tests"
    body = {"kind": "service_status", "service": "orders", "status": "down", "message": "venue offline"}
    assert api.post("/api/system/notices", body, format="json").status_code == 401
    resp = api.post("/api/system/notices", body, format="json", HTTP_X_SERVICE_KEY="wrong")
    assert resp.status_code in (401, 403)
    resp = api.post("/api/system/notices", body, format="json", HTTP_X_SERVICE_KEY="svc-key-for-tests")
    assert resp.status_code == 201 and resp.json()["status"] == "down"


async def test_django_admin_save_broadcasts(make_user):
    from django.test import Client

    root = await database_sync_to_async(make_user)("root", superuser=True)
    user = await database_sync_to_async(make_user)("watcher")
    comm, _ = await connected(jwt_for(user))

    def add_via_admin():
        client = Client()
        client.force_login(root)
        return client.post(
            "/admin/system/systemnotice/add/",
            {"kind": "service_status", "message": "feed lagging", "service": "market_data", "status": "degraded"},
        )

    resp = await database_sync_to_async(add_via_admin)()
    assert resp.status_code == 302, resp.content[:500]
    event = await comm.receive_json_from(timeout=5)
    assert event["type"] == "service_status_update" and event["data"]["message"] == "feed lagging"
    await comm.disconnect()


async def test_new_connections_see_notice_changes_while_the_process_reuses_its_read(make_user):
    """The process reads the notices in force once and reuses them for later connections, until
    a notice changes: each change reaches the next connection at once."""
    user = await database_sync_to_async(make_user)("watcher")
    watcher, _ = await connected(jwt_for(user))  # keeps the process in the system room throughout

    async def notices_on_connect() -> list[str]:
        comm, _ = await connected(jwt_for(user))
        texts = []
        while not await comm.receive_nothing(timeout=0.3):
            texts.append((await comm.receive_json_from())["data"]["message"])
        await comm.disconnect()
        return texts

    create = database_sync_to_async(system_notice_create)
    first = await create(kind="service_status", service="orders", status="down", message="orders down")
    await watcher.receive_json_from(timeout=5)
    assert await notices_on_connect() == ["orders down"]
    assert await notices_on_connect() == ["orders down"]  # reused
    await create(kind="service_status", service="market_data", status="degraded", message="slow")
    await watcher.receive_json_from(timeout=5)
    assert await notices_on_connect() == ["orders down", "slow"]
    await database_sync_to_async(system_notice_end)(notice=first)
    await watcher.receive_json_from(timeout=5)
    assert await notices_on_connect() == ["slow"]
    await watcher.disconnect()


async def test_a_connect_storm_reads_the_notices_once_and_none_is_greeted_before_system_is_heard(
    make_user, monkeypatch
):
    """Sockets that connect while the process's ``system`` subscription is still on its way wait
    for it: none is greeted before the process can hear a notice change, and the notices in force
    are read once for all of them (each read before the subscription would have been read again)."""
    import asyncio

    from channels.layers import get_channel_layer

    from gateway import events_consumer
    from gateway.hub import hub

    users = [await database_sync_to_async(make_user)(f"storm{i}") for i in range(6)]
    await database_sync_to_async(system_notice_create)(
        kind="service_status", service="orders", status="down", message="orders down"
    )
    layer = get_channel_layer()
    real_add, real_read = layer.group_add, events_consumer._notices_read
    subscribing, heard = asyncio.Event(), asyncio.Event()
    reads = []

    async def group_add(group, channel):
        if group == "system":
            subscribing.set()
            await heard.wait()
        return await real_add(group, channel)

    async def read():
        reads.append(1)
        return await real_read()

    monkeypatch.setattr(layer, "group_add", group_add)
    monkeypatch.setattr(events_consumer, "_notices_read", read)
    storm = [asyncio.ensure_future(connected(jwt_for(u))) for u in users[:4]]
    await asyncio.wait_for(subscribing.wait(), 5)
    while len(hub().members.get("system", ())) < 4:  # noqa: ASYNC110 - all four asking to join system
        await asyncio.sleep(0.01)
    assert not any(s.done() for s in storm) and reads == []  # none greeted, nothing read: system unheard
    heard.set()
    socks = await asyncio.wait_for(asyncio.gather(*storm), 10)
    socks += [await connected(jwt_for(u)) for u in users[4:]]  # later ones find the notices read
    for comm, _ in socks:
        assert (await comm.receive_json_from())["data"]["message"] == "orders down"
        await comm.disconnect()
    assert reads == [1]
