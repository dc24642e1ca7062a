"""A hanging or slow webhook endpoint hurts only its owner: the endpoint's circuit breaker, the
one-at-a-time rule for slow endpoints, the outbound queue's order (least recently served user first)
and the worker's cap on outbound threads, through a real worker, real PostgreSQL and real local
receivers."""

from __future__ import annotations

import asyncio
import http.server
import socket
import threading
import time
from datetime import timedelta

import pytest
from django.db import close_old_connections, connection
from django.db.models import F
from django_tasks_db.models import DBTaskResult

from core.worker import OUTBOUND_QUEUE, Worker, job_runner, run_one, run_ready
from notifications.models import Delivery, DeliveryStatus, WebhookEndpoint
from notifications.services import notification_create, preferences_set
from notifications.tasks import wake_webhooks
from tests.polling import until_sync


class Hanging:
    """Accepts every connection, reads the request and never answers; counts the attempts it got
    and how many our side held open at once (a connection counts until the client gives up)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.accepted = self.open = self.most_open = 0
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            with self.lock:
                self.accepted += 1
                self.open += 1
                self.most_open = max(self.most_open, self.open)
            threading.Thread(target=self.hold, args=(conn,), daemon=True).start()

    def hold(self, conn: socket.socket) -> None:
        with conn:
            try:
                while conn.recv(65536):  # the request, then EOF when the client gives up
                    pass
            except OSError:
                pass
        with self.lock:
            self.open -= 1

    def close(self) -> None:
        self.sock.close()


class Good(http.server.BaseHTTPRequestHandler):
    arrived = threading.Event()
    ids: list[str] = []

    def do_POST(self):  # http.server's method name
        self.rfile.read(int(self.headers["Content-Length"]))
        Good.ids.append(self.headers["webhook-id"])
        self.send_response(204)
        self.end_headers()
        Good.arrived.set()

    def log_message(self, *args):
        pass


@pytest.fixture
def good_server():
    Good.arrived, Good.ids = threading.Event(), []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Good)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def allow(settings, *ports: int) -> None:
    hosts = settings.AXISOR_OUTBOUND["ALLOW_HOSTS"] | {f"127.0.0.1:{p}" for p in ports}
    settings.AXISOR_OUTBOUND = {**settings.AXISOR_OUTBOUND, "ALLOW_HOSTS": hosts, "TIMEOUT_SECONDS": 1.0}


def hooked(make_user, name: str, url: str):
    user = make_user(name)
    preferences_set(
        user=user, categories={"orders": {"in_app": False, "webhook": True}}, webhook={"url": url, "secret": "s" * 20}
    )
    return user


def order_executed(user) -> Delivery:
    n = notification_create(user=user, title="Order executed", message="BUY 1 BTC_USD", category="orders")
    return n.deliveries.get()


class InThread:
    """The real worker (its job threads, the outbound cap) on an event loop of its own."""

    def __init__(self, threads: int) -> None:
        self.worker = Worker(periodic=[], threads=threads)
        self.ready = threading.Event()
        self.thread = threading.Thread(target=asyncio.run, args=(self.main(),), daemon=True)

    async def main(self) -> None:
        self.loop, self.stopping = asyncio.get_running_loop(), asyncio.Event()
        self.ready.set()
        await self.worker.run(self.stopping)

    def __enter__(self) -> InThread:
        self.thread.start()
        assert self.ready.wait(timeout=10)
        return self

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.stopping.set)
        self.thread.join(timeout=30)  # each job thread ends its turn: an attempt lasts at most 1 s
        assert not self.thread.is_alive()


@pytest.mark.django_db(transaction=True)
def test_two_hanging_endpoints_do_not_hold_up_another_users_webhook(make_user, settings, good_server):
    """The reviewer's attack: bob's and mallory's endpoints never answer, each has ten order
    executions queued ahead of carol's. Carol's webhook is delivered after at most one attempt per
    slot of theirs, while their endpoints still hang, and webhook attempts never held more than half
    of the worker's threads."""
    settings.AXISOR_NOTIFICATIONS = {
        **settings.AXISOR_NOTIFICATIONS,
        "PER_USER_CONCURRENCY": 2,
        "BACKOFF_BASE_SECONDS": 60,  # no retry, and no breaker closing, while the test runs
    }
    settings.AXISOR_WORKER = {**settings.AXISOR_WORKER, "POLL_SECONDS": 0.05, "OUTBOUND_THREADS": 0}
    hanging = Hanging()
    allow(settings, hanging.port, good_server.server_port)
    bob = hooked(make_user, "bob", f"http://127.0.0.1:{hanging.port}/bob")
    mallory = hooked(make_user, "mallory", f"http://127.0.0.1:{hanging.port}/mallory")
    carol = hooked(make_user, "carol", f"http://127.0.0.1:{good_server.server_port}/carol")
    for _ in range(10):
        order_executed(bob)
        order_executed(mallory)
    victim = order_executed(carol)  # queued behind all twenty

    try:
        with InThread(threads=4):
            assert Good.arrived.wait(timeout=60), "carol's webhook never arrived"
            before_carol = hanging.accepted
        # The worker has stopped: every attempt it began has ended.
        attempts_on_hanging, most_open = hanging.accepted, hanging.most_open
    finally:
        hanging.close()

    victim.refresh_from_db()
    assert victim.status == DeliveryStatus.DELIVERED and victim.attempts == 1
    assert Good.ids == [f"dlv_{victim.pk}"]
    # One round of each attacker's per-user slots at most, not their whole queue.
    assert before_carol <= 2 * 2, f"{before_carol} attempts on the hanging endpoints before carol's"
    assert attempts_on_hanging <= 2 * 2
    assert most_open <= 2, f"{most_open} of 4 job threads held by hanging webhooks at once"
    assert sum(Delivery.objects.exclude(pk=victim.pk).values_list("attempts", flat=True)) == attempts_on_hanging
    for attacker in (bob, mallory):
        endpoint = WebhookEndpoint.objects.get(user=attacker)
        assert endpoint.failures == 1 and endpoint.open_until is not None
        theirs = Delivery.objects.filter(notification__user=attacker)
        assert set(theirs.values_list("status", flat=True)) == {DeliveryStatus.PENDING}  # nothing lost
        # The rest wait for the breaker, having spent no attempt, and its wake job is due with it.
        waiting = theirs.filter(attempts=0)
        assert waiting.count() >= 8
        assert max(waiting.values_list("next_attempt_at", flat=True)) <= endpoint.open_until
        wake = DBTaskResult.objects.get(task_path="notifications.tasks.wake_webhooks", args_kwargs__args=[attacker.pk])
        assert wake.run_after == endpoint.open_until


