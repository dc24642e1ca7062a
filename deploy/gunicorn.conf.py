"""gunicorn settings of the REST tier (the HTTP API, the staff panel, the Django admin); the
sockets are daphne's (deploy/run-daphne.sh). Start with deploy/run-gunicorn.sh, or
``gunicorn -c deploy/gunicorn.conf.py``. Environment: GUNICORN_BIND (127.0.0.1:8100),
WEB_CONCURRENCY (worker processes; 2 × cores + 1)."""

import os
import shutil
from pathlib import Path

wsgi_app = "axisor.wsgi:application"
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8100")
# Sync workers, one request at a time each, behind nginx (which buffers slow clients): a worker
# accepts a connection only when it is free, so requests spread over the workers by themselves.
# Measured with bench_fanout --mode orders, 100 placements/s on 2 cores (p99):
# - sync, 5 workers: 15 ms; sync, 2 workers: 16-20 ms;
# - gthread, 2 workers with 1 thread: 16-117 ms. A worker's main thread accepts whether or not its
#   request thread is busy, and a keep-alive connection stays with the worker that accepted it:
#   one worker took 969 of 1,051 requests while the other idled;
# - gthread with 4 threads: 78-88 ms (a thread back from PostgreSQL waits for the GIL).
# A worker spends about half of a placement waiting on PostgreSQL, hence more workers than cores.
worker_class = "sync"
workers = int(os.environ.get("WEB_CONCURRENCY", 2 * (os.cpu_count() or 1) + 1))
# A sync worker uses one database connection at a time: keep one open, not the pool's usual two.
os.environ.setdefault("DB_POOL_MIN", "1")
# What daphne's drain allows a request in flight at shutdown (jobs.schedule.DRAIN_SECONDS).
graceful_timeout = 10
timeout = 30
accesslog = None  # nginx logs requests; errors and worker restarts go to stderr
errorlog = "-"

# One /metrics for all workers: each worker writes its figures under this directory and any of
# them answers for all (prometheus_client's multiprocess mode). It must be set before a worker
# imports prometheus_client, so here, in the master; emptied at each start.
_var, _port = Path(__file__).resolve().parents[1] / "var", bind.rsplit(":", 1)[-1]
_metrics = Path(os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(_var / f"metrics-{_port}")))
shutil.rmtree(_metrics, ignore_errors=True)
_metrics.mkdir(parents=True)

# gunicorn 25.1+ listens on a control socket for its `gunicornc` tool, by default
# ~/.gunicorn/gunicorn.ctl: one path for every gunicorn of the user (each start unlinks the one
# before: two REST tiers on one machine took each other's), and a read-only home under the systemd
# unit (ProtectSystem=strict). One per bind port in var/, which the unit may write:
# `gunicornc -s var/gunicorn-8100.ctl`.
_var.mkdir(exist_ok=True)
control_socket = str(_var / f"gunicorn-{_port}.ctl")


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # its live gauges go; its counters stay in the totals


def post_worker_init(worker):
    worker.log.info("Worker %s ready: the application is loaded", worker.pid)  # tests wait for this line


def post_request(worker, req):
    # The response is written: collect the garbage the requests left here, where no request waits,
    # rather than inside a later one at the thresholds (core.collector).
    from core.collector import collect_between_requests

    collect_between_requests()


def pre_request(worker, req):
    # gunicorn has no body limit of its own: the WSGI entry (axisor.wsgi, core.middleware.WsgiBodyLimit)
    # answers 413 to a body over DATA_UPLOAD_MAX_MEMORY_SIZE without reading it. gunicorn would
    # first tell a client that sent "Expect: 100-continue" to go ahead and send it: not for a body
    # that will be refused.
    from django.conf import settings

    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    declared = next((value for name, value in req.headers if name == "CONTENT-LENGTH"), "")
    if limit is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        req._expected_100_continue = False
