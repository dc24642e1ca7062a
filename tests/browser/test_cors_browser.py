"""CORS, as a real Chromium enforces it: a page on another origin (``http://app.test:<port>``, served
by the test; Chromium resolves the name to 127.0.0.1) that ``CORS_ALLOWED_ORIGINS`` lists signs in,
places an order with an ``Idempotency-Key``, reads ``Retry-After`` off a throttled answer and opens
``/ws``; a page on an origin not listed (``http://other.test:<port>``) can do none of it, and its
order never reaches the server (the browser's preflight is refused first). The panel never answers
with CORS headers, whatever the origin."""

from __future__ import annotations

import http.client
import http.server
import threading
import time

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from orders.models import Order
from tests.browser.chrome import chrome
from tests.polling import window_room

pytestmark = pytest.mark.usefixtures("instruments")

PASSWORD = "cors-test-password-1"
PAGE = b"<!doctype html><title>another origin</title><p>app"

# From the page: sign in, place an order, open /ws; every step's outcome, never an exception.
SCRIPT = """
const [api, ws, username, password, done] = arguments;
const out = {};
try {
  const signIn = await fetch(api + "/api/auth/token", {method: "POST",
    headers: {"Content-Type": "application/json"}, body: JSON.stringify({username, password})});
  out.signIn = signIn.status;
  const {access} = await signIn.json();
  const placed = await fetch(api + "/api/orders", {method: "POST",
    headers: {"Authorization": "Bearer " + access, "Content-Type": "application/json", "Idempotency-Key": "cors-1"},
    body: JSON.stringify({tradingSymbol: "BTC_USD", orderType: "LIMIT", transactionType: "BUY",
                          quantity: "0.001", price: "1000"})});
  out.order = placed.status;
  let throttled = null;
  for (let i = 0; i < 12 && !throttled; i++) {  // the per-username sign-in rate is 10 a minute
    const r = await fetch(api + "/api/auth/token", {method: "POST",
      headers: {"Content-Type": "application/json"}, body: JSON.stringify({username, password: "wrong"})});
    if (r.status === 429) throttled = r;
  }
  out.retryAfter = throttled && throttled.headers.get("Retry-After");
  out.socket = await new Promise((resolve) => {
    const sock = new WebSocket(ws + "/ws");
    sock.onopen = () => sock.send(JSON.stringify({type: "auth", token: access}));
    sock.onmessage = (m) => { resolve(JSON.parse(m.data).status); sock.close(); };
    sock.onerror = () => resolve("refused");
  });
} catch (e) {
  out.error = String(e);
}
done(out);
"""


@pytest.fixture
def page_port():
    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(PAGE)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def browser():
    driver = chrome(args=("--host-resolver-rules=MAP app.test 127.0.0.1, MAP other.test 127.0.0.1",))
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


def test_a_listed_origin_may_call_the_api_and_open_sockets_and_another_may_not(daphne, browser, page_port, make_user):
    user = make_user("corsuser", tier="premium")
    user.password = PBKDF2PasswordHasher().encode(PASSWORD, "corssalt1234", iterations=1000)
    user.save(update_fields=["password"])
    server = daphne(AXISOR_SIMULATE="", CORS_ALLOWED_ORIGINS=f"http://app.test:{page_port}")

    def from_page(host: str) -> dict:
        browser.get(f"http://{host}:{page_port}/")
        return browser.execute_async_script(SCRIPT, server.http, server.ws, user.username, PASSWORD)

    # The throttle counts per fixed window: the sign-ins of this burst must fall in one of them.
    time.sleep(window_room(need=20))
    listed = from_page("app.test")
    assert listed == {"signIn": 200, "order": 201, "retryAfter": listed["retryAfter"], "socket": "connected"}
    assert listed["retryAfter"] and int(listed["retryAfter"]) > 0
    assert Order.objects.filter(user=user).count() == 1

    other = from_page("other.test")
    assert other == {"error": "TypeError: Failed to fetch"}
    assert Order.objects.filter(user=user).count() == 1

    # The socket on its own, from the origin not listed: refused at the handshake.
    browser.get(f"http://other.test:{page_port}/")
    refused = browser.execute_async_script(
        "const [ws, done] = arguments; const s = new WebSocket(ws + '/ws');"
        "s.onopen = () => done('open'); s.onerror = () => done('refused');",
        server.ws,
    )
    assert refused == "refused"

    # The panel and the admin stay same-origin: no CORS header for any origin.
    for path in ("/panel/login", "/admin/login/"):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("OPTIONS", path, headers={"Origin": f"http://app.test:{page_port}",
                                               "Access-Control-Request-Method": "POST"})  # fmt: skip
        response = conn.getresponse()
        response.read()
        assert response.getheader("Access-Control-Allow-Origin") is None, path
