"""Hardening case: production transport. ``manage.py check --deploy`` with AXISOR_ENV=production is
clean (it warned W004, W008, W012, W016); a production server behind its TLS proxy redirects plain
HTTP to HTTPS, sends HSTS and Secure cookies, while the health and metrics endpoints still answer a
load balancer over plain HTTP; every page carries the Content-Security-Policy, and no template has
inline script or style for it to block."""

from __future__ import annotations

import http.client
import os
import re
import secrets
import subprocess
import sys

from tests.integration.conftest import ROOT

PRODUCTION = {
    "AXISOR_ENV": "production",
    "SECRET_KEY": secrets.token_urlsafe(50),
    "ALLOWED_HOSTS": "axisor.example.com,127.0.0.1",
    "METRICS_TOKEN": "scrape-me",
}


def test_check_deploy_is_clean_in_production():
    env = {**os.environ, **PRODUCTION, "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/x", "REDIS_URL": "redis://x"}
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues" in done.stdout, done.stdout


def get(server, path: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def test_production_redirects_to_https_behind_the_proxy_and_health_stays_plain(daphne):
    server = daphne(AXISOR_BACKGROUND="0", **PRODUCTION)
    host = {"Host": "axisor.example.com"}

    plain = get(server, "/panel/login", host)
    assert plain.status == 301 and plain.headers["Location"] == "https://axisor.example.com/panel/login"
    assert get(server, "/api/orders", host).status == 301

    # Through the proxy (X-Forwarded-Proto from nginx): secure, HSTS, Secure cookies, the CSP.
    page = get(server, "/panel/login", {**host, "X-Forwarded-Proto": "https"})
    assert page.status == 200
    assert page.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    cookies = page.headers.get_all("Set-Cookie")
    assert cookies and all("; Secure" in c for c in cookies), cookies
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy, policy

    # A load balancer or Prometheus inside the network, straight to the process, plain HTTP.
    assert get(server, "/healthz", host).status == 200
    assert get(server, "/readyz", host).status == 200
    assert get(server, "/metrics", {**host, "Authorization": "Bearer scrape-me"}).status == 200
    assert "Strict-Transport-Security" not in get(server, "/healthz", host).headers  # only on HTTPS


INLINE = [
    (re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I), "inline <script>"),
    (re.compile(r"<style", re.I), "<style> element"),
    (re.compile(r"\son[a-z]+\s*=", re.I), "inline event handler"),
    (re.compile(r"\sstyle\s*=", re.I), "style attribute"),
    (re.compile(r"javascript:", re.I), "javascript: URL"),
]


def test_no_template_has_inline_script_or_style_for_the_csp_to_block():
    found = []
    for template in sorted((ROOT / "templates").rglob("*.html")):
        text = re.sub(r"{%\s*comment\s*%}.*?{%\s*endcomment\s*%}", "", template.read_text(), flags=re.S)
        found += [f"{template.relative_to(ROOT)}: {what}" for pattern, what in INLINE if pattern.search(text)]
    assert not found, found
