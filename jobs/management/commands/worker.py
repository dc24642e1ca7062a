"""``manage.py worker``: background work as its own process (see core/worker.py). Run several,
on any machine that reaches the database and Redis; set AXISOR_BACKGROUND=0 on the servers."""

from __future__ import annotations

import asyncio
import signal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from core.worker import Worker, run_ready
from jobs.schedule import periodic_jobs


class Command(BaseCommand):
    help = "Run queued jobs (notification deliveries) and the periodic jobs (venue, feed, relay, sweep, retention)."

    def add_arguments(self, parser):
        parser.add_argument("--threads", type=int, default=None, help="jobs run at once (default WORKER_THREADS)")
        parser.add_argument("--burst", action="store_true", help="run the jobs ready now on this thread, then exit")

    def handle(self, *args, threads: int | None, burst: bool, **options):
        if burst:
            self.stdout.write(f"ran {run_ready()} job(s)")
            return
        if not settings.REDIS_ENABLED:
            # With the in-memory channel layer this process's events would never reach a socket.
            raise CommandError(
                "a worker process needs Redis (REDIS_URL or REDIS_SENTINELS: the channel layer the servers listen on); "
                "without Redis the server runs the worker itself (AXISOR_BACKGROUND=1)"
            )
        if threads is not None and threads < 1:
            raise CommandError("--threads must be at least 1")
        asyncio.run(self.serve(threads))

    async def serve(self, threads: int | None) -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)  # finish the steps under way, then stop
        await Worker(periodic=periodic_jobs(), threads=threads).run(stopping)
