"""Notifications: creation and broadcast, delivery with retries, read state, REST, admin."""

from __future__ import annotations

import http.server
import threading

import pytest
from django.core import mail
from django.db import transaction
from django_tasks_db.models import DBTaskResult
from standardwebhooks import Webhook

from broadcast.models import EventLog
from core.errors import BadRequest
from core.worker import run_ready
from notifications.models import Delivery, DeliveryStatus, Notification, WebhookEndpoint
from notifications.services import notification_create, preferences_set
from tests.conftest import auth_api

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
    assert resp.json()["detail"].endswith(": host_not_public")  # a code, no address


def test_a_user_saving_stalled_urls_one_after_another_holds_two_lookups(make_user, monkeypatch):
    """Saving a webhook URL looks its name up: a user saving one stalled domain's URL after another
    took a lookup thread each (the pool is everyone's). Lookups for one user are capped: the third
    save is refused at once (``dns_busy``, try again), nothing saved; another user's save goes on."""
    import socket

    from core import outbound

    stuck = threading.Event()
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host.endswith(".example"):  # DNS servers that never answer
            stuck.wait(30)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(outbound, "DNS_SECONDS", 0.05)
    mallory, carol = make_user("n6d"), make_user("n6e")
    try:
        refusals = []
        for n in range(3):
            resp = auth_api(mallory).put(
                "/api/notifications/preferences",
                {"webhookUrl": f"https://hook.stall{n}.example/", "webhookSecret": "s" * 20},
                format="json",
            )
            assert resp.status_code == 400 and resp.json()["code"] == "webhook_url_not_allowed"
            refusals.append(resp.json()["detail"].rsplit(": ", 1)[-1])
        assert refusals == ["host_not_public", "host_not_public", "dns_busy"]
        resp = auth_api(carol).put(
            "/api/notifications/preferences",
            {"webhookUrl": "https://hook.carol.example/", "webhookSecret": "s" * 20},
            format="json",
        )
        assert resp.json()["detail"].endswith("host_not_public")  # looked up for her: not refused by mallory's
        assert not WebhookEndpoint.objects.filter(user__in=[mallory, carol]).exists()
    finally:
        stuck.set()


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
    delivery.refresh_from_db()
    assert delivery.last_error == ""  # not its last attempt: made again, not lost (the review)
    run_ready()
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.attempts == 2
    assert len(Hook.received) == 1
    assert [e["data"]["status"] for e in events(user, "notification_status_update")] == ["delivered"]


def test_a_lapsed_claim_on_the_last_attempt_ends_failed_not_a_further_attempt(make_user, settings, hook_server):
    """Last round's review: a worker died mid-way through a delivery's last allowed attempt; the
    sweep handed it on and the next claim made attempt MAX+1. It ends ``failed`` with
    ``attempt_lost`` instead, its owner is told, and the endpoint gets no further request."""
    from datetime import timedelta

    from django.utils import timezone

    from notifications.tasks import _claim, sweep_deliveries

    settings.AXISOR_NOTIFICATIONS = {**settings.AXISOR_NOTIFICATIONS, "MAX_ATTEMPTS": 2, "BACKOFF_BASE_SECONDS": 0}
    user = make_user("n8b")
    preferences_set(
        user=user,
        categories={"orders": {"in_app": False, "webhook": True}},
        webhook={"url": hook_server, "secret": "s" * 20},
    )
    delivery = notify(user, category="orders").deliveries.get()
    Hook.answer = 500
    assert run_ready(limit=1) == 1  # attempt 1 of 2: http_500, a retry is enqueued
    Hook.answer = 200
    assert _claim(delivery.pk) is not None  # attempt 2 of 2: a worker took it, and died
    Delivery.objects.filter(pk=delivery.pk).update(claimed_until=timezone.now() - timedelta(seconds=1))
    assert sweep_deliveries() == 1
    run_ready()
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_error) == (DeliveryStatus.FAILED, 2, "attempt_lost")
    assert len(Hook.received) == 1  # attempt 1's; attempt 2 died before it reached the endpoint
    [status] = events(user, "notification_status_update")
    assert status["data"]["status"] == "failed" and status["data"]["error"] == "attempt_lost"
    assert status["data"]["attempts"] == 2
    assert sweep_deliveries() == 0 and run_ready() == 0  # and that is the end of it