def time_passes(seconds: float) -> None:
    """Everything scheduled comes ``seconds`` nearer: breakers, retries, deferred deliveries, jobs."""
    delta = timedelta(seconds=seconds)
    WebhookEndpoint.objects.exclude(open_until=None).update(open_until=F("open_until") - delta)
    Delivery.objects.update(next_attempt_at=F("next_attempt_at") - delta)
    DBTaskResult.objects.exclude(run_after=None).update(run_after=F("run_after") - delta)


@pytest.mark.django_db
def test_breaker_defers_without_attempts_probes_once_and_delivers_everything(make_user, settings):
    """An endpoint that refuses opens its breaker: the owner's other deliveries wait, spending no
    attempt; when its time is up one probe goes, its success closes the breaker and the rest go;
    every delivery ends delivered with the attempts it really made."""
    settings.AXISOR_NOTIFICATIONS = {**settings.AXISOR_NOTIFICATIONS, "BACKOFF_BASE_SECONDS": 60}
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there yet: refused
    allow(settings, port)
    user = hooked(make_user, "dana", f"http://127.0.0.1:{port}/h")
    first, second, third = (order_executed(user) for _ in range(3))

    assert run_ready(limit=1) == 1  # the first attempt: refused
    endpoint = WebhookEndpoint.objects.get(user=user)
    assert endpoint.failures == 1 and endpoint.open_until is not None
    first.refresh_from_db()
    assert (first.status, first.attempts, first.last_error) == (DeliveryStatus.PENDING, 1, "refused")
    assert run_ready() == 2  # the other two jobs find the breaker open ...
    for waiting in (second, third):
        waiting.refresh_from_db()  # ... and wait for it without an attempt
        assert (waiting.attempts, waiting.next_attempt_at) == (0, endpoint.open_until)
    assert run_ready() == 0  # no polling meanwhile

    Good.arrived, Good.ids = threading.Event(), []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Good)  # the endpoint is back
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        time_passes(61)  # the breaker's time is up; the first delivery's retry is due too
        run_ready()
    finally:
        server.shutdown()
        server.server_close()
    endpoint.refresh_from_db()
    assert (endpoint.failures, endpoint.open_until) == (0, None)  # the answer closed it
    attempts = {d.pk: d.attempts for d in Delivery.objects.filter(status=DeliveryStatus.DELIVERED)}
    assert attempts == {first.pk: 2, second.pk: 1, third.pk: 1}
    assert sorted(Good.ids) == sorted(f"dlv_{d.pk}" for d in (first, second, third))  # each once
    assert wake_webhooks.call(user.pk) == 0  # nothing left waiting


