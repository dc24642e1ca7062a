"""Notifications: creation and broadcast, delivery with retries, read state, REST, admin."""

from __future__ import annotations

import http.server
import threading

import pytest
from channels.db import database_sync_to_async
from django.core import mail
from django.db import transaction
from django.test import Client
from django_tasks_db.models import DBTaskResult
from standardwebhooks import Webhook

from axisor.errors import BadRequest
from axisor.realtime.models import EventLog
from axisor.worker import run_ready
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
    assert run_ready() == 1  # one in-app job
    delivery = n.deliveries.get()
    assert delivery.status == DeliveryStatus.SENT and delivery.attempts == 1
    [status] = events(user, "notification_status_update")
    assert status["data"]["id"] == str(n.pk) and status["data"]["status"] == "sent"
    assert status["data"]["deliveryMethod"] == "in_app"
    assert run_ready() == 0  # nothing twice


def test_email_retries_then_fails_with_last_error(make_user, settings):
    settings.EMAIL_BACKEND = "tests.notifications.backends.BrokenBackend"
    settings.AXISOR_NOTIFICATIONS = {**settings.AXISOR_NOTIFICATIONS, "MAX_ATTEMPTS": 3, "BACKOFF_BASE_SECONDS": 0}
    user = make_user("n4")
    user.email = "n4@example.com"
    user.save()
    preferences_set(user=user, categories={"orders": {"in_app": False, "email": True}})
    n = notify(user, category="orders")
    assert list(n.deliveries.values_list("method", flat=True)) == ["email"]
    for attempt in range(1, 4):  # each failed attempt enqueues its retry (no backoff here)
        assert run_ready(limit=1) == 1
        assert n.deliveries.get().attempts == attempt
    delivery = n.deliveries.get()
    assert delivery.status == DeliveryStatus.FAILED and delivery.attempts == 3
    assert delivery.last_error == "email_error"  # what the user sees: a code
    assert "SMTP is down" in delivery.error_detail  # what staff see
    assert run_ready() == 0
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
    run_ready()
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
def hook_server(settings):
    Hook.received, Hook.answer = [], 200
    server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    # A private address: only an allow-listed receiver may be called (the outbound policy).
    allow = settings.AXISOR_OUTBOUND["ALLOW_HOSTS"] | {f"127.0.0.1:{server.server_port}"}
    settings.AXISOR_OUTBOUND = {**settings.AXISOR_OUTBOUND, "ALLOW_HOSTS": allow}
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
    assert run_ready(limit=2) == 2  # the in-app job and the first webhook attempt
    delivery = n.deliveries.get(method="webhook")
    assert delivery.status == DeliveryStatus.PENDING and delivery.last_error == "http_500"
    Hook.answer = 200
    assert run_ready() == 1  # the retry the failed attempt enqueued
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.attempts == 2
    headers, body = Hook.received[-1]
    # A receiver verifies the Standard Webhooks way (the secret's bytes are the key).
    assert Webhook(("s" * 20).encode()).verify(body, headers)["id"] == str(n.pk)
    assert headers["webhook-id"] == f"dlv_{delivery.pk}" == Hook.received[0][0]["webhook-id"]  # stable
    tampered = {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) - 1)}
    with pytest.raises(Exception, match="signature"):
        Webhook(("s" * 20).encode()).verify(body, tampered)
    assert WebhookEndpoint.objects.get(user=user).url == hook_server


def test_whsec_secret_is_a_standard_webhooks_key(make_user, hook_server):
    import base64

    secret = "whsec_" + base64.b64encode(b"k" * 24).decode()
    user = make_user("n6b")
    preferences_set(user=user, categories={"orders": {"webhook": True}}, webhook={"url": hook_server, "secret": secret})
    notify(user, category="orders")
    run_ready()
    headers, body = Hook.received[-1]
    assert Webhook(secret).verify(body, headers)["userId"] == str(user.pk)


