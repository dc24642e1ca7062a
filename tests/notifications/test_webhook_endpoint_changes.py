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
from tests.notifications.test_webhook_fairness import Hanging  # accepts, reads, never answers

pytestmark = pytest.mark.django_db


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


@pytest.mark.parametrize("again", ["/same", "/another-path", "/same?x=1"])
def test_saving_the_same_url_again_leaves_the_breaker_as_it_is(make_user, settings, hanging, again):
    """Only a change of where we call (scheme, host, port) resets the breaker: saving the same URL
    (a new secret, the category switches), or another path or query on the same host (the breaker
    counts the host's silences: an answer closes it), leaves the endpoint's penalty, and the
    waiting deliveries, where they were; else a user whose host hangs would reset it each save."""
    settings.AXISOR_NOTIFICATIONS = {**settings.AXISOR_NOTIFICATIONS, "BACKOFF_BASE_SECONDS": 60}
    allow(settings, hanging.port)
    user = make_user("wh-same")
    url = f"http://127.0.0.1:{hanging.port}/same"
    set_url(user, url)
    order_executed(user)
    assert run_ready() == 1
    before = WebhookEndpoint.objects.get(user=user)
    moved = f"http://127.0.0.1:{hanging.port}{again}"
    preferences_set(user=user, categories={"orders": {"webhook": True}}, webhook={"url": moved, "secret": "t" * 20})
    after = WebhookEndpoint.objects.get(user=user)
    assert (after.failures, after.open_until, after.secret, after.url) == (1, before.open_until, "t" * 20, moved)
    assert run_ready() == 0  # nothing woken


