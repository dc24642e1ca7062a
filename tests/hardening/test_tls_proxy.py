"""Hardening case: the TLS example, run for real. deploy/nginx.conf itself (its ports, certificate
and log path replaced) in a private nginx with a certificate made here, in front of a real daphne in
production mode: an HTTPS request is secure to Django (no redirect, HSTS), plain HTTP is sent to
HTTPS, wss:// reaches both socket endpoints, and a 30 MiB body is refused by nginx in the API's error
shape. (nginx: Debian's package, which scripts/bootstrap installs.)"""

from __future__ import annotations

import asyncio
import datetime
import http.client
import ipaddress
import json
import os
import secrets
import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import websockets
from channels.db import database_sync_to_async
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.conf import settings

from tests.conftest import jwt_for
from tests.hardening.conftest import ROOT, recv_json, wait_port
from tests.integration.http import free_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
HOSTS = "127.0.0.1,axisor.example.com"


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "axisor test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("axisor.example.com")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "fullchain.pem", directory / "privkey.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@dataclass
class Nginx:
    proc: subprocess.Popen
    https_port: int
    http_port: int
    cert: Path
    prefix: Path

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))

    def log(self) -> str:
        return (self.prefix / "error.log").read_text(errors="replace")

    def access_log(self) -> str:
        return (self.prefix / "access.log").read_text(errors="replace")


DAPHNE_SERVER = "    server 127.0.0.1:{port} max_fails=0;\n"


def example_config(
    daphne_ports: list[int], rest_port: int, https_port: int, http_port: int, cert: Path, key: Path, log: Path
) -> str:
    """deploy/nginx.conf with this machine's ports and files; each replacement must match. The
    sockets' upstream gets one server line per daphne port, the REST upstream ``rest_port``."""
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    replacements = [
        (DAPHNE_SERVER.format(port=8001) + DAPHNE_SERVER.format(port=8002),
         "".join(DAPHNE_SERVER.format(port=port) for port in daphne_ports)),
        ("server 127.0.0.1:8100 max_fails=0;", f"server 127.0.0.1:{rest_port} max_fails=0;"),
        ("listen 80;", f"listen 127.0.0.1:{http_port};"),
        ("listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;"),
        ("/etc/ssl/axisor/fullchain.pem", str(cert)),
        ("/etc/ssl/axisor/privkey.pem", str(key)),
        ("/var/log/nginx/axisor.log", str(log)),
        ("error_log /var/log/nginx/error.log crit;", f"error_log {log.with_name('error.log')} crit;"),
    ]  # fmt: skip
    for old, new in replacements:
        assert old in conf, f"deploy/nginx.conf no longer has {old!r}: update this test"
        conf = conf.replace(old, new)
    return conf


