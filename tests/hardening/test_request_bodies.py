"""Hardening case: request bodies over DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MiB) are refused with 413
``request_too_large`` before they are read, on daphne and on the gunicorn REST tier (nginx: see
test_tls_proxy.py): a declared Content-Length at once, without a byte of the body; a chunked body
once it passes the limit. The server's memory stays flat under 30 MiB bodies."""

from __future__ import annotations

import http.client
import json
import select
import socket

import psutil
from django.conf import settings

from orders.models import Order
from tests.conftest import auth_api, jwt_for
from tests.hardening.conftest import rss_mib, server_is_clean
from tests.integration.conftest import gunicorn  # noqa: F401 - the REST tier as deploy/ runs it
from tests.integration.http import call

BIG = 30 << 20  # 30 MiB
ORDER = {"tradingSymbol": "SBIN-EQ", "orderType": "LIMIT", "transactionType": "BUY", "quantity": 1, "price": 625.5}


def json_body(size: int) -> bytes:
    """A syntactically valid order of ``size`` bytes (a long symbol), as an attacker would send."""
    head, tail = b'{"tradingSymbol": "', b'", "quantity": 1}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def headers(port: int, token: str, extra: str) -> bytes:
    return (
        f"POST /api/orders HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\n{extra}\r\n"
    ).encode()


def read_response(sock: socket.socket, timeout: float = 10) -> tuple[int, dict, bytes]:
    """Status, JSON body and raw head of the one response on ``sock``."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a response: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    fields = dict(line.split(b":", 1) for line in head.lower().split(b"\r\n")[1:])
    length = int(fields[b"content-length"])
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed inside the body"
        rest += chunk
    return int(head.split()[1]), json.loads(rest[:length]), head


def declared_length_refused_before_the_body(port: int, token: str, *, expect: bool) -> None:
    """Headers only, declaring 30 MiB: the 413 comes back before a byte of the body is sent."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        extra = f"Content-Length: {BIG}\r\n" + ("Expect: 100-continue\r\n" if expect else "")
        sock.sendall(headers(port, token, extra))
        status, body, head = read_response(sock)
        assert status == 413, head
        assert body["code"] == "request_too_large" and str(settings.DATA_UPLOAD_MAX_MEMORY_SIZE) in body["detail"]
        assert b"100 Continue" not in head


def whole_body_sent_first(port: int, token: str) -> tuple[int, dict]:
    """A client that sends its whole body before reading (http.client, urllib, requests)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        conn.request("POST", "/api/orders", body=json_body(BIG), headers=auth)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def chunked_refused_past_the_limit(port: int, token: str) -> int:
    """A chunked body of 64 KiB chunks, sent until the server answers: how many bytes went out.
    The server must answer once the body passes the limit, long before 30 MiB."""
    chunk = b"x" * 65536
    framed = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(headers(port, token, "Transfer-Encoding: chunked\r\n"))
        sock.sendall(b"1\r\n{\r\n")
        while sent < BIG:
            if select.select([sock], [], [], 0)[0]:
                break  # the answer came
            try:
                sock.sendall(framed)
            except OSError:
                break  # closed after the answer: read it
            sent += len(chunk)
        status, body, head = read_response(sock)
    assert status == 413 and body["code"] == "request_too_large", head
    assert sent < BIG, "the whole body was read before the answer"
    return sent


def test_bodies_over_the_limit_are_refused_unread_by_daphne(daphne, make_user, instruments):
    server = daphne(AXISOR_BACKGROUND="0", AXISOR_SIMULATE="")
    token = jwt_for(make_user("bigbody"))
    assert call("POST", f"{server.http}/api/orders", ORDER, token=token)[0] == 201  # warm: every import done
    before = rss_mib(server.proc.pid)

    declared_length_refused_before_the_body(server.port, token, expect=False)
    declared_length_refused_before_the_body(server.port, token, expect=True)
    status, body = whole_body_sent_first(server.port, token)
    assert (status, body["code"]) == (413, "request_too_large")  # the lingering close: no reset
    sent = chunked_refused_past_the_limit(server.port, token)
    grown = rss_mib(server.proc.pid) - before

    print(f"\ndaphne: chunked body refused after {sent / (1 << 20):.1f} MiB sent; RSS +{grown:.1f} MiB")
    assert grown < 8, f"daphne grew {grown:.1f} MiB on 30 MiB bodies"
    assert Order.objects.count() == 1  # only the warm-up order: no refused body reached a view
    # A body at the limit is still read, and the connection after a refusal serves normally.
    status, body = call("POST", f"{server.http}/api/orders", {**ORDER, "tradingSymbol": "x" * 2_000_000}, token=token)
    assert status == 400 and body["code"] == "validation_error", body
    assert call("POST", f"{server.http}/api/orders", ORDER, token=token)[0] == 201
    server_is_clean(server)


def test_bodies_over_the_limit_are_refused_unread_by_the_rest_tier(gunicorn, make_user, instruments):  # noqa: F811
    web = gunicorn(workers=1, AXISOR_SIMULATE="")
    token = jwt_for(make_user("bigbody"))
    assert call("POST", f"{web.http}/api/orders", ORDER, token=token)[0] == 201
    (worker,) = psutil.Process(web.proc.pid).children()
    before = rss_mib(worker.pid)

    declared_length_refused_before_the_body(web.port, token, expect=False)
    declared_length_refused_before_the_body(web.port, token, expect=True)
    sent = chunked_refused_past_the_limit(web.port, token)
    grown = rss_mib(worker.pid) - before
    print(f"\ngunicorn: chunked body refused after {sent / (1 << 20):.1f} MiB sent; RSS +{grown:.1f} MiB")
    assert grown < 8, f"the worker grew {grown:.1f} MiB"

    # A chunked body under the limit is read whole and placed (WSGI servers give Django no length
    # for it, and it used to arrive empty).
    body = json.dumps(ORDER).encode()
    with socket.create_connection(("127.0.0.1", web.port), timeout=10) as sock:
        sock.sendall(headers(web.port, token, "Transfer-Encoding: chunked\r\n"))
        sock.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        status, answer, head = read_response(sock)
    assert status == 201, (head, answer)
    assert Order.objects.count() == 2


def test_a_body_over_the_limit_inside_django_is_a_413_in_the_error_shape(make_user, settings):
    """The last line (a body no server counted, e.g. the test client): DRF reads request.body,
    Django refuses it, and the API answers 413, not an HTML 400."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = auth_api(make_user("big")).post("/api/orders", json_body(5000), content_type="application/json")
    assert response.status_code == 413, response.content
    assert response.json()["code"] == "request_too_large"