def test_a_lapsed_in_app_claim_on_the_last_attempt_ends_failed(make_user, settings):
    """The same for a batch of in-app deliveries whose worker died: no attempt MAX+1."""
    from datetime import timedelta

    from django.utils import timezone

    from notifications.tasks import _claim_many, sweep_deliveries

    settings.AXISOR_NOTIFICATIONS = {**settings.AXISOR_NOTIFICATIONS, "MAX_ATTEMPTS": 1}
    user = make_user("n8c")
    delivery = notify(user).deliveries.get()
    assert [d.pk for d in _claim_many([delivery.pk])] == [delivery.pk]  # attempt 1 of 1: the worker died
    Delivery.objects.filter(pk=delivery.pk).update(claimed_until=timezone.now() - timedelta(seconds=1))
    assert sweep_deliveries() == 1
    run_ready()
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_error) == (DeliveryStatus.FAILED, 1, "attempt_lost")
    assert [e["data"]["status"] for e in events(user, "notification_status_update")] == ["failed"]


def test_one_users_webhooks_in_flight_are_capped(make_user, settings, hook_server):
    from notifications.tasks import _claim, _finish

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
    first, second = _claim(mine[0].pk), _claim(mine[1].pk)
    assert first is not None and second is not None
    DBTaskResult.objects.all().delete()
    assert _claim(mine[2].pk) is None  # over the cap: not an attempt, and no polling job
    mine[2].refresh_from_db()
    assert mine[2].attempts == 0 and mine[2].claimed_until is None
    assert DBTaskResult.objects.count() == 0
    assert _claim(theirs.pk) is not None  # another user's delivery is not held up
    _finish(first, status=DeliveryStatus.DELIVERED)  # a slot frees: the waiting delivery is woken
    [woken] = DBTaskResult.objects.all()
    assert woken.args_kwargs["args"] == [mine[2].pk]
    assert run_ready() == 1 and Delivery.objects.get(pk=mine[2].pk).status == DeliveryStatus.DELIVERED


def test_new_jobs_are_not_starved_by_retries(make_user, settings):
    """Jobs run first come, first served: retries scheduled earlier do not jump a new job."""
    from django.utils import timezone

    from notifications.tasks import deliver

    user = make_user("n11")
    n = notify(user)
    for _ in range(5):  # older jobs with a time (as retries have) ...
        deliver.using(run_after=timezone.now()).enqueue(0)
    notify(user)  # ... and a new one after them
    order = list(DBTaskResult.objects.ready().values_list("task_path", flat=True))
    assert order[0] == "notifications.tasks.deliver_in_app"  # n's own job, enqueued first
    assert order[-1] == "notifications.tasks.deliver_in_app"  # the new one waits its turn, last
    assert n.deliveries.get().status == DeliveryStatus.PENDING


def test_whsec_secrets_must_be_real_keys(make_user, hook_server):
    user = make_user("n12")
    for bad in ("whsec_!!!!!!!!!!!!!!!!", "whsec_QQ==", "whsec_" + "A" * 20):
        with pytest.raises(BadRequest) as refused:
            preferences_set(user=user, categories={}, webhook={"url": hook_server, "secret": bad})
        assert refused.value.code == "webhook_secret_invalid"
    assert not WebhookEndpoint.objects.filter(user=user).exists()


def test_a_broken_sender_is_an_attempt_and_ends_failed(make_user, settings, hook_server):
    """A secret stored before secrets were checked cannot sign: the delivery fails once, finally,
    with a code; it is not left pending for the sweep to retry for ever."""
    user = make_user("n13")
    preferences_set(
        user=user,
        categories={"orders": {"in_app": False, "webhook": True}},
        webhook={"url": hook_server, "secret": "s" * 20},
    )
    WebhookEndpoint.objects.filter(user=user).update(secret="whsec_!!!!")
    n = notify(user, category="orders")
    assert run_ready() == 1
    delivery = n.deliveries.get()
    assert delivery.status == DeliveryStatus.FAILED and delivery.last_error == "invalid_secret"
    assert delivery.attempts == 1 and Hook.received == []