@pytest.fixture
def nginx(tmp_path):
    if not Path(NGINX).exists():
        pytest.fail("nginx is missing: scripts/bootstrap installs it (apt-get install nginx)")
    started: list[Nginx] = []

    def start(upstream_port: int | list[int], rest_port: int | None = None) -> Nginx:
        """nginx in front of daphne on ``upstream_port`` (one port, or a list: the sockets' upstream)
        and the REST tier on ``rest_port`` (default: the first daphne port)."""
        ports = [upstream_port] if isinstance(upstream_port, int) else list(upstream_port)
        prefix = tmp_path / f"nginx-{len(started)}"
        prefix.mkdir()
        cert, key = self_signed(prefix)
        https_port, http_port = free_port(), free_port()
        (prefix / "axisor.conf").write_text(
            example_config(ports, rest_port or ports[0], https_port, http_port, cert, key, prefix / "access.log")
        )
        kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        temp = "\n".join(f"  {kind}_temp_path {prefix / kind};" for kind in kinds)
        (prefix / "nginx.conf").write_text(
            f"daemon off;\nworker_processes 1;\npid {prefix / 'nginx.pid'};\nerror_log {prefix / 'error.log'} warn;\n"
            + ("user root root;\n" if os.geteuid() == 0 else "")
            + "events { worker_connections 256; }\n"
            + f"http {{\n{temp}\n  include {prefix / 'axisor.conf'};\n}}\n"
        )
        proc = subprocess.Popen(
            [NGINX, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(prefix / "nginx.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        server = Nginx(proc, https_port, http_port, cert, prefix)
        started.append(server)
        try:
            wait_port(https_port, timeout=15)
        except AssertionError:
            proc.kill()
            said = proc.stderr.read() if proc.poll() is not None else ""
            raise AssertionError(f"nginx did not start: {said}\n{server.log()}") from None
        return server

    yield start
    for server in started:
        server.proc.terminate()
        server.proc.wait(timeout=15)


def https(proxy: Nginx, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    conn = http.client.HTTPSConnection("127.0.0.1", proxy.https_port, context=proxy.context(), timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def plain(port: int, path: str) -> tuple[int, str | None]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status, response.headers["Location"]
    finally:
        conn.close()


async def test_the_tls_example_in_front_of_a_production_daphne(daphne, nginx, make_user, instruments):
    env = {
        "AXISOR_ENV": "production",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": HOSTS,
        "JWT_SIGNING_KEY": settings.SIMPLE_JWT["SIGNING_KEY"],  # the tokens this test mints
    }
    server = await asyncio.to_thread(daphne, AXISOR_BACKGROUND="0", AXISOR_SIMULATE="", **env)
    proxy = await asyncio.to_thread(nginx, server.port)
    user = await database_sync_to_async(make_user)("tls")
    auth = {"Authorization": f"Bearer {jwt_for(user)}", "Content-Type": "application/json"}

    # HTTPS through nginx: Django sees a secure request (X-Forwarded-Proto), so no redirect, and HSTS.
    status, headers, body = await asyncio.to_thread(https, proxy, "GET", "/api/orders", None, auth)
    assert status == 200, body
    assert headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    # The same request to daphne directly, plain HTTP, is redirected: the header made the difference.
    assert (await asyncio.to_thread(plain, server.port, "/api/orders"))[0] == 301
    # Plain HTTP to nginx: to HTTPS.
    status, location = await asyncio.to_thread(plain, proxy.http_port, "/panel/?x=1")
    assert status == 301 and location == "https://127.0.0.1/panel/?x=1"

    # A 30 MiB body: refused by nginx (client_max_body_size) in the API's error shape.
    huge = b'{"tradingSymbol": "' + b"x" * (30 << 20) + b'"}'
    status, _, body = await asyncio.to_thread(https, proxy, "POST", "/api/orders", huge, auth)
    assert status == 413 and json.loads(body)["code"] == "request_too_large", body

    # wss:// to /ws, and to /ws/orders, which hears an order placed over HTTPS.
    wss = f"wss://127.0.0.1:{proxy.https_port}"
    bearer = {"Authorization": auth["Authorization"]}
    async with websockets.connect(f"{wss}/ws", ssl=proxy.context(), additional_headers=bearer) as sock:
        assert (await recv_json(sock))["type"] == "connection"
    status, _, body = await asyncio.to_thread(https, proxy, "POST", "/api/auth/sessions", b"", auth)
    assert status == 201, body
    creds = json.loads(body)
    orders_url = f"{wss}/ws/orders?session={creds['session']}&token={creds['token']}"
    async with websockets.connect(orders_url, ssl=proxy.context()) as orders:
        order = {"tradingSymbol": "SBIN-EQ", "orderType": "LIMIT", "transactionType": "BUY", "quantity": 1}
        order["price"] = 625.5
        status, _, body = await asyncio.to_thread(https, proxy, "POST", "/api/orders", json.dumps(order).encode(), auth)
        assert status == 201, body
        while (raw := await asyncio.wait_for(orders.recv(), 10)) == "PING":
            pass
        update = json.loads(raw)
        assert (update["orderId"], update["updateType"]) == (json.loads(body)["orderId"], "ORDER_PLACED")
    assert "[emerg]" not in proxy.log() and "[crit]" not in proxy.log(), proxy.log()

    # Every process down (here: the REST upstream is a port nothing listens on): the API's error
    # shape with Retry-After, not nginx's HTML 502 page (an outside operator's deployment run), and
    # not 503 service_unavailable, which promises nothing changed (the diff review: a 504's request
    # may have committed).
    down = await asyncio.to_thread(nginx, server.port, free_port())
    status, headers, body = await asyncio.to_thread(https, down, "GET", "/api/orders", None, auth)
    assert status == 502 and headers["Content-Type"] == "application/json", (status, body)
    assert json.loads(body)["code"] == "upstream_unavailable" and headers["Retry-After"] == "2"
