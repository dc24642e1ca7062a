"""A user's webhook endpoint, from the user's side and an attacker's: a new URL starts with a clean
breaker, refusals tell nothing of our network, and every size a user controls is bounded. Real
PostgreSQL, real local receivers."""

from __future__ import annotations

import http.server
import socket
import threading
from datetime import timedelta

import pytest
from django.utils import timezone

from core.worker import run_ready
from notifications.models import Delivery, DeliveryStatus, WebhookEndpoint
from notifications.services import notification_create, preferences_set

pytestmark = pytest.mark.django_db


class Hanging:
    """Accepts every connection and never answers."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


class Receiver(http.server.BaseHTTPRequestHandler):
    ids: list[str] = []

    def do_POST(self):  # http.server's method name
        self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.ids.append(self.headers["webhook-id"])
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    Receiver.ids = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def hanging():
    server = Hanging()
    yield server
    server.close()


def allow(settings, *ports: int) -> None:
    hosts = settings.AXISOR_OUTBOUND["ALLOW_HOSTS"] | {f"127.0.0.1:{p}" for p in ports}
    settings.AXISOR_OUTBOUND = {**settings.AXISOR_OUTBOUND, "ALLOW_HOSTS": hosts, "TIMEOUT_SECONDS": 1.0}


def set_url(user, url: str) -> None:
    preferences_set(
        user=user, categories={"orders": {"in_app": False, "webhook": True}}, webhook={"url": url, "secret": "s" * 20}
    )


def order_executed(user) -> Delivery:
    n = notification_create(user=user, title="Order executed", message="BUY 1 BTC_USD", category="orders")
    return n.deliveries.get()


def test_a_new_url_closes_the_breaker_and_the_waiting_deliveries_go_to_it(make_user, settings, hanging, receiver):
    """The user's endpoint hung: its breaker is open for a minute, one delivery waits for its retry,
    another for the breaker, and the endpoint was marked slow before. The user saves a healthy URL:
    the breaker and the slow mark are reset in that save, the waiting deliveries go to the new URL
    at once (each keeping its webhook-id and the attempts it made), and so does the next one."""
    settings.AXISOR_NOTIFICATIONS = {**settings.AXISOR_NOTIFICATIONS, "BACKOFF_BASE_SECONDS": 60}
    allow(settings, hanging.port, receiver.server_port)
    user = make_user("wh-fixer")
    set_url(user, f"http://127.0.0.1:{hanging.port}/old")
    retried = order_executed(user)
    assert run_ready() == 1  # the attempt times out: the breaker opens for 60 s
    deferred = order_executed(user)
    assert run_ready() == 1  # finds the breaker open: waits for it, no attempt
    WebhookEndpoint.objects.filter(user=user).update(slow=True)
    endpoint = WebhookEndpoint.objects.get(user=user)
    assert endpoint.failures == 1 and endpoint.open_until > timezone.now() + timedelta(seconds=50)
    deferred.refresh_from_db()
    assert deferred.attempts == 0 and deferred.next_attempt_at == endpoint.open_until

    set_url(user, f"http://127.0.0.1:{receiver.server_port}/new")
    endpoint.refresh_from_db()
    assert (endpoint.failures, endpoint.open_until, endpoint.slow) == (0, None, False)
    fresh = order_executed(user)
    run_ready()  # only what is due now: nothing waits out the old endpoint's minute

    statuses = {d.pk: (d.status, d.attempts) for d in Delivery.objects.filter(notification__user=user)}
    assert statuses == {
        retried.pk: (DeliveryStatus.DELIVERED, 2),
        deferred.pk: (DeliveryStatus.DELIVERED, 1),
        fresh.pk: (DeliveryStatus.DELIVERED, 1),
    }
    assert sorted(Receiver.ids) == sorted(f"dlv_{d.pk}" for d in (retried, deferred, fresh))  # each once


def test_saving_the_same_url_again_leaves_the_breaker_as_it_is(make_user, settings, hanging):
    """Only a change of where we call resets the breaker: saving the same URL (a new secret, the
    category switches) leaves the endpoint's penalty, and the waiting deliveries, where they were."""
    settings.AXISOR_NOTIFICATIONS = {**settings.AXISOR_NOTIFICATIONS, "BACKOFF_BASE_SECONDS": 60}
    allow(settings, hanging.port)
    user = make_user("wh-same")
    url = f"http://127.0.0.1:{hanging.port}/same"
    set_url(user, url)
    order_executed(user)
    assert run_ready() == 1
    before = WebhookEndpoint.objects.get(user=user)
    preferences_set(user=user, categories={"orders": {"webhook": True}}, webhook={"url": url, "secret": "t" * 20})
    after = WebhookEndpoint.objects.get(user=user)
    assert (after.failures, after.open_until, after.secret) == (1, before.open_until, "t" * 20)
    assert run_ready() == 0  # nothing woken
