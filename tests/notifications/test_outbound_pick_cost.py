"""Every outbound pick ranks the ready webhook attempts (notifications.tasks.rank_outbound) under the
worker's pick lock, one pick at a time across workers: what it reads must not grow with a day of
finished job rows, nor with the deliveries pending (a broadcast's, or one user's behind a breaker)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_tasks_db.models import DBTaskResult

from notifications.models import Delivery
from notifications.tasks import rank_outbound
from tests.notifications.test_webhook_fairness import allow, hooked, order_executed

pytestmark = pytest.mark.django_db
TASKS = DBTaskResult._meta.db_table


def scans(window) -> list[str]:
    """The tables rank_outbound reads whole (a sequential scan), per PostgreSQL's plans."""
    with CaptureQueriesContext(connection) as queries:
        rank_outbound(window)
    seq = []
    with connection.cursor() as cursor:
        for query in queries.captured_queries:
            cursor.execute(f"EXPLAIN {query['sql']}")
            seq += [row[0].strip() for row in cursor.fetchall() if "Seq Scan" in row[0]]
    return seq


def test_a_pick_reads_no_finished_job_rows_and_no_pending_backlog(make_user, settings):
    allow(settings, 9)
    users = [hooked(make_user, f"u{i}", f"http://127.0.0.1:9/u{i}") for i in range(3)]
    for user in users:
        order_executed(user)
    window = list(DBTaskResult.objects.ready().filter(queue_name="outbound")[:100])
    with connection.cursor() as cursor:
        # A day of finished outbound jobs: 120,000 rows.
        cursor.execute(
            f"""INSERT INTO {TASKS} (id, status, enqueued_at, started_at, finished_at, args_kwargs, priority,
                task_path, worker_ids, queue_name, backend_name, run_after, return_value,
                exception_class_path, traceback)
            SELECT gen_random_uuid(), 'SUCCESSFUL', now(), now() - interval '1 second' * (g % 80000), now(),
                args_kwargs, priority, task_path, worker_ids, queue_name, backend_name, run_after,
                '"delivered"', '', ''
            FROM {TASKS}, generate_series(1, 40000) g WHERE queue_name = 'outbound'"""
        )
        # 100,000 webhook deliveries of the first user pending (waiting, none claimed).
        cursor.execute(
            """INSERT INTO notifications_notification (user_id, title, message, type, category, data, read,
                created_at)
            SELECT %s, 'backlog', 'm', 'info', 'orders', '{}', false, now() FROM generate_series(1, 100000)""",
            [users[0].pk],
        )
        cursor.execute(
            """INSERT INTO notifications_delivery (notification_id, method, status, attempts, last_error,
                error_detail, next_attempt_at, updated_at)
            SELECT id, 'webhook', 'pending', 1, '', '', now(), now() FROM notifications_notification
            WHERE title = 'backlog'"""
        )
        cursor.execute(f"ANALYZE {TASKS}")
        cursor.execute(f"ANALYZE {Delivery._meta.db_table}")
        cursor.execute("ANALYZE notifications_notification")
    seq = scans(window)
    assert not [line for line in seq if TASKS in line or "notifications_delivery" in line], seq
