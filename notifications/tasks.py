"""Delivery jobs, run by the background worker (``core/worker.py``), and the state changes of a
delivery attempt (claim, outcome, retry), each in its own transaction.

A notification's jobs are enqueued in the transaction that creates it (``enqueue_deliveries``), so a
rolled-back notification has none and a committed one always has them. A failed attempt enqueues
its retry, with exponential backoff, in the transaction that records it. A worker that dies
mid-attempt leaves its claim to lapse; the delivery sweep then enqueues the delivery again, and
if that was its last allowed attempt (``MAX_ATTEMPTS``) it ends ``failed`` with ``attempt_lost``
instead of a further attempt. The outside world may see an attempt twice (receivers drop duplicates
by ``webhook-id``); our records end ``delivered``/``sent`` or ``failed`` exactly once.

Webhook attempts run on the worker's ``outbound`` queue (at most ``OUTBOUND_THREADS`` of its job
threads), at most ``PER_USER_CONCURRENCY`` of one user's at once, and behind a circuit breaker per
endpoint: an attempt that gets no answer opens it, and the user's other deliveries then wait,
spending no attempt, until its time is up; one attempt at a time then probes the endpoint until it
answers. An endpoint that answers, but slowly (after ``WEBHOOK_SLOW_SECONDS``, half the outbound
timeout), gets one attempt at a time too, until an attempt answers fast. And a free outbound slot
takes the attempt of the user with the fewest attempts in flight, then of the one whose last attempt
began longest ago (``rank_outbound``), not the oldest job: another user's webhook waits behind at
most one attempt of each slow user, however long their queues. So a hanging or slow endpoint costs
its owner's deliveries, not everyone's.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable
from datetime import timedelta
from typing import Any, TypeGuard

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_tasks import task
from django_tasks_db.models import DBTaskResult

from core.worker import OUTBOUND_QUEUE

from .delivery import SENDERS, DeliveryError, in_app_statuses
from .models import Delivery, DeliveryStatus, Method, WebhookEndpoint
from .signals import delivery_changed

logger = logging.getLogger(__name__)


def conf(name: str):
    return settings.AXISOR_NOTIFICATIONS[name]


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(conf("BACKOFF_MAX_SECONDS"), conf("BACKOFF_BASE_SECONDS") * 2 ** (attempts - 1)))


# The endpoint did not answer: these open its circuit breaker. An answer, even an error status,
# closes it (an endpoint that answers at once holds no worker thread for long). A host that does not
# resolve to a public address (``host_not_public``: no address, or a private one) is one: were it
# not, the breaker would tell its owner which of the two it was (core.outbound.PUBLIC_CODES).
NO_ANSWER = frozenset({"timeout", "refused", "connection_error", "tls_error", "dns_error", "host_not_public"})
# The last allowed attempt began and never recorded its outcome (its worker died; the claim lapsed).
ATTEMPT_LOST = "attempt_lost"


def slow_seconds() -> float:
    """An attempt answered after longer than this is slow (the endpoint then gets one at a time)."""
    outbound: dict[str, Any] = settings.AXISOR_OUTBOUND
    return float(conf("WEBHOOK_SLOW_SECONDS") or outbound["TIMEOUT_SECONDS"] / 2)


# ---- jobs ------------------------------------------------------------------------------------


@task()
def deliver_in_app(delivery_ids: list[int]) -> int:
    """In-app deliveries in bulk: ``delivered`` where the user has a live socket, else ``sent``."""
    claimed = _claim_many(delivery_ids)
    if not claimed:
        return 0
    statuses = in_app_statuses(claimed)
    # One transaction each, as the other writers of a user's stream do: one for the whole batch
    # would hold several users' seq rows at once, in delivery order, and could deadlock with a
    # fill or a broadcast taking them in user order.
    for delivery in claimed:
        _finish(delivery, status=statuses[delivery.pk])
    return len(claimed)


@task()
def deliver(delivery_id: int) -> str:
    """One email or webhook attempt."""
    delivery = _claim(delivery_id)
    if delivery is None:
        return "skipped"
    began = time.monotonic()
    try:
        status = SENDERS[delivery.method](delivery)
    except Exception as exc:
        if not isinstance(exc, DeliveryError):
            logger.exception("delivery %s attempt %s: unexpected error", delivery.pk, delivery.attempts)
            exc = DeliveryError("internal_error", f"{type(exc).__name__}: {exc}")
        final = exc.final or delivery.attempts >= conf("MAX_ATTEMPTS")
        logger.warning("delivery %s attempt %s failed: %s (%s)", delivery.pk, delivery.attempts, exc.code, exc.detail)
        retry_in = None if final else backoff(delivery.attempts)
        _finish(delivery, code=exc.code, detail=exc.detail, retry_in=retry_in, took=time.monotonic() - began)
        return exc.code
    _finish(delivery, status=status, took=time.monotonic() - began)
    return status


@task()
def wake_webhooks(user_id: int) -> int:
    """The user's endpoint breaker's time is up: hand their waiting webhook deliveries to attempts
    (one, the probe, while the endpoint has failures). Returns how many."""
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.select_for_update().filter(user_id=user_id).first()
        if _breaker_open(endpoint, timezone.now()):
            return 0  # opened again meanwhile: its own wake job is scheduled
        return _wake_waiting(user_id, endpoint)


def _enqueue(pk: int, method: str, at) -> None:
    if method == Method.WEBHOOK:
        deliver.using(queue_name=OUTBOUND_QUEUE, run_after=at).enqueue(pk)
    else:
        deliver.using(run_after=at).enqueue(pk)


def enqueue_deliveries(deliveries: Iterable[Delivery]) -> None:
    """The jobs for these deliveries, in the caller's transaction: in-app ones in batches, the
    others one job each (each may wait on the network)."""
    in_app: list[int] = []
    others: list[Delivery] = []
    for d in deliveries:
        if d.method == Method.IN_APP:
            in_app.append(d.pk)
        else:
            others.append(d)
    # Every job gets a time: the database backend runs timed jobs before untimed ones, so untimed
    # new jobs would wait behind every retry. With a time each, jobs run first come, first served.
    now = timezone.now()
    batch = conf("BATCH")
    for start in range(0, len(in_app), batch):
        deliver_in_app.using(run_after=now).enqueue(in_app[start : start + batch])
    for d in others:
        _enqueue(d.pk, d.method, now)


def _enqueue_one(delivery: Delivery, *, at=None) -> None:
    at = at or timezone.now()
    if delivery.method == Method.IN_APP:
        deliver_in_app.using(run_after=at).enqueue([delivery.pk])
    else:
        _enqueue(delivery.pk, delivery.method, at)


def sweep_deliveries() -> int:
    """Enqueue again the deliveries whose worker died: a lapsed claim, or due for longer than a
    claim lasts and never claimed (a worker died between taking the job and claiming it; a backlog
    that old only gets a second job, which finds the delivery done or held). Returns how many (a
    periodic job of the worker, under a lease)."""
    now = timezone.now()
    lost_after = timedelta(seconds=conf("CLAIM_SECONDS"))
    with transaction.atomic():
        lapsed = list(
            Delivery.objects.select_for_update(skip_locked=True).filter(
                status=DeliveryStatus.PENDING, claimed_until__lt=now
            )[:500]
        )
        lost = list(
            Delivery.objects.select_for_update(skip_locked=True).filter(
                status=DeliveryStatus.PENDING, claimed_until__isnull=True, next_attempt_at__lt=now - lost_after
            )[:500]
        )
        for d in lapsed:
            if _out_of_attempts(d):
                # Said when the delivery is attempted no more: its last attempt's claim lapsed
                # (_claim ends it). Not on an earlier attempt: that one is simply made again.
                d.last_error = ATTEMPT_LOST
                d.error_detail = f"attempt {d.attempts}: its worker stopped before recording the outcome"
        for d in lapsed + lost:
            d.claimed_until = None
            d.next_attempt_at = now
            _enqueue_one(d)
        Delivery.objects.bulk_update(lapsed + lost, ["claimed_until", "next_attempt_at", "last_error", "error_detail"])
    if lapsed or lost:
        logger.warning("delivery sweep: %d lapsed claim(s), %d lost job(s) enqueued again", len(lapsed), len(lost))
    return len(lapsed) + len(lost)


# ---- attempt state ---------------------------------------------------------------------------


def _claimable(delivery: Delivery | None, now) -> TypeGuard[Delivery]:
    """Still pending and not held by a live attempt (a duplicate job finds it done or held)."""
    return (
        delivery is not None
        and delivery.status == DeliveryStatus.PENDING
        and not (delivery.claimed_until and delivery.claimed_until > now)
    )


def _out_of_attempts(delivery: Delivery) -> bool:
    """Claimable, but its last allowed attempt was made: it began and its worker died before
    recording the outcome (the claim lapsed), so it ends failed rather than attempt MAX+1."""
    return delivery.attempts >= conf("MAX_ATTEMPTS")


def _fail_lost(delivery: Delivery) -> None:
    """End a delivery that is out of attempts (_out_of_attempts), locked by the caller: ``failed``
    with ``attempt_lost`` (what the sweep recorded, or a lapsed claim found before the sweep), or
    with its last error where the attempts allowed were lowered since."""
    if delivery.claimed_until is not None or not delivery.last_error:
        delivery.last_error = ATTEMPT_LOST
        delivery.error_detail = f"attempt {delivery.attempts}: its worker stopped before recording the outcome"
    delivery.status, delivery.claimed_until = DeliveryStatus.FAILED, None
    delivery.save(update_fields=["status", "claimed_until", "last_error", "error_detail", "updated_at"])
    logger.warning(
        "delivery %s failed: no attempt left after %s (%s)", delivery.pk, delivery.attempts, delivery.last_error
    )
    delivery_changed.send(sender=Delivery, delivery=delivery)


def _take(delivery: Delivery, now) -> None:
    delivery.attempts += 1
    delivery.claimed_until = now + timedelta(seconds=conf("CLAIM_SECONDS"))


@transaction.atomic
def _claim_many(delivery_ids: list[int]) -> list[Delivery]:
    now = timezone.now()
    rows = Delivery.objects.select_for_update(skip_locked=True).filter(pk__in=delivery_ids).order_by("pk")
    claimed = []
    for d in rows:
        if _claimable(d, now):
            if _out_of_attempts(d):
                _fail_lost(d)
            else:
                claimed.append(d)
    for d in claimed:
        _take(d, now)
    Delivery.objects.bulk_update(claimed, ["attempts", "claimed_until"])
    ids = [d.pk for d in claimed]
    return list(Delivery.objects.select_related("notification").filter(pk__in=ids).order_by("pk"))


@transaction.atomic
def _claim(delivery_id: int) -> Delivery | None:
    now = timezone.now()
    # A webhook's endpoint row first, then the delivery's, as _finish takes them: in the other order
    # a claim and an attempt of the same delivery finishing deadlocked (the second review).
    found = Delivery.objects.filter(pk=delivery_id).values_list("method", "notification__user_id").first()
    if found is None:
        return None
    method, user_id = found
    endpoint = None
    if method == Method.WEBHOOK:
        # The user's endpoint row serialises their claims, so the cap holds across workers.
        endpoint = WebhookEndpoint.objects.select_for_update().filter(user_id=user_id).first()
    delivery = Delivery.objects.select_for_update().filter(pk=delivery_id).first()
    if not _claimable(delivery, now):
        return None
    if _out_of_attempts(delivery):
        _fail_lost(delivery)
        if method == Method.WEBHOOK and not _breaker_open(endpoint, now):
            # The lost attempt never woke the deliveries that waited for it.
            _wake_waiting(user_id, endpoint, exclude=delivery.pk)
        return None
    if method == Method.WEBHOOK:
        if endpoint is not None and endpoint.open_until is not None and endpoint.open_until > now:
            # Not an attempt: the endpoint did not answer lately. The wake job its breaker
            # scheduled (_record_answer) hands this delivery on when the breaker's time is up.
            delivery.next_attempt_at = endpoint.open_until
            delivery.save(update_fields=["next_attempt_at", "updated_at"])
            return None
        in_flight = Delivery.objects.filter(
            notification__user_id=user_id,
            method=Method.WEBHOOK,
            status=DeliveryStatus.PENDING,
            claimed_until__gt=now,
        )
        limit = _user_limit(endpoint)
        # An attempt in flight for longer than a slow answer takes: the endpoint is slow already.
        began_before = now - timedelta(seconds=slow_seconds()) + timedelta(seconds=conf("CLAIM_SECONDS"))
        if in_flight.filter(claimed_until__lt=began_before).exists():
            limit = 1
        if in_flight.count() >= limit:
            # Not an attempt, and no polling: the attempt in flight that finishes first enqueues
            # this user's waiting deliveries (_finish); the sweep is the backstop.
            delivery.next_attempt_at = now
            delivery.save(update_fields=["next_attempt_at", "updated_at"])
            return None
    _take(delivery, now)
    delivery.save(update_fields=["attempts", "claimed_until", "updated_at"])
    if endpoint is not None:
        endpoint.last_attempt_at = now  # its place in the outbound order (rank_outbound)
        endpoint.save(update_fields=["last_attempt_at"])
    return Delivery.objects.select_related("notification__user__webhook").get(pk=delivery.pk)


@transaction.atomic
def _finish(
    claimed: Delivery, *, status: str = "", code: str = "", detail: str = "", retry_in=None, took: float = 0.0
) -> None:
    """Record the outcome of the attempt ``claimed`` made (in ``took`` seconds): ``status`` on
    success; else the error and a retry after ``retry_in``, or ``failed`` (``retry_in`` None).
    Only the latest attempt may record: one that outlived its claim (and was made again) is
    dropped, as is one on a delivery someone else finished."""
    endpoint = None
    if claimed.method == Method.WEBHOOK:
        # Serialised with the user's claims (_claim), so a delivery that found the user busy is
        # either seen waiting here or sees this attempt finished.
        endpoint = WebhookEndpoint.objects.select_for_update().filter(user_id=claimed.notification.user_id).first()
        if endpoint is not None:
            _record_answer(endpoint, claimed, code="" if status else code, took=took)
    delivery = Delivery.objects.select_for_update().select_related("notification").get(pk=claimed.pk)
    if delivery.status != DeliveryStatus.PENDING or delivery.attempts != claimed.attempts:
        return
    delivery.claimed_until = None
    if status:
        delivery.status, delivery.delivered_at, delivery.last_error = status, timezone.now(), ""
    else:
        delivery.last_error, delivery.error_detail = code[:40], detail[:2000]
        if retry_in is None:
            delivery.status = DeliveryStatus.FAILED
        else:
            delivery.next_attempt_at = timezone.now() + retry_in
            _enqueue_one(delivery, at=delivery.next_attempt_at)
    delivery.save()
    if delivery.status != DeliveryStatus.PENDING:
        delivery_changed.send(sender=Delivery, delivery=delivery)
    if delivery.method == Method.WEBHOOK and not _breaker_open(endpoint, timezone.now()):
        _wake_waiting(delivery.notification.user_id, endpoint, exclude=delivery.pk)


def _wake_waiting(user_id: int, endpoint: WebhookEndpoint | None, *, exclude: int | None = None) -> int:
    """A webhook slot of the user is free: enqueue the user's deliveries that found them busy, or
    their breaker open, as many as may go at once. Returns how many."""
    now = timezone.now()
    waiting = Delivery.objects.filter(
        notification__user_id=user_id,
        method=Method.WEBHOOK,
        status=DeliveryStatus.PENDING,
        claimed_until__isnull=True,
        next_attempt_at__lte=now,
    )
    if exclude is not None:
        waiting = waiting.exclude(pk=exclude)
    woken = list(waiting.order_by("next_attempt_at", "pk")[: _user_limit(endpoint)])
    for delivery in woken:
        _enqueue_one(delivery, at=now)
    return len(woken)


# ---- the endpoint's circuit breaker ----------------------------------------------------------


def _breaker_open(endpoint: WebhookEndpoint | None, now) -> bool:
    return endpoint is not None and endpoint.open_until is not None and endpoint.open_until > now


def _user_limit(endpoint: WebhookEndpoint | None) -> int:
    """A user's webhook attempts in flight at once: one (the probe) after the endpoint failed to
    answer, until it answers again; one while it answers slowly, until an answer comes fast."""
    if endpoint is not None and (endpoint.failures or endpoint.slow):
        return 1
    return conf("PER_USER_CONCURRENCY")


def _record_answer(endpoint: WebhookEndpoint, claimed: Delivery, *, code: str, took: float) -> None:
    """What the attempt ``claimed`` made tells of the endpoint (locked by the caller): no answer
    opens its breaker for a backoff that grows with the failures in a row, and schedules the wake
    of the deliveries that will wait meanwhile; an answer closes it, and marks the endpoint slow
    (one attempt at a time) when it came after ``slow_seconds()``, fast again when it came sooner.
    An attempt on a URL the user has since changed tells nothing of the new one."""
    attempted = getattr(claimed.notification.user, "webhook", None)
    if attempted is None or attempted.url != endpoint.url:
        return
    now = timezone.now()
    if code in NO_ANSWER:
        if _breaker_open(endpoint, now):
            return  # an attempt in flight beside this one has opened it already
        endpoint.failures += 1
        endpoint.open_until = now + backoff(endpoint.failures)
        endpoint.save(update_fields=["failures", "open_until"])
        wake_webhooks.using(run_after=endpoint.open_until).enqueue(endpoint.user_id)
        logger.warning(
            "webhook endpoint of user %s: no answer (%s), %d in a row; its deliveries wait until %s",
            endpoint.user_id,
            code,
            endpoint.failures,
            endpoint.open_until.isoformat(),
        )
    elif not code or code.startswith("http_"):
        slow = took > slow_seconds()
        if not (endpoint.failures or endpoint.open_until or endpoint.slow != slow):
            return
        if endpoint.failures or endpoint.open_until:
            logger.info("webhook endpoint of user %s answers again", endpoint.user_id)
        if slow != endpoint.slow:
            logger.info(
                "webhook endpoint of user %s answers %s (%.1f s): %s at a time",
                endpoint.user_id,
                "slowly" if slow else "fast again",
                took,
                "one" if slow else "up to the per-user cap",
            )
        endpoint.failures, endpoint.open_until, endpoint.slow = 0, None, slow
        endpoint.save(update_fields=["failures", "open_until", "slow"])


def endpoint_url_changed(endpoint: WebhookEndpoint) -> int:
    """The user saved a new URL for ``endpoint`` (in the caller's transaction, the row locked):
    what its breaker and slow mark knew was of the old URL, so both are reset, and the user's
    webhook deliveries that wait (for the breaker, a busy slot or a retry's backoff) are due now,
    to the new URL, each keeping its ``webhook-id`` and the attempts it made (none is lost, none
    gains attempts); as many as may go at once are enqueued, the rest follow as those finish.
    Attempts in flight to the old URL end there, and tell nothing of the new one
    (``_record_answer``). Returns how many were enqueued."""
    now = timezone.now()
    endpoint.failures, endpoint.open_until, endpoint.slow = 0, None, False
    endpoint.save(update_fields=["failures", "open_until", "slow"])
    Delivery.objects.filter(
        notification__user_id=endpoint.user_id,
        method=Method.WEBHOOK,
        status=DeliveryStatus.PENDING,
        claimed_until__isnull=True,
        next_attempt_at__gt=now,
    ).update(next_attempt_at=now, updated_at=now)
    return _wake_waiting(endpoint.user_id, endpoint)


# ---- the order of the outbound queue ---------------------------------------------------------


def rank_outbound(jobs: list[DBTaskResult]) -> list[DBTaskResult]:
    """Ready outbound jobs (webhook attempts; oldest first) in the order a free outbound slot takes
    them (core.worker.rank_outbound_by): first the users with the fewest webhook attempts in
    flight, then the users whose last attempt began longest ago (never, first), then the queue's
    order. So a user's backlog, or their slow endpoint, does not hold back another user's attempt
    that queued after it: that one goes as soon as one slot is free. A job of a user at their cap
    or behind their breaker still goes when its turn comes, and waits without an attempt
    (``_claim``)."""
    now = timezone.now()
    deliveries = {str(job.pk): pk for job in jobs if (pk := _delivery_of(job)) is not None}
    # Running jobs count from the moment they are taken (the worker serialises the picks), before
    # their claim: two picks in a row must not both go to one user. A job running for longer than
    # a claim lasts belongs to a worker that died.
    running = DBTaskResult.objects.running().filter(
        queue_name=OUTBOUND_QUEUE, started_at__gt=now - timedelta(seconds=conf("CLAIM_SECONDS"))
    )
    started = {pk for job in running.only("id", "task_path", "args_kwargs") if (pk := _delivery_of(job)) is not None}
    owners = dict(
        Delivery.objects.filter(pk__in={*deliveries.values(), *started}).values_list("pk", "notification__user_id")
    )
    users = {owners[pk] for pk in deliveries.values() if pk in owners}
    last = dict(WebhookEndpoint.objects.filter(user_id__in=users).values_list("user_id", "last_attempt_at"))
    claimed = Delivery.objects.filter(
        notification__user_id__in=users, method=Method.WEBHOOK, status=DeliveryStatus.PENDING, claimed_until__gt=now
    ).values_list("pk", "notification__user_id")
    in_flight = Counter(user for _pk, user in {*claimed, *((pk, owners[pk]) for pk in started if pk in owners)})

    def order(item: tuple[int, DBTaskResult]) -> tuple[int, float, int]:
        position, job = item
        user = owners.get(deliveries.get(str(job.pk), 0))
        if user is None:  # not an attempt we know of (or its delivery is gone): in the queue's order
            return (0, 0.0, position)
        began = last.get(user)
        return (in_flight[user], began.timestamp() if began else 0.0, position)

    return [job for _position, job in sorted(enumerate(jobs), key=order)]


def _delivery_of(job: DBTaskResult) -> int | None:
    """The delivery a ``deliver`` job attempts; None for any other job."""
    args = job.args_kwargs.get("args") if isinstance(job.args_kwargs, dict) else None
    if job.task_path == deliver.module_path and args and type(args[0]) is int:
        return args[0]
    return None