@pytest.mark.django_db
def test_outbound_jobs_take_only_their_threads(make_user, settings):
    """With every outbound slot taken, a thread takes the next other job, even a younger one."""
    allow(settings, 9)
    user = hooked(make_user, "erin", "http://127.0.0.1:9/h")
    webhook = order_executed(user)
    later = notification_create(user=user, title="Deposit", message="m", category="account").deliveries.get()
    assert DBTaskResult.objects.get(args_kwargs__args=[webhook.pk]).queue_name == OUTBOUND_QUEUE
    slots = threading.BoundedSemaphore(1)
    assert slots.acquire(blocking=False)  # another thread's webhook attempt holds the only slot
    assert run_one(job_runner("t"), slots)
    later.refresh_from_db()
    webhook.refresh_from_db()
    assert later.status == DeliveryStatus.SENT and webhook.attempts == 0
    assert not run_one(job_runner("t"), slots)  # only the webhook is left, and it must wait
    slots.release()
    assert run_one(job_runner("t"), slots)  # a slot is free: the webhook goes
    webhook.refresh_from_db()
    assert webhook.attempts == 1
    assert slots.acquire(blocking=False)  # and its slot came back


def someone_waits_on_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] > 0


@pytest.mark.django_db(transaction=True)
def test_a_claim_and_a_finishing_attempt_of_one_delivery_do_not_deadlock(make_user, settings, monkeypatch):
    """The second review: _claim locked the delivery, then the endpoint; _finish the endpoint, then
    the delivery. An attempt finishing while a sweep's job claimed the same delivery again (its
    claim lapsed) deadlocked, and PostgreSQL aborted one. Now both take the endpoint first."""
    from notifications import tasks

    hanging = Hanging()
    allow(settings, hanging.port)
    delivery = order_executed(hooked(make_user, "dora", f"http://127.0.0.1:{hanging.port}/dora"))
    claimed = tasks._claim(delivery.pk)
    assert claimed is not None
    Delivery.objects.filter(pk=delivery.pk).update(claimed_until=F("updated_at") - timedelta(hours=1))  # lapsed
    holding, go_on = threading.Event(), threading.Event()
    record = tasks._record_answer

    def slow_record(*args, **kwargs):  # _finish holds the endpoint row here
        record(*args, **kwargs)
        holding.set()
        assert go_on.wait(10)

    monkeypatch.setattr(tasks, "_record_answer", slow_record)
    outcome: dict[str, object] = {}

    def claim_again() -> None:
        assert holding.wait(10)
        try:
            outcome["claim"] = tasks._claim(delivery.pk)
        except Exception as exc:  # noqa: BLE001 - the deadlock PostgreSQL reports
            outcome["claim"] = exc
        finally:
            close_old_connections()

    second = threading.Thread(target=claim_again)
    second.start()

    def finish() -> None:
        try:
            tasks._finish(claimed, code="timeout", retry_in=timedelta(seconds=60))
        finally:
            close_old_connections()

    finishing = threading.Thread(target=finish)
    finishing.start()
    assert holding.wait(10)
    until_sync(someone_waits_on_a_lock, what="the second claim waiting on a row lock")
    go_on.set()
    finishing.join(10)
    second.join(10)
    assert not isinstance(outcome["claim"], Exception), outcome
    hanging.close()


