"""Notifications: creation and broadcast, delivery with retries, read state, REST, admin."""

from __future__ import annotations

import http.server
import json
import threading

import pytest
from channels.db import database_sync_to_async
from django.core import mail
from django.test import Client

from axisor.realtime.models import EventLog
from notifications.delivery import deliver_due, sign
from notifications.models import Delivery, DeliveryStatus, Notification, WebhookEndpoint
from notifications.services import notification_broadcast, notification_create, preferences_set
from tests.conftest import auth_api, connected, jwt_for

pytestmark = pytest.mark.django_db


def events(user, type_):
    return [e.payload for e in EventLog.objects.filter(user=user, type=type_).order_by("seq")]


def notify(user, **kw):
    fields = {
        "title": "Margin Guard Alert",
        "message": "Position BTC_USD is at risk",
        "type": "warning",
        "category": "margin_guard",
    }
    return notification_create(user=user, **{**fields, **kw})


def test_create_persists_deliveries_and_logs_seed_shaped_event(make_user, django_capture_on_commit_callbacks):
    user = make_user("n1", tier="premium")
    with django_capture_on_commit_callbacks(execute=False) as sent:
        n = notify(user, data={"positionId": "pos_123", "distanceToLiquidation": 0.82})
    assert len(sent) == 1
    assert list(n.deliveries.values_list("method", "status")) == [("in_app", "pending")]
    [event] = events(user, "in_app_notification")
    assert event["channel"] == "notifications" and event["seq"] == 1
    assert event["data"] == {
        "id": str(n.pk), "userId": str(user.pk), "title": "Margin Guard Alert",
        "message": "Position BTC_USD is at risk",
        "type": "warning", "category": "margin_guard", "data": {"positionId": "pos_123", "distanceToLiquidation": 0.82},
        "read": False, "readAt": None, "createdAt": event["data"]["createdAt"],
    }  # fmt: skip


def test_bad_type_or_category_writes_nothing(make_user):
    from django.core.exceptions import ValidationError

    user = make_user("n2")
    for bad in ({"type": "loud"}, {"category": "gossip"}, {"data": [1]}):
        with pytest.raises(ValidationError):
            notify(user, **bad)
    assert Notification.objects.count() == 0 and EventLog.objects.count() == 0


def test_in_app_offline_is_sent_and_status_event_follows(make_user):
    user = make_user("n3")
    n = notify(user)
    assert deliver_due() == 1
    delivery = n.deliveries.get()
    assert delivery.status == DeliveryStatus.SENT and delivery.attempts == 1
    [status] = events(user, "notification_status_update")
    assert status["data"]["id"] == str(n.pk) and status["data"]["status"] == "sent"
    assert status["data"]["deliveryMethod"] == "in_app"
    assert deliver_due() == 0  # nothing twice


def test_email_retries_then_fails_with_last_error(make_user, settings):
    settings.EMAIL_BACKEND = "tests.notifications.backends.BrokenBackend"
    settings.AXISOR_NOTIFICATIONS = {**settings.AXISOR_NOTIFICATIONS, "MAX_ATTEMPTS": 3, "BACKOFF_BASE_SECONDS": 0}
    user = make_user("n4")
    user.email = "n4@example.com"
    user.save()
    preferences_set(user=user, categories={"orders": {"in_app": False, "email": True}})
    n = notify(user, category="orders")
    assert list(n.deliveries.values_list("method", flat=True)) == ["email"]
    for _ in range(3):
        assert deliver_due() == 1
    delivery = n.deliveries.get()
    assert delivery.status == DeliveryStatus.FAILED and delivery.attempts == 3
    assert "SMTP is down" in delivery.last_error
    assert deliver_due() == 0
    [failed] = events(user, "notification_status_update")
    assert failed["data"]["status"] == "failed" and failed["data"]["deliveryMethod"] == "email"
    assert events(user, "in_app_notification") == []  # in-app was off for orders


