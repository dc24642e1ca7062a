"""Every outbound HTTP call made on a user's behalf (webhooks) goes through here, so a URL a user
typed can never make us reach our own network, the cloud metadata service, or any non-public host."""

from __future__ import annotations

import functools
import http.client
import ipaddress
import re
import socket
import ssl
import threading
import time
import urllib.parse
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from django.conf import settings

MAX_URL_LENGTH = 2000
DETAIL_BYTES = 500
# A lookup of a name whose DNS server never answers waits for the resolver's own timeouts (tens of
# seconds with retries and search domains). It runs on this small pool and the caller waits at most
# this long (less when the attempt's deadline is nearer); a stuck lookup holds a pool thread, not
# the caller. Eight stuck at once would make the next lookups wait their turn and time out too:
# an address written as such is never looked up, and a name already being looked up is not looked
# up again (its callers share the lookup), so stuck threads take as many stuck names at once (an
# outside review filled the pool from one user's webhook name and failed every user's deliveries).
DNS_SECONDS = 5.0
# A thread waiting on a lookup costs its stack's memory, not CPU: 32 of them, so that filling the
# pool takes 16 stalled domains (LOOKUPS_PER_DOMAIN each), not four (the second review).
_resolver = ThreadPoolExecutor(max_workers=32, thread_name_prefix="outbound-dns")
_lookups: dict[tuple[str, int], Future] = {}  # the lookups under way, by name and port
_lookups_lock = threading.Lock()
# Lookups under way at once of the names of one domain (its last two labels): a domain whose DNS
# server never answers holds this many threads, however many names of it are asked for (the
# outside review's next step: eight names of one stalled zone, a1.stall.example … a8, filled the
# pool as well). The ninth and later are refused at once, without a thread.
LOOKUPS_PER_DOMAIN = 2
# Lookups started for one owner (a user: their webhook URL saved, their deliveries) under way at
# once, over all domains: a user who saves one stalled domain's URL after another holds this many
# threads, not the pool (the last round's note: sixteen stalled domains of one user filled it).
LOOKUPS_PER_OWNER = 2
_started_for: dict[tuple[str, int], str] = {}  # the owner each lookup under way was started for

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# What a user is told instead of a code that would describe our network: whether a name resolves
# to a private address (one of our internal names: ``blocked_address``) or not at all
# (``dns_error``) maps our internal DNS for anyone who can save a URL, or point a name of their own
# at ours (a CNAME) after saving it. Both are ``host_not_public`` to the user; logs and staff keep
# the code and the detail (the resolved addresses).
PUBLIC_CODES = {"blocked_address": "host_not_public", "dns_error": "host_not_public"}


class OutboundError(Exception):
    """code: short, generic (never remote text), for logs and staff, and ``public_code`` what the
    user may see of it; detail: for staff only (admin)."""

    def __init__(self, code: str, detail: str = "") -> None:
        # Only the code goes into args, so str(exc) and tracebacks shown to a user carry no remote text.
        super().__init__(code)
        self.code = code
        self.detail = detail

    @property
    def public_code(self) -> str:
        return PUBLIC_CODES.get(self.code, self.code)


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes  # at most max_response_bytes; the rest is not read


