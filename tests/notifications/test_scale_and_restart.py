"""Broadcast to 10,000 users in one request; a delivery worker killed mid-batch loses nothing."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.test import override_settings
from standardwebhooks import Webhook

from accounts.models import User
from broadcast.models import EventLog
from notifications.models import Delivery, DeliveryStatus, Notification
from notifications.services import notification_create, preferences_set
from tests.conftest import auth_api, connected, jwt_for
from tests.integration.conftest import subprocess_database_url
from tests.polling import until_sync

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db(transaction=True)
async def test_broadcast_to_ten_thousand_users_in_one_request(make_user):
    staff = await database_sync_to_async(make_user)("ops", superuser=True)
    online = [await database_sync_to_async(make_user)(f"online{i}") for i in range(5)]
    password = make_password(None)
    await database_sync_to_async(User.objects.bulk_create)(
        [User(username=f"bulk{i:05d}", password=password) for i in range(10_000 - 5)], batch_size=2000
    )
    socks = [(await connected(jwt_for(u)))[0] for u in online]

    body = {"audience": "all", "title": "Release", "message": "v2 is live", "type": "info", "category": "system"}
    resp = await database_sync_to_async(auth_api(staff).post)("/api/notifications", body, format="json")
    assert resp.status_code == 201 and resp.json() == {"created": 10_001}  # everyone active, staff included
    assert await database_sync_to_async(Notification.objects.count)() == 10_001
    for user, sock in zip(online, socks, strict=True):
        event = await sock.receive_json_from(timeout=30)
        assert event["type"] == "in_app_notification" and event["data"]["userId"] == str(user.pk)
        assert event["data"]["title"] == "Release" and event["seq"] == 1
        await sock.disconnect()


class SlowHook(http.server.BaseHTTPRequestHandler):
    """Holds every request until released, so the worker can be killed mid-batch."""

    release = threading.Event()
    first_arrived = threading.Event()
    ids: list[str] = []

    def do_POST(self):  # http.server's method name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        SlowHook.first_arrived.set()
        SlowHook.release.wait(timeout=30)
        Webhook(("x" * 20).encode()).verify(body, dict(self.headers))  # signed, and fresh
        SlowHook.ids.append(self.headers["webhook-id"])
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.django_db(transaction=True)
def test_worker_killed_mid_batch_loses_nothing(make_user):
    """A real worker process SIGKILLed while its webhook attempts wait on the receiver: a restarted
    worker finishes every delivery, each ``delivered`` exactly once in our records; the receiver
    may see an attempt twice and drops the duplicate by ``webhook-id``."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowHook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = f"127.0.0.1:{server.server_port}"
    user = make_user("hooked")
    with override_settings(AXISOR_OUTBOUND={**settings.AXISOR_OUTBOUND, "ALLOW_HOSTS": {hook}}):
        preferences_set(
            user=user,
            categories={"account": {"in_app": False, "webhook": True}},
            webhook={"url": f"http://{hook}/h", "secret": "x" * 20},
        )
    for i in range(8):
        notification_create(user=user, title=f"n{i}", message="m", category="account")
    env = {
        **os.environ,
        "DATABASE_URL": subprocess_database_url(),
        "NOTIFY_WEBHOOK_ALLOW_HOSTS": hook,
        "NOTIFY_CLAIM_SECONDS": "1",
        "NOTIFY_SWEEP_SECONDS": "0.5",
        "WORKER_POLL_SECONDS": "0.1",
    }
    cmd = [sys.executable, "manage.py", "worker", "--threads", "4"]
    worker = subprocess.Popen(cmd, cwd=ROOT, env=env)
    try:
        assert SlowHook.first_arrived.wait(timeout=30)
        worker.kill()  # mid-batch: attempts claimed, none recorded
        worker.wait(timeout=10)
        assert Delivery.objects.filter(status=DeliveryStatus.PENDING).count() == 8
        assert Delivery.objects.filter(attempts__gt=0).exists()
        SlowHook.release.set()
        # A restarted worker takes the dead one's deliveries once their claims lapse and delivers each
        # exactly once in our records. Watch the database until it has (bounded), then stop it.
        worker = subprocess.Popen(cmd, cwd=ROOT, env=env)

        def delivered_all() -> bool:
            assert worker.poll() is None, "the restarted worker died"
            return not Delivery.objects.exclude(status=DeliveryStatus.DELIVERED).exists()

        until_sync(delivered_all, timeout=60, what="the restarted worker delivering everything", interval=0.1)
        worker.terminate()
        assert worker.wait(timeout=20) == 0  # SIGTERM: finishes its steps, exits cleanly
    finally:
        SlowHook.release.set()
        server.shutdown()
        if worker.poll() is None:
            worker.kill()
    deliveries = list(Delivery.objects.order_by("pk"))
    assert [d.status for d in deliveries] == [DeliveryStatus.DELIVERED] * 8
    status_events = EventLog.objects.filter(user=user, type="notification_status_update")
    assert sorted(e.payload["data"]["id"] for e in status_events) == sorted(str(d.notification_id) for d in deliveries)
    assert set(SlowHook.ids) == {f"dlv_{d.pk}" for d in deliveries}  # each id, duplicates dropped by id
