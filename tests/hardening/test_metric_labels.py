"""Hardening case: no label of a metric takes a value the client chose. 100 requests with invented
HTTP methods and random paths used to add a series each to /metrics, for the life of the process
(74 KB → 275 KB); now the method is one of a fixed set or OTHER, the route is the URL pattern."""

from __future__ import annotations

import re
import secrets
import socket
import urllib.request

from core.metrics import METHODS
from tests.conftest import jwt_for
from tests.hardening.conftest import server_is_clean

FAMILY = "axisor_http_request_duration_seconds_count"
PREFIXES = ["/api/orders/", "/api/market/", "/nowhere/", "/admin/", "/panel/"]
SERIES = re.compile(r"^(axisor_\w+)\{([^}]*)\} ", re.M)


def scrape(server) -> str:
    request = urllib.request.Request(f"{server.http}/metrics", headers={"Authorization": "Bearer scrape-me"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return resp.read().decode()


def series(text: str) -> set[str]:
    return {f"{name}{{{labels}}}" for name, labels in SERIES.findall(text)}


def invent(server, token: str, n: int) -> None:
    """``n`` requests, each with a method and a path never seen before, answered by the server."""
    for _ in range(n):
        method = "X" + secrets.token_hex(6).upper()
        path = secrets.choice(PREFIXES) + secrets.token_hex(8)
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(
                f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 "), answer[:200]
        assert int(answer.split()[1]) < 500, answer[:500]


def test_metric_families_do_not_grow_under_invented_methods_and_random_paths(daphne, make_user):
    server = daphne(METRICS_TOKEN="scrape-me", AXISOR_BACKGROUND="0")
    token = jwt_for(make_user("labels"))
    scrape(server)  # the scrape's own series
    invent(server, token, 50)  # the first round makes the series a method or path can make at all
    first = scrape(server)
    invent(server, token, 100)
    second = scrape(server)

    grown = series(second) - series(first)
    print(f"\n/metrics {len(first.encode())} B after 50 invented requests, {len(second.encode())} B after 150")
    assert not grown, sorted(grown)[:10]
    methods = set(re.findall(rf'{FAMILY}\{{method="([^"]*)"', second))
    assert "OTHER" in methods and methods <= METHODS | {"OTHER"}, methods
    routes = set(re.findall(rf'{FAMILY}\{{[^}}]*route="([^"]*)"', second))
    assert not any(re.search(r"[0-9a-f]{16}", route) for route in routes), routes  # patterns, not paths
    assert len(second.encode()) < len(first.encode()) + 2048  # only counter values changed
    server_is_clean(server)