class Receivers(http.server.ThreadingHTTPServer):
    """One local receiver for several users (the path names the user): it answers 204 to each,
    after ``delays[user]`` seconds (a slow endpoint, inside the attempt's timeout). It logs, in
    order, each request's start (with how many of that user's requests were open at that moment,
    itself included) and end, and when each arrived and when each was enqueued (the test's
    measurement)."""

    def __init__(self, delays: dict[str, float]) -> None:
        self.delays = delays
        self.lock = threading.Lock()
        self.log: list[tuple[str, str, int]] = []  # ("start" | "end", user, open requests of the user)
        self.open: dict[str, int] = dict.fromkeys(delays, 0)
        self.arrived: dict[str, list[float]] = {user: [] for user in delays}
        self.first = {user: threading.Event() for user in delays}
        super().__init__(("127.0.0.1", 0), self.Handler)
        self.daemon_threads = True
        threading.Thread(target=self.serve_forever, daemon=True).start()

    class Handler(http.server.BaseHTTPRequestHandler):
        server: Receivers

        def do_POST(self):  # http.server's method name
            server, user = self.server, self.path.strip("/")
            self.rfile.read(int(self.headers["Content-Length"]))
            with server.lock:
                server.open[user] += 1
                server.log.append(("start", user, server.open[user]))
                server.arrived[user].append(time.monotonic())
            threading.Event().wait(server.delays[user])  # a slow endpoint: the answer takes this long
            with server.lock:
                server.open[user] -= 1
                server.log.append(("end", user, server.open[user]))
            self.send_response(204)
            self.end_headers()
            server.first[user].set()

        def log_message(self, *args):
            pass

    def starts(self, user: str, before: tuple[str, str, int] | None = None, kind: str = "start") -> int:
        """The requests of ``user`` that started (or ``kind="end"``: ended) before the entry
        ``before`` of the log (all if None)."""
        with self.lock:
            log = self.log[: self.log.index(before)] if before else self.log
            return sum(1 for what, who, _open in log if what == kind and who == user)

    def most_open(self, user: str, after: int = 0) -> int:
        """The most requests of ``user`` open at once, counting from log entry ``after`` on."""
        with self.lock:
            return max((n for kind, who, n in self.log[after:] if kind == "start" and who == user), default=0)

    def close(self) -> None:
        self.shutdown()
        self.server_close()


SLOW = 0.6  # answers after 0.6 s: inside the 1 s timeout of these tests, slower than half of it


@pytest.mark.django_db(transaction=True)
def test_two_slow_endpoints_do_not_hold_up_another_users_webhook(make_user, settings):
    """Last round's review: bob's and mallory's endpoints answer, but only just inside the timeout,
    and each has ten order executions queued ahead of carol's. Carol's attempt starts after at most
    one attempt of each of theirs, not behind their queues (first come, first served took all
    twenty first); neither of them ever has two attempts open at once; and everything is
    delivered, each once."""
    settings.AXISOR_NOTIFICATIONS = {**settings.AXISOR_NOTIFICATIONS, "PER_USER_CONCURRENCY": 2}
    settings.AXISOR_WORKER = {**settings.AXISOR_WORKER, "POLL_SECONDS": 0.05, "OUTBOUND_THREADS": 0}
    receivers = Receivers({"bob": SLOW, "mallory": SLOW, "carol": 0.0})
    allow(settings, receivers.server_port)
    url = f"http://127.0.0.1:{receivers.server_port}"
    bob, mallory, carol = (hooked(make_user, name, f"{url}/{name}") for name in ("bob", "mallory", "carol"))
    for _ in range(10):
        order_executed(bob)
        order_executed(mallory)
    enqueued = time.monotonic()
    order_executed(carol)  # queued behind all twenty

    try:
        with InThread(threads=4):  # two outbound threads
            assert receivers.first["carol"].wait(timeout=60), "carol's webhook never arrived"
            with receivers.lock:
                carol_started = next(entry for entry in receivers.log if entry[1] == "carol")
            until_sync(
                lambda: Delivery.objects.filter(status=DeliveryStatus.PENDING).count() == 0,
                timeout=60,
                what="every delivery done",
            )
    finally:
        receivers.close()
    print(f"\ncarol's webhook arrived {receivers.arrived['carol'][0] - enqueued:.2f} s after it was enqueued")

    # Carol's attempt waited behind at most one attempt of each slow user (the first round, made
    # before anyone knew they were slow), not behind their queues; it began before the third of
    # either's began.
    for slow_user in ("bob", "mallory"):
        assert receivers.starts(slow_user, before=carol_started, kind="end") <= 1, receivers.log
        assert receivers.starts(slow_user, before=carol_started) <= 2, receivers.log
    # One outbound thread each, ever: a free thread went to someone with nothing in flight first,
    # and once an attempt had answered slowly, one at a time.
    assert receivers.most_open("bob") == 1 and receivers.most_open("mallory") == 1
    # Nothing lost, nothing twice, no attempt spent waiting.
    assert set(Delivery.objects.values_list("status", "attempts")) == {(DeliveryStatus.DELIVERED, 1)}
    assert receivers.starts("bob") == receivers.starts("mallory") == 10 and receivers.starts("carol") == 1
    for user in (bob, mallory):
        endpoint = WebhookEndpoint.objects.get(user=user)
        assert endpoint.slow and endpoint.failures == 0 and endpoint.open_until is None
    assert not WebhookEndpoint.objects.get(user=carol).slow


