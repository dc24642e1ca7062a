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
# A label value may hold a brace (a route pattern such as ``[0-9]{6,20}``), so a value is read as a
# whole quoted string rather than up to the first ``}``.
SERIES = re.compile(r'^(axisor_\w+)\{((?:[^"}]|"(?:[^"\\]|\\.)*")*)\} ', re.M)


def scrape(server) -> str:
    request = urllib.request.Request(f"{server.http}/metrics", headers={"Authorization": "Bearer scrape-me"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return resp.read().decode()


def series(text: str) -> set[str]:
    return {f"{name}{{{labels}}}" for name, labels in SERIES.findall(text)}


def random_path() -> str:
    """A path never seen before; one in four is all digits, which an id route such as
    ``api/orders/<id>`` matches (a hex token is all digits only once in ~2,000)."""
    tail = secrets.token_hex(8)
    if secrets.randbelow(4) == 0:
        tail = str(10**15 + secrets.randbelow(9 * 10**15))
    return secrets.choice(PREFIXES) + tail


def every_shape() -> list[str]:
    """One path of each shape under each prefix, so the first round makes every series a path can."""
    return [
        prefix + tail for prefix in PREFIXES for tail in (secrets.token_hex(8), str(10**15 + secrets.randbelow(10**15)))
    ]


def invent(server, token: str, n: int, paths: list[str] = ()) -> None:
    """``n`` requests (after one per path in ``paths``), each with a method and a path never seen
    before, answered by the server."""
    paths = list(paths) + [random_path() for _ in range(n)]
    for path in paths:
        method = "X" + secrets.token_hex(6).upper()
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
    invent(server, token, 50, every_shape())  # the first round makes the series a method or path can make
    first = scrape(server)
    invent(server, token, 100)
    second = scrape(server)

    grown = series(second) - series(first)
    print(f"\n/metrics {len(first.encode())} B after 50 invented requests, {len(second.encode())} B after 150")
    assert not grown, sorted(grown)[:10]
    methods = set(re.findall(rf'{FAMILY}\{{method="([^"]*)"', second))
    assert "OTHER" in methods and methods <= METHODS | {"OTHER"}, methods
    routes = {re.search(r'route="([^"]*)"', labels)[1] for name, labels in SERIES.findall(second) if name == FAMILY}
    assert "api/orders/(?P<order_id>[0-9]{6,20})" in routes, routes  # an id route was reached and read
    assert not any(re.search(r"[0-9a-f]{16}", route) for route in routes), routes  # patterns, not paths
    assert len(second.encode()) < len(first.encode()) + 2048  # only counter values changed
    server_is_clean(server)