# --- which addresses we refuse ----------------------------------------------------------------
# `is_global` alone is not enough: what it knows depends on the Python patch release (3.11.7 calls
# 64:ff9b:1::/48 and 3fff::/20 global), so the ranges that must never be reached are also listed here.
_BLOCKED_V4 = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",  # "this network"; 0.0.0.0 reaches the local host on Linux
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, home of the cloud metadata service
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation
        "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation
        "203.0.113.0/24",  # documentation
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, including 255.255.255.255
    )
)
_BLOCKED_V6 = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "::/128",
        "::1/128",
        "64:ff9b:1::/48",  # local-use NAT64: translates into the operator's own network
        "100::/64",  # discard-only
        "2001::/23",  # IETF protocol assignments: Teredo 2001::/32, benchmarking 2001:2::/48, ORCHID
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation
        "5f00::/16",  # SRv6 segment identifiers
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")  # SIIT (RFC 2765): a translator delivers it to IPv4
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _embedded_v4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries, which the network may deliver to in the end."""
    found = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip in _IPV4_COMPATIBLE or ip in _NAT64 or ip in _IPV4_TRANSLATED:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    return found


def _is_public(ip: IPAddress) -> bool:
    if not ip.is_global or ip.is_multicast:
        return False
    if isinstance(ip, ipaddress.IPv4Address):
        return not any(ip in net for net in _BLOCKED_V4)
    if any(ip in net for net in _BLOCKED_V6):
        return False
    return all(_is_public(v4) for v4 in _embedded_v4(ip))


# --- the URL ----------------------------------------------------------------------------------
_LABEL = re.compile(r"[a-z0-9_-]{1,63}")
_DEFAULT_PORTS = {"https": 443, "http": 80}
# Characters left as they are when the path is percent-encoded: the reserved set and '%' (so an
# already-encoded path is not encoded twice).
_PATH_SAFE = "/%:@!$&'()*+,;=-._~?"


@dataclass(frozen=True)
class _Target:
    scheme: str
    hostname: str  # lower-case, ASCII (IDNA), no brackets, no trailing dot
    port: int
    host_header: str
    path: str
    addresses: tuple[tuple[int, Any], ...]  # (family, sockaddr) exactly as getaddrinfo gave them


def _conf() -> dict[str, Any]:
    return settings.AXISOR_OUTBOUND


def _refuse_characters(url: str) -> None:
    if len(url) > MAX_URL_LENGTH:
        raise OutboundError("invalid_url", detail=f"longer than {MAX_URL_LENGTH} characters")
    for char in url:
        # Control characters and whitespace are how request smuggling and parser disagreements start.
        if ord(char) < 0x21 or 0x7F <= ord(char) <= 0x9F or char.isspace():
            raise OutboundError("invalid_url", detail=f"contains {char!r}")


def _hostname(parts: urllib.parse.SplitResult) -> tuple[str, bool]:
    """The host to resolve (validated, ASCII) and whether it is an IPv6 literal."""
    host = parts.hostname
    if not host:
        raise OutboundError("invalid_url", detail="no host")
    if "%" in host:
        # A zone id (fe80::1%eth0) picks an interface, and percent-escapes have no place in a host.
        raise OutboundError("invalid_url", detail=f"zone id or escape in host {host!r}")
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host).compressed, True
        except ValueError:
            raise OutboundError("invalid_url", detail=f"bad IPv6 literal {host!r}") from None
    # One trailing dot is the fully-qualified spelling of the same name.
    host = host.removesuffix(".")
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise OutboundError("invalid_url", detail=f"bad host name {host!r}") from None
    host = host.lower()
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in host.split(".")):
        raise OutboundError("invalid_url", detail=f"bad host name {host!r}")
    return host, False


def _domain(host: str) -> str:
    """The domain a name's lookups count against: its last two labels, three under a country's
    second level (``evil.co.uk``, ``shop.com.au``: not all of ``co.uk``, whose other names a stalled
    one would otherwise refuse, as the second review showed)."""
    labels = host.rstrip(".").lower().split(".")
    keep = 3 if len(labels) >= 3 and len(labels[-1]) == 2 and len(labels[-2]) <= 3 else 2
    return ".".join(labels[-keep:])


def _lookup(host: str, port: int, owner: str | None) -> Future:
    """The lookup of ``host`` under way, or a new one on the pool: one at a time per name, at most
    LOOKUPS_PER_DOMAIN at a time per domain and LOOKUPS_PER_OWNER started for one ``owner``
    (OutboundError ``dns_busy`` beyond: our own limit, which does not open the endpoint's breaker
    as a lookup with no answer does)."""
    with _lookups_lock:
        lookup = _lookups.get((host, port))
        if lookup is not None:
            return lookup
        domain = _domain(host)
        if sum(_domain(name) == domain for name, _port in _lookups) >= LOOKUPS_PER_DOMAIN:
            raise OutboundError("dns_busy", detail=f"{host}: {LOOKUPS_PER_DOMAIN} lookups in {domain} under way")
        if owner is not None and sum(by == owner for by in _started_for.values()) >= LOOKUPS_PER_OWNER:
            raise OutboundError("dns_busy", detail=f"{host}: {LOOKUPS_PER_OWNER} lookups for {owner} under way")
        lookup = _lookups[host, port] = _resolver.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        if owner is not None:
            _started_for[host, port] = owner
    # Outside the lock: a lookup already done runs its callback here and now, and the callback
    # takes the lock (held, that deadlocked every fast lookup).
    lookup.add_done_callback(lambda done: _forget_lookup(host, port, done))
    return lookup


def _forget_lookup(host: str, port: int, done: Future) -> None:
    with _lookups_lock:
        if _lookups.get((host, port)) is done:
            del _lookups[host, port]
            _started_for.pop((host, port), None)


def _resolve(host: str, port: int, seconds: float, owner: str | None = None) -> tuple[tuple[int, Any], ...]:
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:  # nothing to look up
        family = socket.AF_INET if literal.version == 4 else socket.AF_INET6
        return ((family, (host, port) if family == socket.AF_INET else (host, port, 0, 0)),)
    lookup = _lookup(host, port, owner)
    try:
        infos = lookup.result(timeout=max(0.0, seconds))
    except FutureTimeout:
        raise OutboundError("dns_error", detail=f"{host}: no answer within {seconds:.1f} s") from None
    except (OSError, UnicodeError) as exc:
        raise OutboundError("dns_error", detail=f"{host}: {exc!r}") from None
    addresses = []
    for family, _type, _proto, _canon, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            raise OutboundError("blocked_address", detail=f"{host} resolved to family {family!r}")
        if (family, sockaddr) not in addresses:
            addresses.append((family, sockaddr))
    if not addresses:
        raise OutboundError("dns_error", detail=f"{host}: no addresses")
    return tuple(addresses)


def origin(url: str) -> tuple[str, str, int | None]:
    """Where a URL calls: scheme, host and port (the scheme's default when none is given), read
    as ``_check`` reads them; for a URL that already passed it (a saved webhook's)."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").rstrip("."), parts.port or _DEFAULT_PORTS.get(scheme)


def _check(url: str, conf: dict[str, Any], dns_seconds: float = DNS_SECONDS, owner: str | None = None) -> _Target:
    if not isinstance(url, str):
        raise OutboundError("invalid_url", detail=f"not a string: {type(url).__name__}")
    _refuse_characters(url)
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:
        raise OutboundError("invalid_url", detail=repr(exc)) from None

    scheme = parts.scheme.lower()
    allowed = {"https"} if conf["HTTPS_ONLY"] else {"https", "http"}
    if scheme not in allowed:
        raise OutboundError("scheme_not_allowed", detail=f"scheme {scheme!r}")
    if "@" in parts.netloc:
        # Credentials would be sent to whoever answers, and `a@b` is a classic way to disguise the host.
        raise OutboundError("credentials_in_url")

    host, ipv6_literal = _hostname(parts)
    try:
        explicit_port = parts.port
    except ValueError as exc:
        raise OutboundError("invalid_url", detail=repr(exc)) from None
    port = _DEFAULT_PORTS[scheme] if explicit_port is None else explicit_port

    # Decided on the name as written, before any DNS, so the allow-list cannot be reached by a
    # different spelling of a private address.
    shown = f"[{host}]" if ipv6_literal else host
    allow_listed = f"{shown}:{port}" in conf["ALLOW_HOSTS"]
    if not allow_listed and port not in conf["PORTS"]:
        raise OutboundError("port_not_allowed", detail=f"port {port}")

    addresses = _resolve(host, port, dns_seconds, owner)
    if not allow_listed:
        for _family, sockaddr in addresses:
            try:
                ip = ipaddress.ip_address(sockaddr[0])
            except ValueError:
                raise OutboundError("blocked_address", detail=f"{host} resolved to {sockaddr!r}") from None
            if not _is_public(ip):
                raise OutboundError("blocked_address", detail=f"{host} resolved to {ip}")

    path = urllib.parse.quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        path += "?" + urllib.parse.quote(parts.query, safe=_PATH_SAFE)
    host_header = shown if explicit_port is None or port == _DEFAULT_PORTS[scheme] else f"{shown}:{port}"
    return _Target(scheme, host, port, host_header, path, addresses)


def check_url(url: str, *, owner: str | None = None) -> None:
    """Refuse (raise OutboundError) a URL we must never call; resolves the host (DNS) and checks every
    address. Used when a user saves a webhook URL, and again at each delivery. ``owner``: whose
    URL it is (``user:<id>``), for LOOKUPS_PER_OWNER."""
    _check(url, _conf(), owner=owner)


# --- the call ---------------------------------------------------------------------------------
class _Deadline:
    """One total deadline for an attempt. Socket timeouts bound each blocking operation, but a peer
    that drips a byte just before each one expires would never trip them; this watchdog shuts the
    connection down when the total runs out, whatever the caller is blocked in."""

    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds
        self._lock = threading.Lock()
        # A dup of the connection's socket that belongs to the watchdog alone: shutting it down ends
        # the connection for the caller's descriptor too, and closing it can never close a
        # descriptor number the caller is still using (or that was reused meanwhile).
        self._sock: socket.socket | None = None
        self._stopped = False
        self.expired = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        left = self._end - time.monotonic()
        if left <= 0 or self.expired:
            raise TimeoutError("total deadline passed")
        return left

    def watch(self, sock: socket.socket) -> None:
        """From now on the deadline ends `sock` (a new connection attempt replaces the last one)."""
        with self._lock:
            self._forget()
            if self._stopped:
                return
            self._sock = sock.dup()

    def stop(self) -> None:
        self._timer.cancel()
        with self._lock:
            self._stopped = True
            self._forget()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            if self._sock is not None:
                try:
                    self._sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # not connected (yet, or any more): nothing to interrupt
            self._forget()

    def _forget(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class _Connection(http.client.HTTPConnection):
    """http.client on a socket we connected (and checked) ourselves: it never looks the name up again."""

    def __init__(self, target: _Target, sock: socket.socket, timeout: float) -> None:
        super().__init__(target.hostname, target.port, timeout=timeout)
        self._ready = sock

    def connect(self) -> None:
        self.sock = self._ready


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Certificate and host name verification on (the defaults); built once, it is safe to share.
    return ssl.create_default_context()


def _connect(target: _Target, deadline: _Deadline) -> socket.socket:
    """Connect to the very addresses that were checked: looking the name up again would let a DNS
    answer that changed in between (rebinding) send us somewhere else."""
    last: OSError | None = None
    for family, sockaddr in target.addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            deadline.watch(sock)
            sock.settimeout(deadline.remaining())
            sock.connect(sockaddr)
            return sock
        except TimeoutError:
            sock.close()
            raise  # the whole budget went on this address
        except OSError as exc:
            sock.close()
            last = exc
    raise last or OSError("no address to connect to")


def _read(response: http.client.HTTPResponse, limit: int, sock: socket.socket, deadline: _Deadline) -> bytes:
    chunks: list[bytes] = []
    left = limit
    # http.client closes the socket itself once the body it announced has been read.
    while left > 0 and not response.isclosed():
        sock.settimeout(deadline.remaining())
        chunk = response.read(min(left, 65536))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _failure(exc: BaseException, deadline: _Deadline, where: str) -> OutboundError:
    detail = f"{where}: {exc!r}"
    # After the watchdog fires, whatever the caller was blocked in fails in its own way (reset,
    # EOF, incomplete read, TLS error): all of it is the deadline.
    if deadline.expired or isinstance(exc, TimeoutError):
        return OutboundError("timeout", detail=detail)
    if isinstance(exc, ConnectionRefusedError):
        return OutboundError("refused", detail=detail)
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return OutboundError("tls_error", detail=detail)
    return OutboundError("connection_error", detail=detail)


def post(
    url: str,
    *,
    body: bytes,
    headers: dict[str, str],
    timeout: float | None = None,
    max_response_bytes: int | None = None,
    owner: str | None = None,
) -> Response:
    """POST once. Raises OutboundError for anything but a 2xx answer. ``owner``: on whose behalf
    (``user:<id>``), for LOOKUPS_PER_OWNER."""
    conf = _conf()
    seconds = conf["TIMEOUT_SECONDS"] if timeout is None else timeout
    limit = conf["MAX_RESPONSE_BYTES"] if max_response_bytes is None else max_response_bytes
    # The clock starts before the name is resolved: a slow resolver spends the same budget (though a
    # lookup already under way cannot be interrupted).
    deadline = _Deadline(seconds)
    sock: socket.socket | None = None
    connection: _Connection | None = None
    response: http.client.HTTPResponse | None = None
    where = url
    try:
        target = _check(url, conf, min(DNS_SECONDS, deadline.remaining()), owner)
        where = target.hostname
        sock = _connect(target, deadline)
        where = f"{target.hostname} at {sock.getpeername()[0]}"
        if target.scheme == "https":
            sock.settimeout(deadline.remaining())
            # The original name, so the certificate is checked against what the user asked for,
            # although we connected to an address.
            sock = _tls_context().wrap_socket(sock, server_hostname=target.hostname)
        sock.settimeout(deadline.remaining())
        connection = _Connection(target, sock, deadline.remaining())
        request_headers = {k: v for k, v in headers.items() if k.lower() != "host"}
        request_headers["Host"] = target.host_header
        connection.request("POST", target.path, body=body, headers=request_headers)
        sock.settimeout(deadline.remaining())
        # http.client never follows redirects: a 3xx is one more non-2xx answer below.
        response = connection.getresponse()
        ok = 200 <= response.status < 300
        data = _read(response, limit if ok else DETAIL_BYTES, sock, deadline)
        if deadline.expired:
            # A body without a length ends at EOF, and the watchdog's shutdown looks like one.
            raise TimeoutError("total deadline passed while reading the body")
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise _failure(exc, deadline, where) from None
    finally:
        deadline.stop()
        # The response holds the socket open until it is closed (http.client hands the connection
        # to it), and we usually stop reading before the end.
        if response is not None:
            response.close()
        if connection is not None:
            connection.close()
        if sock is not None:
            sock.close()
    if not ok:
        raise OutboundError(f"http_{response.status}", detail=data[:DETAIL_BYTES].decode("utf-8", errors="replace"))
    return Response(status=response.status, body=data)