class InternalDNS:
    """The resolver as an attacker probes it: ``db.internal.example`` is one of our internal names
    (a private address), ``gone.example`` exists nowhere, ``hook.rebind.example`` is the attacker's
    own name, public when saved and pointed at our network (a CNAME) afterwards. ``localhost`` is
    left to the real resolver (/etc/hosts)."""

    def __init__(self) -> None:
        self.rebound = False
        self.real = socket.getaddrinfo

    def __call__(self, host, port, *args, **kwargs):
        private = ("10.20.30.40", port)
        if host == "db.internal.example" or (host == "hook.rebind.example" and self.rebound):
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", private)]
        if host == "hook.rebind.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port))]
        if host.endswith(".example"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.real(host, port, *args, **kwargs)


@pytest.fixture
def internal_dns(monkeypatch):
    dns = InternalDNS()
    monkeypatch.setattr(socket, "getaddrinfo", dns)
    return dns


def test_a_refused_url_tells_nothing_of_our_network(make_user, internal_dns):
    """Whether a name is one of ours (it resolves, to a private address) or exists nowhere, the user
    saving it gets one answer: the same code, the same generic text, no address, nothing stored."""
    from tests.conftest import auth_api

    user = make_user("wh-prober")
    answers = []
    for url in ("http://db.internal.example/", "http://gone.example/", "http://localhost/", "http://10.20.30.40/"):
        resp = auth_api(user).put(
            "/api/notifications/preferences", {"webhookUrl": url, "webhookSecret": "s" * 20}, format="json"
        )
        assert resp.status_code == 400, resp.content
        assert "10.20.30.40" not in resp.content.decode() and "127.0.0.1" not in resp.content.decode()
        answers.append(resp.json())
    assert answers == [{"code": "webhook_url_not_allowed", "detail": "webhookUrl is not allowed: host_not_public"}] * 4
    assert not WebhookEndpoint.objects.filter(user=user).exists()


def test_a_rebound_name_and_a_vanished_one_look_alike_to_their_owner(make_user, internal_dns):
    """After saving, an attacker points their name at one of ours: the delivery is refused (no
    connection), and what the user can read back (the delivery's ``lastError`` over REST, the
    status event, the endpoint's breaker) is what a name that stopped resolving gives. The detail
    is staff's (the delivery's error_detail)."""
    from broadcast.models import EventLog
    from tests.conftest import auth_api

    rebinder, vanished = make_user("wh-rebind"), make_user("wh-vanish")
    set_url(rebinder, "http://hook.rebind.example/")
    assert WebhookEndpoint.objects.filter(user=rebinder).exists()  # public when saved
    WebhookEndpoint.objects.create(user=vanished, url="http://gone.example/", secret="s" * 20)
    preferences_set(user=vanished, categories={"orders": {"in_app": False, "webhook": True}})
    internal_dns.rebound = True
    deliveries = {user.pk: order_executed(user) for user in (rebinder, vanished)}
    run_ready()

    seen = {}
    for user in (rebinder, vanished):
        body = auth_api(user).get("/api/notifications").json()
        [listed] = body["results"]
        endpoint = WebhookEndpoint.objects.get(user=user)
        seen[user.pk] = (listed["deliveries"], endpoint.failures, endpoint.open_until is not None)
        assert "10.20.30.40" not in str(body)
        assert "10.20.30.40" not in str(list(EventLog.objects.filter(user=user).values_list("payload", flat=True)))
    assert seen[rebinder.pk] == seen[vanished.pk]
    assert seen[rebinder.pk][0] == [
        {"method": "webhook", "status": "pending", "attempts": 1, "lastError": "host_not_public"}
    ]
    detail = Delivery.objects.get(pk=deliveries[rebinder.pk].pk).error_detail
    assert "10.20.30.40" in detail  # staff see why


def test_webhook_url_saves_are_rate_limited_per_user(make_user, settings, receiver):
    """Each save of a URL is a lookup on our resolver and a new URL resets the breaker: a user gets
    NOTIFY_WEBHOOK_URL_RATE of them (refused ones count), then 429 ``throttled`` with Retry-After
    and nothing changes; their other preferences, clearing the URL, and another user go on."""
    from tests.conftest import auth_api

    settings.AXISOR_NOTIFICATIONS = {**settings.AXISOR_NOTIFICATIONS, "WEBHOOK_URL_RATE": "3/h"}
    allow(settings, receiver.server_port)
    mallory, carol = make_user("wh-cycler"), make_user("wh-calm")
    client = auth_api(mallory)
    good = f"http://127.0.0.1:{receiver.server_port}"

    def save(user_client, url):
        return user_client.put(
            "/api/notifications/preferences", {"webhookUrl": url, "webhookSecret": "s" * 20}, format="json"
        )

    assert [save(client, url).status_code for url in (f"{good}/1", "http://localhost/", f"{good}/2")] == [
        200,
        400,
        200,
    ]
    refused = save(client, f"{good}/3")
    assert refused.status_code == 429 and refused.json()["code"] == "throttled"
    assert 1 <= int(refused["Retry-After"]) <= 3600
    assert WebhookEndpoint.objects.get(user=mallory).url == f"{good}/2"  # unchanged
    switches = client.put("/api/notifications/preferences", {"categories": {"orders": {"email": True}}}, format="json")
    assert switches.status_code == 200 and switches.json()["categories"]["orders"]["email"] is True
    assert client.put("/api/notifications/preferences", {"webhookUrl": None}, format="json").status_code == 200
    assert save(auth_api(carol), f"{good}/carol").status_code == 200


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"webhookUrl": "https://example.com/" + "a" * 481, "webhookSecret": "s" * 20}, "webhookUrl", "max_length"),
        ({"webhookUrl": "https://example.com/h", "webhookSecret": "s" * 129}, "webhookSecret", "max_length"),
        ({"webhookUrl": "https://example.com/h", "webhookSecret": "s" * 15}, "webhookSecret", "min_length"),
        ({"webhookUrl": "https://example.com/h"}, "webhookSecret", "invalid"),
        ({"webhookUrl": "javascript:alert(1)", "webhookSecret": "s" * 20}, "webhookUrl", "invalid"),
        ({"webhookUrl": ["https://example.com/h"], "webhookSecret": "s" * 20}, "webhookUrl", "invalid"),
        ({"categories": {"gossip": {"webhook": True}}}, "categories", "invalid"),
        ({"webhookSecret": "s" * 20}, "webhookSecret", "invalid"),  # a secret alone was ignored: not rotated
        ({"webhookUrl": None, "webhookSecret": "s" * 20}, "webhookSecret", "invalid"),
    ],
)
def test_webhook_sizes_and_shapes_a_user_sends_are_bounded(make_user, body, field, code):
    """Every size a user controls is capped before anything is looked up or stored: the URL (500
    characters), the secret (16 to 128), the shapes; one endpoint per user (a second save replaces
    it). Each refusal is a 400 ``validation_error`` naming the field, and changes nothing."""
    from tests.conftest import auth_api

    user = make_user(f"wh-size-{field}-{code}")
    resp = auth_api(user).put("/api/notifications/preferences", body, format="json")
    assert resp.status_code == 400 and resp.json()["code"] == "validation_error"
    assert resp.json()["fields"][field][0]["code"] == code
    assert not WebhookEndpoint.objects.filter(user=user).exists() and not user.notification_preferences.exists()


def test_one_endpoint_per_user_a_second_save_replaces_it(make_user, settings, receiver):
    allow(settings, receiver.server_port)
    user = make_user("wh-one")
    for path in ("a", "b", "c"):
        set_url(user, f"http://127.0.0.1:{receiver.server_port}/{path}")
    assert list(WebhookEndpoint.objects.filter(user=user).values_list("url", flat=True)) == [
        f"http://127.0.0.1:{receiver.server_port}/c"
    ]