def test_email_delivered_through_django_backend(make_user, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    user = make_user("n5")
    user.email = "n5@example.com"
    user.save()
    preferences_set(user=user, categories={"system": {"email": True}})
    notify(user, category="system", title="Maintenance tonight")
    deliver_due()
    assert [m.subject for m in mail.outbox] == ["[Axisor] Maintenance tonight"]
    statuses = {e["data"]["deliveryMethod"]: e["data"]["status"] for e in events(user, "notification_status_update")}
    assert statuses == {"in_app": "sent", "email": "delivered"}


class Hook(http.server.BaseHTTPRequestHandler):
    received: list = []
    answer = 200

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hook.received.append((dict(self.headers), body))
        self.send_response(Hook.answer)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def hook_server():
    Hook.received, Hook.answer = [], 200
    server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook"
    server.shutdown()


def test_webhook_signed_post_and_retry_on_error(make_user, settings, hook_server):
    settings.AXISOR_NOTIFICATIONS = {**settings.AXISOR_NOTIFICATIONS, "BACKOFF_BASE_SECONDS": 0}
    user = make_user("n6")
    preferences_set(
        user=user, categories={"price_alert": {"webhook": True}}, webhook={"url": hook_server, "secret": "s" * 20}
    )
    n = notify(user, category="price_alert")
    Hook.answer = 500
    deliver_due()
    delivery = n.deliveries.get(method="webhook")
    assert delivery.status == DeliveryStatus.PENDING and "HTTP 500" in delivery.last_error
    Hook.answer = 200
    deliver_due()
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.attempts == 2
    headers, body = Hook.received[-1]
    assert headers["X-Axisor-Signature"] == sign("s" * 20, body)
    assert headers["X-Axisor-Delivery"] == str(delivery.pk) == Hook.received[0][0]["X-Axisor-Delivery"]
    assert json.loads(body)["id"] == str(n.pk)
    assert WebhookEndpoint.objects.get(user=user).url == hook_server


def test_claim_expiry_lets_another_worker_retry(make_user, settings):
    from datetime import timedelta

    from django.utils import timezone

    from notifications.services import delivery_claim

    user = make_user("n7")
    n = notify(user)
    claimed = delivery_claim(batch=10, lease=timedelta(seconds=60))
    assert [d.notification_id for d in claimed] == [n.pk]
    assert delivery_claim(batch=10, lease=timedelta(seconds=60)) == []  # held by the first worker
    # the first worker died; once its claim expires the delivery is due again
    later = timezone.now() + timedelta(seconds=61)
    assert [d.pk for d in delivery_claim(batch=10, lease=timedelta(seconds=60), now=later)] == [claimed[0].pk]


def test_broadcast_to_tier_in_bulk(make_user, django_assert_max_num_queries):
    users = [make_user(f"b{i}", tier="premium" if i % 2 else "basic") for i in range(40)]
    with django_assert_max_num_queries(20):
        count = notification_broadcast(audience="premium", title="Hi", message="premium news", category="system")
    assert count == 20
    premium = [u for u in users if u.tier == "premium"]
    assert Notification.objects.filter(user__in=premium).count() == 20 and Notification.objects.count() == 20
    assert EventLog.objects.filter(type="in_app_notification").count() == 20
    assert Delivery.objects.count() == 20


def test_rest_inbox_read_and_counts(make_user):
    user, other = make_user("r1"), make_user("r2")
    api = auth_api(user)
    first, second = notify(user, title="one"), notify(user, title="two", category="orders")
    theirs = notify(other)
    assert api.get("/api/notifications/unread-count").json() == {"unread": 2}
    page = api.get("/api/notifications?limit=1").json()
    assert [n["title"] for n in page["results"]] == ["two"] and page["next"]
    notify(user, title="three")  # arrives between pages
    rest = api.get(page["next"]).json()
    assert [n["title"] for n in rest["results"]] == ["one"]  # stable: no repeat, no skip
    assert [n["title"] for n in api.get("/api/notifications?category=orders").json()["results"]] == ["two"]

    assert api.post(f"/api/notifications/{first.pk}/read").json()["read"] is True
    assert api.post(f"/api/notifications/{first.pk}/read").status_code == 200  # idempotent
    assert len([e for e in events(user, "notification_status_update") if e["data"]["status"] == "read"]) == 1
    assert api.post(f"/api/notifications/{theirs.pk}/read").status_code == 404
    assert api.get("/api/notifications?status=unread").json()["results"][0]["title"] == "three"
    assert api.post("/api/notifications/read-all").json() == {"updated": 2}
    assert api.get("/api/notifications/unread-count").json() == {"unread": 0}
    assert second.pk


def test_rest_staff_create_and_validation(make_user):
    staff, user = make_user("ops", staff=True), make_user("u")
    body = {"userId": user.pk, "title": "Hello", "message": "World", "type": "info", "category": "account"}
    assert auth_api(user).post("/api/notifications", body, format="json").status_code == 403
    resp = auth_api(staff).post("/api/notifications", body, format="json")
    assert resp.status_code == 201 and resp.json()["created"] == 1
    bad = auth_api(staff).post("/api/notifications", {**body, "type": "loud"}, format="json")
    assert bad.status_code == 400 and "type" in bad.json()["fields"]
    both = auth_api(staff).post("/api/notifications", {**body, "audience": "all"}, format="json")
    assert both.status_code == 400
    everyone = auth_api(staff).post(
        "/api/notifications", {k: v for k, v in body.items() if k != "userId"} | {"audience": "all"}, format="json"
    )
    assert everyone.status_code == 201 and everyone.json()["created"] == 2


def test_rest_preferences(make_user):
    api = auth_api(make_user("p"))
    prefs = api.get("/api/notifications/preferences").json()
    assert prefs["categories"]["orders"] == {"in_app": True, "email": False, "webhook": False}
    resp = api.put("/api/notifications/preferences", {"categories": {"orders": {"email": True}}}, format="json")
    assert resp.status_code == 200 and resp.json()["categories"]["orders"]["email"] is True
    bad = api.put("/api/notifications/preferences", {"categories": {"margin_guard": {"in_app": False}}}, format="json")
    assert bad.status_code == 400
    assert api.put("/api/notifications/preferences", {"categories": {"gossip": {}}}, format="json").status_code == 400
    assert (
        api.put("/api/notifications/preferences", {"webhookUrl": "http://x.example/h"}, format="json").status_code
        == 400
    )


def test_admin_compose_and_actions(make_user):
    root, user = make_user("root", superuser=True), make_user("target", tier="enterprise")
    client = Client()
    client.force_login(root)
    resp = client.post(
        "/admin/notifications/notification/compose/",
        {"audience": "user", "username": "target", "title": "T", "message": "M", "type": "info", "category": "account"},
    )
    assert resp.status_code == 302
    resp = client.post(
        "/admin/notifications/notification/compose/",
        {"audience": "enterprise", "title": "T2", "message": "M2", "type": "info", "category": "system"},
    )
    assert resp.status_code == 302
    assert Notification.objects.filter(user=user).count() == 2
    n = Notification.objects.filter(user=user).first()
    client.post("/admin/notifications/notification/", {"action": "mark_read", "_selected_action": [n.pk]})
    n.refresh_from_db()
    assert n.read
    deliver_due()
    client.post("/admin/notifications/notification/", {"action": "resend", "_selected_action": [n.pk]})
    assert n.deliveries.get().status == "pending"
    page = client.get(f"/admin/notifications/notification/{n.pk}/change/")
    assert page.status_code == 200 and b"in_app" in page.content
    assert client.get("/admin/notifications/notification/?deliveries__status__exact=pending").status_code == 200


@pytest.mark.django_db(transaction=True)
async def test_sockets_get_notification_and_read_on_other_device(make_user):
    user = await database_sync_to_async(make_user)("live")
    phone, _ = await connected(jwt_for(user))
    laptop, _ = await connected(jwt_for(user))
    n = await database_sync_to_async(notify)(user)
    for sock in (phone, laptop):
        event = await sock.receive_json_from(timeout=5)
        assert event["type"] == "in_app_notification" and event["data"]["id"] == str(n.pk) and event["seq"] == 1
    await database_sync_to_async(deliver_due)()
    for sock in (phone, laptop):
        status = await sock.receive_json_from(timeout=5)
        assert status["type"] == "notification_status_update" and status["data"]["status"] == "delivered"
    await database_sync_to_async(auth_api(user).post)(f"/api/notifications/{n.pk}/read")
    read = await laptop.receive_json_from(timeout=5)
    assert read["data"] == {**read["data"], "id": str(n.pk), "status": "read", "deliveryMethod": "in_app"}
    await phone.disconnect()
    await laptop.disconnect()
