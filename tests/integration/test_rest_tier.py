"""The deployment of deploy/: REST on gunicorn workers (WSGI), sockets on daphne, one Redis and one
PostgreSQL. What a request commits on a worker reaches the socket on daphne; the workers answer
/metrics together; the WSGI entry refuses a layer that would keep its events to itself."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import websocket

from tests.conftest import jwt_for
from tests.integration.conftest import ROOT
from tests.integration.http import call

QUIET = {"AXISOR_SIMULATE": ""}  # no paper venue: the test alone moves the order


def read_update(sock) -> dict:
    while True:  # the /ws/orders heartbeat may come first
        raw = sock.recv()
        if raw != "PING":
            return json.loads(raw)


def test_an_order_placed_on_the_rest_tier_reaches_its_socket_on_daphne(daphne, gunicorn, make_user, instruments):
    # No background loops on daphne: its relay would deliver events the worker failed to send.
    sockets, web = daphne(AXISOR_BACKGROUND="0", **QUIET), gunicorn(workers=2, **QUIET)
    user, staff = make_user("trader"), make_user("ops", superuser=True)
    status, creds = call("POST", f"{web.http}/api/auth/sessions", token=jwt_for(user))
    assert status == 201, creds
    sock = websocket.create_connection(
        f"{sockets.ws}/ws/orders?session={creds['session']}&token={creds['token']}", timeout=10
    )
    try:
        body = {"tradingSymbol": "SBIN-EQ", "orderType": "LIMIT", "transactionType": "BUY", "quantity": 10}
        status, order = call("POST", f"{web.http}/api/orders", {**body, "price": 625.5}, token=jwt_for(user))
        assert status == 201, order
        placed = read_update(sock)
        assert (placed["orderId"], placed["updateType"], placed["orderStatus"]) == (
            order["orderId"],
            "ORDER_PLACED",
            "PENDING",
        )

        fill = {"orderId": order["orderId"], "execId": "x-1", "type": "fill", "quantity": 10, "price": 625.5}
        status, applied = call("POST", f"{web.http}/api/internal/executions", fill, token=jwt_for(staff))
        assert status == 200 and applied["applied"] is True, applied
        updates = [read_update(sock) for _ in range(2)]
        assert [(u["updateType"], u["orderStatus"]) for u in updates] == [
            ("TRADE_UPDATE", "COMPLETE"),
            ("ORDER_EXECUTED", "COMPLETE"),
        ]
        assert [u["seq"] for u in [placed, *updates]] == sorted({u["seq"] for u in [placed, *updates]})

        # A bad request is answered by the worker as by daphne, and changes nothing.
        status, error = call("POST", f"{web.http}/api/orders", {**body, "price": -1}, token=jwt_for(user))
        assert status == 400 and "price" in json.dumps(error), error
        status, mine = call("GET", f"{sockets.http}/api/orders", token=jwt_for(user))
        assert status == 200 and [o["orderId"] for o in mine["results"]] == [order["orderId"]], mine
    finally:
        sock.close()


def test_the_workers_answer_metrics_together(gunicorn):
    web = gunicorn(workers=2, METRICS_TOKEN="scrape-me")
    with ThreadPoolExecutor(8) as pool:  # 8 at a time: a busy worker does not accept, the other does
        answers = list(pool.map(lambda _: call("GET", f"{web.http}/healthz"), range(40)))
    assert answers == [(200, {"status": "ok"})] * 40
    writers = {name.rsplit("_", 1)[-1] for name in os.listdir(web.metrics_dir) if name.startswith("histogram_")}
    assert len(writers) == 2, sorted(os.listdir(web.metrics_dir))  # both workers served some
    text = scrape(web)
    counts = re.findall(r'axisor_http_request_duration_seconds_count\{[^}]*route="healthz"[^}]*\} (\S+)', text)
    assert sum(float(c) for c in counts) == 40, counts  # one worker alone would count only its own


def scrape(web) -> str:
    request = urllib.request.Request(f"{web.http}/metrics", headers={"Authorization": "Bearer scrape-me"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return resp.read().decode()


def test_a_worker_collects_the_garbage_of_its_requests_between_them(gunicorn, make_user):
    """Requests leave reference cycles (Django's and DRF's request, view and response point at each
    other). A worker collects them once its response is out (deploy/gunicorn.conf.py's
    post_request, core.collector) rather than inside a later request at the thresholds, and
    /metrics counts each collection by what ran it. The control: with the collection between
    requests off, the same requests reach the (lowered) thresholds inside requests."""
    token = jwt_for(make_user())

    def collections(web) -> dict[str, float]:
        text = scrape(web)
        counts = {"between_requests": 0.0, "other": 0.0}
        for trigger, count in re.findall(r'axisor_gc_pause_seconds_count\{[^}]*trigger="(\w+)"[^}]*\} (\S+)', text):
            counts[trigger] += float(count)
        return counts

    def requests(web, count: int) -> dict[str, float]:
        """The collections ``count`` requests made, after a warm-up (a worker's first requests
        import what they need)."""
        for _ in range(5):
            assert call("GET", f"{web.http}/api/orders", token=token)[0] == 200
        before = collections(web)
        for _ in range(count):  # each request leaves its cycles: thousands of objects in all
            assert call("GET", f"{web.http}/api/orders", token=token)[0] == 200
        after = collections(web)
        return {trigger: after[trigger] - before[trigger] for trigger in after}

    lowered = {"METRICS_TOKEN": "scrape-me", "GC_THRESHOLDS": "5000,50,1000"}
    off = requests(gunicorn(workers=1, GC_BETWEEN_REQUESTS="0", **lowered), 80)
    assert off["other"] >= 1 and off["between_requests"] == 0, off  # the thresholds, inside requests
    on = requests(gunicorn(workers=1, GC_BETWEEN_REQUESTS="1000", **lowered), 80)
    assert on["between_requests"] >= 3 and on["other"] == 0, on  # none ran inside a request


def test_ticks_sent_to_the_rest_tier_are_refused_and_change_nothing(daphne, gunicorn, make_user, instruments):
    from market.models import Tick

    sockets, web = daphne(**QUIET), gunicorn(workers=1, **QUIET)
    staff = make_user("feed", superuser=True)
    ticks = [{"symbol": "SBIN-EQ", "price": 630.5, "volume": 10}]
    status, answer = call("POST", f"{web.http}/api/internal/ticks", ticks, token=jwt_for(staff))
    assert status == 421 and answer["code"] == "wrong_tier", answer
    assert not Tick.objects.exists()
    status, answer = call("POST", f"{sockets.http}/api/internal/ticks", ticks, token=jwt_for(staff))
    assert (status, answer) == (202, {"applied": 1})
    assert Tick.objects.count() == 1


def test_the_wsgi_entry_refuses_a_process_local_channel_layer(tmp_path):
    env = {
        **os.environ,
        "REDIS_URL": "",  # the in-memory layer: events committed here would reach no socket
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "DJANGO_SETTINGS_MODULE": "axisor.settings",
    }
    done = subprocess.run(
        [sys.executable, "-c", "import axisor.wsgi"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "ImproperlyConfigured: the WSGI REST tier needs the Redis channel layer" in done.stderr, done.stderr[-2000:]