@pytest.mark.django_db(transaction=True)
def test_a_slow_endpoint_holds_one_outbound_thread(make_user, settings):
    """Bob alone, with eight deliveries, three outbound threads and a per-user cap of two: once an
    attempt has answered slowly, his attempts go one at a time (before: two at once, all along). A
    fast answer gives him his cap again."""
    settings.AXISOR_NOTIFICATIONS = {**settings.AXISOR_NOTIFICATIONS, "PER_USER_CONCURRENCY": 2}
    settings.AXISOR_WORKER = {**settings.AXISOR_WORKER, "POLL_SECONDS": 0.05, "OUTBOUND_THREADS": 3}
    receivers = Receivers({"bob": SLOW})
    allow(settings, receivers.server_port)
    bob = hooked(make_user, "bob", f"http://127.0.0.1:{receivers.server_port}/bob")
    for _ in range(8):
        order_executed(bob)

    try:
        with InThread(threads=4):
            until_sync(
                lambda: not Delivery.objects.filter(status=DeliveryStatus.PENDING).exists(),
                timeout=60,
                what="bob's deliveries done",
            )
    finally:
        receivers.close()

    with receivers.lock:
        first_answer = next(n for n, entry in enumerate(receivers.log) if entry[0] == "end")
    assert receivers.most_open("bob", after=first_answer) == 1, receivers.log
    assert set(Delivery.objects.values_list("status", "attempts")) == {(DeliveryStatus.DELIVERED, 1)}
    assert receivers.starts("bob") == 8
    endpoint = WebhookEndpoint.objects.get(user=bob)
    assert endpoint.slow

    # The endpoint is fast again: one answer, and bob has his cap back.
    receivers = Receivers({"bob": 0.0})
    allow(settings, receivers.server_port)
    WebhookEndpoint.objects.filter(user=bob).update(url=f"http://127.0.0.1:{receivers.server_port}/bob")
    try:
        fast = order_executed(bob)
        assert run_ready() == 1
    finally:
        receivers.close()
    fast.refresh_from_db()
    endpoint.refresh_from_db()
    assert fast.status == DeliveryStatus.DELIVERED and not endpoint.slow


@pytest.mark.django_db
def test_a_free_outbound_slot_goes_to_the_user_served_least_recently(make_user, settings, good_server):
    """The queue's order is first come, first served; a free outbound slot takes instead the attempt
    of a user with nothing in flight whose last attempt is oldest (never, first)."""
    allow(settings, good_server.server_port)
    url = f"http://127.0.0.1:{good_server.server_port}"
    bob, carol = hooked(make_user, "bob", f"{url}/bob"), hooked(make_user, "carol", f"{url}/carol")
    bobs = [order_executed(bob) for _ in range(3)]
    carols = order_executed(carol)  # the last in the queue
    run_ready()
    assert Good.ids == [f"dlv_{d.pk}" for d in (bobs[0], carols, bobs[1], bobs[2])]


@pytest.mark.django_db
def test_an_attempt_in_flight_for_longer_than_a_slow_answer_counts_as_slow(make_user, settings):
    """Before any slow answer: while one of the user's attempts has been in flight for longer than
    a slow answer takes, another does not start beside it (it waits, spending no attempt)."""
    from notifications import tasks

    settings.AXISOR_NOTIFICATIONS = {**settings.AXISOR_NOTIFICATIONS, "PER_USER_CONCURRENCY": 2}
    allow(settings, 9)  # slow answers: after half of the 1 s timeout
    user = hooked(make_user, "fay", "http://127.0.0.1:9/fay")
    first, second, third = (order_executed(user) for _ in range(3))
    claimed = tasks._claim(first.pk)
    assert claimed is not None and tasks._claim(second.pk) is not None  # the cap is two
    tasks._finish(claimed, status=DeliveryStatus.DELIVERED)  # the first answered at once
    # The second has been in flight for 0.6 s now, and has not answered.
    Delivery.objects.filter(pk=second.pk).update(claimed_until=F("claimed_until") - timedelta(seconds=0.6))
    assert tasks._claim(third.pk) is None
    third.refresh_from_db()
    assert third.attempts == 0 and third.claimed_until is None