def test_webhook_url_refused_at_save_changes_nothing(make_user, settings):
    user = make_user("n6c")
    for url in ("http://127.0.0.1:6379/", "http://169.254.169.254/latest/meta-data/", "ftp://example.com/x"):
        with pytest.raises(BadRequest) as refused:
            preferences_set(
                user=user, categories={"orders": {"webhook": True}}, webhook={"url": url, "secret": "s" * 20}
            )
        assert refused.value.code == "webhook_url_not_allowed"
    assert not WebhookEndpoint.objects.filter(user=user).exists()
    assert not user.notification_preferences.exists()  # the whole change rolled back
    resp = auth_api(user).put(
        "/api/notifications/preferences",
        {"webhookUrl": "http://[::ffff:127.0.0.1]/", "webhookSecret": "s" * 20},
        format="json",
    )
    assert resp.status_code == 400 and resp.json()["code"] == "webhook_url_not_allowed"
    assert "blocked_address" in resp.json()["detail"]


def test_rolled_back_notification_enqueues_nothing_committed_one_has_its_jobs(make_user):
    user = make_user("n7")
    with pytest.raises(RuntimeError), transaction.atomic():
        notify(user)
        raise RuntimeError("the caller's transaction fails after the notification")
    assert DBTaskResult.objects.count() == 0 and Delivery.objects.count() == 0
    n = notify(user)
    [job] = DBTaskResult.objects.all()
    assert job.task_path == "notifications.tasks.deliver_in_app"
    assert job.args_kwargs["args"] == [[n.deliveries.get().pk]]


def test_lapsed_claim_is_swept_and_delivered_once(make_user, settings, hook_server):
    from datetime import timedelta

    from django.utils import timezone

    from notifications.tasks import _claim, sweep_deliveries

    user = make_user("n8")
    preferences_set(
        user=user,
        categories={"orders": {"in_app": False, "webhook": True}},
        webhook={"url": hook_server, "secret": "s" * 20},
    )
    n = notify(user, category="orders")
    delivery = n.deliveries.get()
    assert _claim(delivery.pk) is not None  # a worker took it ...
    assert _claim(delivery.pk) is None  # ... and holds it: a duplicate job does nothing
    assert sweep_deliveries() == 0  # its claim has not lapsed
    # ... and died: once its claim lapses the sweep hands the delivery to another worker
    Delivery.objects.filter(pk=delivery.pk).update(claimed_until=timezone.now() - timedelta(seconds=1))
    assert sweep_deliveries() == 1
    run_ready()
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.attempts == 2
    assert len(Hook.received) == 1
    assert [e["data"]["status"] for e in events(user, "notification_status_update")] == ["delivered"]


def test_one_users_webhooks_in_flight_are_capped(make_user, settings, hook_server):
    from notifications.tasks import _claim

    settings.AXISOR_NOTIFICATIONS = {**settings.AXISOR_NOTIFICATIONS, "PER_USER_CONCURRENCY": 2}
    hooked, other = make_user("n9"), make_user("n10")
    for user in (hooked, other):
        preferences_set(
            user=user,
            categories={"orders": {"in_app": False, "webhook": True}},
            webhook={"url": hook_server, "secret": "s" * 20},
        )
    mine = [notify(hooked, category="orders").deliveries.get() for _ in range(3)]
    theirs = notify(other, category="orders").deliveries.get()
    assert _claim(mine[0].pk) is not None and _claim(mine[1].pk) is not None
    DBTaskResult.objects.all().delete()
    assert _claim(mine[2].pk) is None  # over the cap: not an attempt, looked at again shortly
    mine[2].refresh_from_db()
    assert mine[2].attempts == 0 and mine[2].claimed_until is None
    [again] = DBTaskResult.objects.all()
    assert again.args_kwargs["args"] == [mine[2].pk] and again.run_after is not None
    assert _claim(theirs.pk) is not None  # another user's delivery is not held up


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
    run_ready()
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
    await database_sync_to_async(run_ready)()
    for sock in (phone, laptop):
        status = await sock.receive_json_from(timeout=5)
        assert status["type"] == "notification_status_update" and status["data"]["status"] == "delivered"
    await database_sync_to_async(auth_api(user).post)(f"/api/notifications/{n.pk}/read")
    read = await laptop.receive_json_from(timeout=5)
    assert read["data"] == {**read["data"], "id": str(n.pk), "status": "read", "deliveryMethod": "in_app"}
    await phone.disconnect()
    await laptop.disconnect()
