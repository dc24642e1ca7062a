"""Outbound HTTP on a user's behalf (core/outbound.py): what it refuses to reach, and how a call ends.

Every socket these tests open or reach is on this machine's loopback: the autouse guard below fails
a test that would connect anywhere else or look a name up in DNS."""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import itertools
import socket
import ssl
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from core import outbound
from core.outbound import OutboundError, Response, check_url, post
from tests.polling import until_sync

SERVER_LIFETIME = 30.0  # no test server thread outlives this, whatever the test does


# --- guard: loopback only ---------------------------------------------------------------------
def _is_loopback(host: str) -> bool:
    ip = ipaddress.ip_address(host.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    # 0.0.0.0 and :: reach this machine too.
    return ip.is_loopback or ip.is_unspecified


class _LoopbackOnlySocket(socket.socket):
    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            raise AssertionError(f"a test tried to connect to {address!r}")
        return super().connect(address)

    def connect_ex(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            raise AssertionError(f"a test tried to connect to {address!r}")
        return super().connect_ex(address)


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """No connection leaves this machine and no name goes to DNS. `.invalid` names fail here the
    way a resolver fails them: glibc would otherwise send the query to the nameserver in
    /etc/resolv.conf, which is another machine."""
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if isinstance(host, str) and host.rstrip(".").endswith(".invalid"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        if host != "localhost":
            try:
                real_getaddrinfo(host, port, flags=socket.AI_NUMERICHOST)
            except socket.gaierror:
                raise AssertionError(f"a test would have looked {host!r} up in DNS") from None
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "socket", _LoopbackOnlySocket)


def configure(settings, **changes) -> None:
    settings.AXISOR_OUTBOUND = {
        **settings.AXISOR_OUTBOUND,
        "HTTPS_ONLY": False,
        "ALLOW_HOSTS": frozenset(),
        "PORTS": frozenset({443, 80}),
        **changes,
    }


# --- test servers -----------------------------------------------------------------------------
def _ipv6_loopback_works() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
            probe.listen()
        return True
    except OSError:
        return False


class Tripwire:
    """A listening socket nobody should reach: counts the connections that did."""

    def __init__(self, family: int, host: str) -> None:
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    def connections(self) -> int:
        # A connect() that succeeded has finished the handshake, so it waits in the accept queue.
        count = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1

    def close(self) -> None:
        self.sock.close()


class NoTripwire:
    """Stands in where ::1 cannot listen: the refusal is still asserted, without the count."""

    port = 8080

    def connections(self) -> int:
        return 0

    def close(self) -> None:
        pass


@pytest.fixture
def tripwires() -> Iterator[dict[int, Tripwire | NoTripwire]]:
    wires = {4: Tripwire(socket.AF_INET, "127.0.0.1")}
    wires[6] = Tripwire(socket.AF_INET6, "::1") if _ipv6_loopback_works() else NoTripwire()
    yield wires
    for wire in wires.values():
        wire.close()


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Answer:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)


class HTTPRecorder:
    """A real http.server on loopback that records each request and gives one fixed answer."""

    def __init__(self, answer: Answer, tls: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.received: list[Received] = []
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = 5  # a stuck client cannot hold the server thread

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                recorder.received.append(Received(self.path, dict(self.headers.items()), body))
                self.send_response(recorder.answer.status)
                for name, value in recorder.answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(recorder.answer.body)))
                self.end_headers()
                try:
                    self.wfile.write(recorder.answer.body)
                except OSError:
                    pass  # the client stopped reading at its cap and closed

            def log_message(self, format, *args) -> None:
                pass

        class Server(http.server.HTTPServer):
            def handle_error(self, request, client_address) -> None:
                pass

        # Bound and listening when the constructor returns: ready before the test connects.
        self.server = Server(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self._stopper = threading.Timer(SERVER_LIFETIME, self.server.shutdown)
        self._stopper.daemon = True
        self._stopper.start()

    def close(self) -> None:
        self._stopper.cancel()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
        assert not self.thread.is_alive()


@pytest.fixture
def http_server() -> Iterator[Callable[..., HTTPRecorder]]:
    servers: list[HTTPRecorder] = []

    def start(answer: Answer | None = None, **kwargs) -> HTTPRecorder:
        servers.append(HTTPRecorder(answer or Answer(), **kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


class RawServer:
    """Accepts on 127.0.0.1 and hands each connection to `behaviour(conn, stop)`, on one thread."""

    def __init__(self, behaviour: Callable[[socket.socket, threading.Event], None]) -> None:
        self.behaviour = behaviour
        self.stop = threading.Event()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        end = time.monotonic() + SERVER_LIFETIME
        while not self.stop.is_set() and time.monotonic() < end:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(SERVER_LIFETIME)
                try:
                    self.behaviour(conn, self.stop)
                except OSError:
                    pass  # the client hung up: this connection is over

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()
        assert not self.thread.is_alive()


@pytest.fixture
def raw_server() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def start(behaviour: Callable[[socket.socket, threading.Event], None]) -> RawServer:
        servers.append(RawServer(behaviour))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def refusal(call: Callable[[], object]) -> OutboundError:
    with pytest.raises(OutboundError) as caught:
        call()
    return caught.value


# --- 1. what is refused -----------------------------------------------------------------------
# (URL, which loopback tripwire's port it uses): each spelling names this machine.
LOOPBACK_SPELLINGS = [
    ("http://127.0.0.1:{port}/", 4),
    ("http://localhost:{port}/", 4),
    ("http://2130706433:{port}/", 4),  # decimal
    ("http://0x7f000001:{port}/", 4),  # hex
    ("http://0177.0.0.1:{port}/", 4),  # octal
    ("http://127.1:{port}/", 4),  # short form
    ("http://127.0.0.1.:{port}/", 4),  # trailing dot
    ("http://127.254.0.9:{port}/hook?x=1", 4),  # all of 127/8
    ("http://0.0.0.0:{port}/", 4),  # reaches this host on Linux
    ("http://LOCALHOST:{port}/", 4),
    ("HTTP://localhost.:{port}/", 4),
    ("http://[::1]:{port}/", 6),
    ("http://[0:0:0:0:0:0:0:1]:{port}/", 6),
    ("http://[::]:{port}/", 6),
    ("http://[::ffff:127.0.0.1]:{port}/", 4),  # IPv4-mapped
    ("http://[::ffff:7f00:1]:{port}/", 4),  # IPv4-mapped, hex
    ("http://[::127.0.0.1]:{port}/", 4),  # IPv4-compatible
    ("http://[64:ff9b::7f00:1]:{port}/", 4),  # NAT64
    ("http://[64:ff9b:1::7f00:1]:{port}/", 4),  # local-use NAT64
    ("http://[2002:7f00:1::]:{port}/", 4),  # 6to4
    ("http://[2001:0:4136:e378:8000:63bf:80ff:fffe]:{port}/", 4),  # Teredo, client 127.0.0.1
]


@pytest.mark.parametrize(("template", "family"), LOOPBACK_SPELLINGS)
def test_every_spelling_of_this_machine_is_refused_before_connecting(settings, tripwires, template, family):
    tripwire = tripwires[family]
    # The tripwire's port is allowed, so the address rule is what refuses.
    configure(settings, PORTS=frozenset({443, 80, tripwire.port}))
    url = template.format(port=tripwire.port)

    assert refusal(lambda: check_url(url)).code == "blocked_address"
    assert refusal(lambda: post(url, body=b"{}", headers={"Content-Type": "application/json"})).code == (
        "blocked_address"
    )
    assert tripwire.connections() == 0


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://10.0.0.1/",
        "http://172.16.0.1/",
        "http://172.31.255.254/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",  # carrier-grade NAT
        "http://224.0.0.1/",  # multicast
        "http://255.255.255.255/",  # broadcast
        "http://240.0.0.1/",  # reserved
        "http://192.0.2.1/",  # documentation
        "http://198.18.0.1/",  # benchmarking
        "https://[fe80::1]/",  # link-local
        "http://[fc00::1]/",  # unique local
        "http://[fd12:3456::1]/",
        "http://[fec0::1]/",  # site-local
        "http://[ff02::1]/",  # multicast
        "http://[2001:db8::1]/",  # documentation
        "http://[::ffff:169.254.169.254]/",
        "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of the metadata address
        "http://[2002:a00:1::]/",  # 6to4 of 10.0.0.1
    ],
)
def test_private_and_special_addresses_are_refused(settings, url):
    configure(settings)
    assert refusal(lambda: check_url(url)).code == "blocked_address"
    assert refusal(lambda: post(url, body=b"", headers={})).code == "blocked_address"


@pytest.mark.parametrize(
    ("url", "code", "changes"),
    [
        ("ftp://example.com/", "scheme_not_allowed", {}),
        ("file:///etc/passwd", "scheme_not_allowed", {}),
        ("gopher://127.0.0.1:6379/", "scheme_not_allowed", {}),
        ("javascript:alert(1)", "scheme_not_allowed", {}),
        ("//example.com/", "scheme_not_allowed", {}),
        ("http://example.com/", "scheme_not_allowed", {"HTTPS_ONLY": True}),
        ("http://user:pass@example.com/", "credentials_in_url", {}),
        ("http://@example.com/", "credentials_in_url", {}),
        ("http://example.com@127.0.0.1/", "credentials_in_url", {}),
        ("http://example.com:6379/", "port_not_allowed", {}),  # decided before any DNS lookup
        ("https://example.com:0/", "port_not_allowed", {}),
        ("https://example.com:80/", "port_not_allowed", {"PORTS": frozenset({443})}),
        ("http:///path", "invalid_url", {}),
        ("http://", "invalid_url", {}),
        ("http://exa mple.com/", "invalid_url", {}),
        ("http://example.com/\r\nX-Injected: 1", "invalid_url", {}),
        ("http://example.com/\x00", "invalid_url", {}),
        ("http://example.com/" + "a" * 2000, "invalid_url", {}),
        ("http://[::1/", "invalid_url", {}),
        ("http://[fe80::1%25eth0]/", "invalid_url", {}),  # zone id
        ("http://example.com:99999/", "invalid_url", {}),
        ("http://example.com:http/", "invalid_url", {}),
        ("http://exa_mple..com/", "invalid_url", {}),
        ("http://nonexistent.invalid/", "dns_error", {}),
    ],
)
def test_urls_outside_the_policy_are_refused_with_their_code(settings, url, code, changes):
    configure(settings, **changes)
    assert refusal(lambda: check_url(url)).code == code
    assert refusal(lambda: post(url, body=b"", headers={})).code == code


def test_a_public_address_passes_the_check(settings):
    configure(settings)
    check_url("https://93.184.215.14/hooks/axisor")
    check_url("http://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/")
    check_url("https://[2002:808:808::]/")  # 6to4 of a public address


# --- 2. the allow-list ------------------------------------------------------------------------
def test_allow_listed_private_receiver_gets_the_post(settings, http_server):
    server = http_server(Answer(200, b'{"received": true}'))
    configure(settings, ALLOW_HOSTS=frozenset({f"127.0.0.1:{server.port}"}))

    response = post(
        f"http://127.0.0.1:{server.port}/hooks/axisor?v=1",
        body=b'{"event": "order_update"}',
        headers={"Content-Type": "application/json", "Webhook-Id": "msg_1", "Host": "evil.example"},
    )

    assert response == Response(status=200, body=b'{"received": true}')
    [request] = server.received
    assert request.path == "/hooks/axisor?v=1"
    assert request.body == b'{"event": "order_update"}'
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Webhook-Id"] == "msg_1"
    assert request.headers["Host"] == f"127.0.0.1:{server.port}"  # ours, not the caller's


def test_same_receiver_not_allow_listed_is_refused_without_a_request(settings, http_server):
    server = http_server()
    configure(settings, PORTS=frozenset({443, 80, server.port}), ALLOW_HOSTS=frozenset({"127.0.0.1:1"}))
    url = f"http://127.0.0.1:{server.port}/"

    assert refusal(lambda: post(url, body=b"x", headers={})).code == "blocked_address"
    assert refusal(lambda: check_url(url)).code == "blocked_address"
    assert server.received == []


def test_allow_list_matches_the_name_as_written_not_another_spelling(settings, http_server):
    server = http_server()
    configure(settings, PORTS=frozenset({server.port}), ALLOW_HOSTS=frozenset({f"127.0.0.1:{server.port}"}))

    assert refusal(lambda: post(f"http://2130706433:{server.port}/", body=b"", headers={})).code == "blocked_address"
    assert refusal(lambda: post(f"http://localhost:{server.port}/", body=b"", headers={})).code == "blocked_address"
    assert server.received == []


def test_allow_list_entry_for_an_ipv6_literal_uses_brackets(settings):
    configure(settings, ALLOW_HOSTS=frozenset({"[::1]:8080"}))
    check_url("http://[::1]:8080/")
    check_url("http://[0::1]:8080/")  # the same address, spelled longer
    assert refusal(lambda: check_url("http://[::1]:8081/")).code == "port_not_allowed"
    configure(settings, ALLOW_HOSTS=frozenset({"[::1]:8080"}), PORTS=frozenset({8081}))
    assert refusal(lambda: check_url("http://[::1]:8081/")).code == "blocked_address"


# --- 3. redirects -----------------------------------------------------------------------------
def test_redirect_is_not_followed(settings, http_server):
    target = http_server()
    redirector = http_server(Answer(302, b"moved", {"Location": f"http://127.0.0.1:{target.port}/internal"}))
    configure(settings, ALLOW_HOSTS=frozenset({f"127.0.0.1:{redirector.port}", f"127.0.0.1:{target.port}"}))

    error = refusal(lambda: post(f"http://127.0.0.1:{redirector.port}/", body=b"x", headers={}))

    assert error.code == "http_302"
    assert len(redirector.received) == 1
    assert target.received == []


# --- 4. the total deadline --------------------------------------------------------------------
def _drip_status_line(conn: socket.socket, stop: threading.Event) -> None:
    """A status line and then one header byte every 0.5 s: never quiet long enough for a read timeout."""
    conn.recv(65536)
    data = itertools.chain(b"HTTP/1.1 200 OK\r\nX-Drip: ", itertools.repeat(ord("a")))
    for _ in range(int(SERVER_LIFETIME / 0.5)):
        conn.sendall(bytes([next(data)]))
        if stop.wait(0.5):
            return


def _drip_body(conn: socket.socket, stop: threading.Event) -> None:
    """A complete 200 head, then a body without a length, one byte every 0.5 s."""
    conn.recv(65536)
    conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
    for _ in range(int(SERVER_LIFETIME / 0.5)):
        conn.sendall(b"a")
        if stop.wait(0.5):
            return


def _silent(conn: socket.socket, stop: threading.Event) -> None:
    stop.wait(SERVER_LIFETIME)


@pytest.mark.parametrize("behaviour", [_drip_status_line, _drip_body, _silent])
def test_total_deadline_ends_a_slow_answer(settings, raw_server, behaviour):
    server = raw_server(behaviour)
    configure(settings, ALLOW_HOSTS=frozenset({f"127.0.0.1:{server.port}"}), TIMEOUT_SECONDS=1.5)

    started = time.monotonic()
    error = refusal(lambda: post(f"http://127.0.0.1:{server.port}/", body=b"x", headers={}))
    elapsed = time.monotonic() - started

    assert error.code == "timeout"
    assert 1.4 <= elapsed < 1.5 + 1.0


def test_timeout_argument_overrides_the_setting(settings, raw_server):
    server = raw_server(_silent)
    configure(settings, ALLOW_HOSTS=frozenset({f"127.0.0.1:{server.port}"}), TIMEOUT_SECONDS=60.0)

    started = time.monotonic()
    error = refusal(lambda: post(f"http://127.0.0.1:{server.port}/", body=b"x", headers={}, timeout=0.5))

    assert error.code == "timeout"
    assert time.monotonic() - started < 0.5 + 1.0


# --- 5. the response cap ----------------------------------------------------------------------
def test_response_body_is_read_up_to_the_cap(settings, http_server):
    server = http_server(Answer(200, b"x" * (1024 * 1024)))
    configure(settings, ALLOW_HOSTS=frozenset({f"127.0.0.1:{server.port}"}), MAX_RESPONSE_BYTES=65536)
    url = f"http://127.0.0.1:{server.port}/"

    assert len(post(url, body=b"", headers={}).body) == 65536
    assert len(post(url, body=b"", headers={}, max_response_bytes=1000).body) == 1000


def _many_headers(conn: socket.socket, stop: threading.Event) -> None:
    conn.recv(65536)
    conn.sendall(b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: v\r\n" % n for n in range(1000)) + b"\r\n")
    stop.wait(SERVER_LIFETIME)


def _endless_header_line(conn: socket.socket, stop: threading.Event) -> None:
    conn.recv(65536)
    try:
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (1024 * 1024))
    except OSError:
        return  # the client stopped reading and closed
    stop.wait(SERVER_LIFETIME)


def _endless_continues(conn: socket.socket, stop: threading.Event) -> None:
    conn.recv(65536)
    for _ in range(int(SERVER_LIFETIME / 0.05)):
        try:
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        except OSError:
            return
        if stop.wait(0.05):
            return


@pytest.mark.parametrize(
    ("behaviour", "code"),
    [(_many_headers, "connection_error"), (_endless_header_line, "connection_error"), (_endless_continues, "timeout")],
)
def test_an_answers_head_is_bounded_too(settings, raw_server, behaviour, code):
    """The answer's head is the receiver's as much as its body: a thousand headers, a megabyte-long
    header line, or interim 100 answers without end are cut off (http.client's 100 headers of 64 KiB
    at most, the total deadline), a failure with its code and never the remote's text."""
    server = raw_server(behaviour)
    configure(settings, ALLOW_HOSTS=frozenset({f"127.0.0.1:{server.port}"}), TIMEOUT_SECONDS=1.0)

    started = time.monotonic()
    error = refusal(lambda: post(f"http://127.0.0.1:{server.port}/", body=b"x", headers={}))

    assert error.code == code
    assert time.monotonic() - started < 1.0 + 1.0


# --- 6. remote text stays out of the code -----------------------------------------------------
def test_error_answer_text_goes_to_detail_never_to_code(settings, http_server):
    server = http_server(Answer(500, b"SSH-2.0-OpenSSH_9.2 secret banner"))
    configure(settings, ALLOW_HOSTS=frozenset({f"127.0.0.1:{server.port}"}))

    error = refusal(lambda: post(f"http://127.0.0.1:{server.port}/", body=b"x", headers={}))

    assert error.code == "http_500"
    assert "SSH" not in error.code and "SSH" not in str(error)
    assert "SSH-2.0-OpenSSH_9.2 secret banner" in error.detail


def test_detail_keeps_only_the_start_of_a_long_error_body(settings, http_server):
    server = http_server(Answer(503, b"e" * 10_000))
    configure(settings, ALLOW_HOSTS=frozenset({f"127.0.0.1:{server.port}"}))

    error = refusal(lambda: post(f"http://127.0.0.1:{server.port}/", body=b"x", headers={}))

    assert error.code == "http_503"
    assert error.detail == "e" * 500


def _ssh_banner(conn: socket.socket, stop: threading.Event) -> None:
    conn.recv(65536)
    conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")


def test_non_http_banner_is_a_connection_error_without_its_text(settings, raw_server):
    server = raw_server(_ssh_banner)
    configure(settings, ALLOW_HOSTS=frozenset({f"127.0.0.1:{server.port}"}))

    error = refusal(lambda: post(f"http://127.0.0.1:{server.port}/", body=b"x", headers={}))

    assert error.code == "connection_error"
    assert "SSH" not in error.code and "SSH" not in str(error)
    assert "SSH-2.0-OpenSSH_9.2" in error.detail


@pytest.mark.parametrize("case", ["error_answer", "banner", "timeout_in_body"])
def test_socket_is_closed_even_while_the_error_keeps_its_traceback(settings, http_server, raw_server, case):
    # The error's traceback keeps post()'s frame alive; the connection must not live on with it.
    if case == "error_answer":
        port = http_server(Answer(500, b"e" * 100_000)).port
    else:
        port = raw_server(_ssh_banner if case == "banner" else _drip_body).port
    configure(settings, ALLOW_HOSTS=frozenset({f"127.0.0.1:{port}"}), TIMEOUT_SECONDS=1.0)

    error = refusal(lambda: post(f"http://127.0.0.1:{port}/", body=b"x", headers={}))

    frames = [frame.f_locals for frame, _line in traceback.walk_tb(error.__traceback__)]
    [post_locals] = [names for names in frames if "deadline" in names and "sock" in names]
    assert post_locals["sock"].fileno() == -1


# --- 7. refused, 8. DNS -----------------------------------------------------------------------
def test_nothing_listening_is_refused(settings):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    configure(settings, ALLOW_HOSTS=frozenset({f"127.0.0.1:{port}"}))

    assert refusal(lambda: post(f"http://127.0.0.1:{port}/", body=b"x", headers={})).code == "refused"


def test_name_that_does_not_resolve_is_a_dns_error(settings):
    configure(settings)
    error = refusal(lambda: post("http://nonexistent.invalid/", body=b"x", headers={}))
    assert error.code == "dns_error"
    assert "nonexistent.invalid" in error.detail


# --- TLS: verified, against the name the user gave ----------------------------------------------
def _tls_material(tmp_path, name: str) -> tuple[str, str, str]:
    """A throw-away CA and a certificate it signs for `name`; returns (ca file, cert file, key file)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "axisor test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = (tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return tuple(str(p) for p in paths)


@pytest.fixture
def https_server(http_server, tmp_path) -> Callable[[str], tuple[HTTPRecorder, str, list[str]]]:
    """An HTTPS receiver on 127.0.0.1 with a certificate for `name`; returns it, the CA file and the
    server names (SNI) its clients sent."""

    def start(name: str) -> tuple[HTTPRecorder, str, list[str]]:
        ca_file, cert_file, key_file = _tls_material(tmp_path, name)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        names: list[str] = []
        context.sni_callback = lambda _sock, server_name, _ctx: names.append(server_name)
        return http_server(tls=context), ca_file, names

    return start


def test_https_verifies_the_certificate_against_the_name_in_the_url(settings, monkeypatch, https_server):
    server, ca_file, names = https_server("localhost")
    configure(settings, ALLOW_HOSTS=frozenset({f"localhost:{server.port}"}))
    monkeypatch.setattr(outbound, "_tls_context", lambda: ssl.create_default_context(cafile=ca_file))

    response = post(f"https://localhost:{server.port}/hook", body=b"signed", headers={})

    assert response.status == 200
    assert names == ["localhost"]
    assert server.received[0].body == b"signed"


def test_https_with_a_certificate_for_another_name_is_a_tls_error(settings, monkeypatch, https_server):
    server, ca_file, _names = https_server("receiver.example")
    configure(settings, ALLOW_HOSTS=frozenset({f"localhost:{server.port}"}))
    monkeypatch.setattr(outbound, "_tls_context", lambda: ssl.create_default_context(cafile=ca_file))

    error = refusal(lambda: post(f"https://localhost:{server.port}/", body=b"x", headers={}))

    assert error.code == "tls_error"
    assert server.received == []


def test_https_with_an_untrusted_certificate_is_a_tls_error(settings, https_server):
    server, _ca_file, _names = https_server("localhost")
    configure(settings, ALLOW_HOSTS=frozenset({f"localhost:{server.port}"}))

    error = refusal(lambda: post(f"https://localhost:{server.port}/", body=b"x", headers={}))

    assert error.code == "tls_error"
    assert server.received == []


def test_a_stuck_lookup_holds_one_thread_and_addresses_are_never_looked_up(monkeypatch, settings):
    """An outside review: lookups of a name whose DNS server never answers outlive their callers'
    5 s, each holding a thread of the pool of 8; one user's webhook name filled it, and every user's
    deliveries then failed with dns_error, even to addresses written as such. A name's callers
    now share its one lookup, and an address is not looked up at all."""
    configure(settings, ALLOW_HOSTS=frozenset({"127.0.0.1:18555", "[::1]:18555"}))
    stuck, seen = threading.Event(), []
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        seen.append(host)
        if host.endswith(".stall.example"):
            stuck.wait(30)  # a DNS server that never answers
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    try:
        callers = [
            threading.Thread(
                target=lambda: pytest.raises(OutboundError, outbound._resolve, "hook.stall.example", 443, 0.2)
            )
            for _ in range(12)
        ]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join(10)
        assert seen.count("hook.stall.example") == 1  # twelve callers, one lookup (one thread)
        # ... and names of the same stalled domain (the review's next step: a1 … a8 filled the pool)
        for i in range(8):
            with pytest.raises(OutboundError):
                outbound._resolve(f"a{i}.stall.example", 443, 0.05)
        assert sum(name.endswith(".stall.example") for name in seen) == outbound.LOOKUPS_PER_DOMAIN
        assert outbound._resolve("localhost", 443, 3.0)  # another domain's lookup gets a thread
        # Our own limit is dns_busy (the endpoint's breaker opens on dns_error, not on it); a name
        # under a country's second level counts against its own domain, not all of co.uk
        with pytest.raises(OutboundError) as busy:
            outbound._resolve("a9.stall.example", 443, 0.05)
        assert busy.value.code == "dns_busy"
        assert outbound._domain("hooks.Evil.co.uk.") == "evil.co.uk" and outbound._domain("a.b.example") == "b.example"
        for url in ("http://127.0.0.1:18555/hook", "http://[::1]:18555/hook"):
            check_url(url)  # answered while the name's lookup is still stuck
        assert seen.count("127.0.0.1") == seen.count("::1") == 0
    finally:
        stuck.set()


def test_one_owners_stalled_domains_hold_two_lookup_threads_not_the_pool(monkeypatch):
    """The last round's note: one user saving one stalled domain's URL after another (sixteen
    domains, two names each) could fill the 32 lookup threads, and every user's deliveries then
    waited. Lookups started for one owner are capped (``LOOKUPS_PER_OWNER``): the next is
    ``dns_busy`` at once, without a thread; another owner's lookups, and a name the owner's
    lookup already covers, go on."""
    stuck, seen = threading.Event(), []
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        seen.append(host)
        if host.endswith(".example"):
            stuck.wait(30)  # DNS servers that never answer
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    try:
        for i in range(16):  # sixteen stalled domains, one user
            with pytest.raises(OutboundError) as refused:
                outbound._resolve(f"hook.stall{i}.example", 443, 0.05, "user:7")
            assert refused.value.code == ("dns_error" if i < outbound.LOOKUPS_PER_OWNER else "dns_busy")
        assert sum(name.endswith(".example") for name in seen) == outbound.LOOKUPS_PER_OWNER
        with pytest.raises(OutboundError) as shared:  # a lookup under way is joined, not started
            outbound._resolve("hook.stall0.example", 443, 0.05, "user:7")
        assert shared.value.code == "dns_error"
        assert outbound._resolve("localhost", 443, 3.0, "user:8")  # another user's lookup gets a thread
        with pytest.raises(OutboundError) as other:
            outbound._resolve("hook.other.example", 443, 0.05, "user:8")
        assert other.value.code == "dns_error"  # their own first stalled lookup: not refused
    finally:
        stuck.set()
    until_sync(lambda: not outbound._lookups and not outbound._started_for, what="lookups forgotten once done")


def test_a_lookup_done_before_its_callback_is_attached_does_not_deadlock(monkeypatch):
    """A lookup that finishes at once runs its done-callback in the caller's thread; the callback
    takes the lookups' lock, and attached while it was held, it deadlocked every such lookup."""
    from concurrent.futures import Future

    def submit(fn, *args, **kwargs):
        done = Future()
        done.set_result(fn(*args, **kwargs))
        return done

    monkeypatch.setattr(outbound._resolver, "submit", submit)
    finished = threading.Event()
    threading.Thread(target=lambda: (outbound._resolve("localhost", 443, 1.0), finished.set()), daemon=True).start()
    assert finished.wait(10)
    assert ("localhost", 443) not in outbound._lookups  # forgotten once done
