"""The `@axisor/realtime` package in a real headless Chromium: a small React page (tests/js/realtime_app)
that installs the package from its path, is bundled with esbuild, and uses seed 000's `useWebSocket`
hook on `/ws` and seed 004's Web Worker protocol (the package's worker entry) on `/ws/orders`,
against a real daphne process. The page is served under a strict Content-Security-Policy
(`script-src 'self'`, no inline script), as the staff panel is."""

from __future__ import annotations

import functools
import json
import subprocess
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC

from tests.browser.chrome import chrome
from tests.browser.test_panel_browser import waiting
from tests.conftest import jwt_for
from tests.integration.http import call
from tests.js.test_realtime_package import built_package

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "tests" / "js" / "realtime_app"

pytestmark = pytest.mark.usefixtures("instruments")


@pytest.fixture(scope="module")
def browser():
    driver = chrome(logs=True)  # the console: CSP violations and script errors are reported there
    yield driver
    driver.quit()


def bundle(out: Path) -> None:
    """Bundle app.jsx as a frontend build would (React from npm, the package by its name)."""
    esbuild = APP / "node_modules" / ".bin" / "esbuild"
    assert esbuild.exists(), "tests/js/realtime_app is not installed: run scripts/bootstrap test (npm ci)"
    subprocess.run(
        [
            str(esbuild),
            "app.jsx",
            "--bundle",
            "--format=esm",
            "--jsx=automatic",
            # node_modules/@axisor/realtime is a link to clients/js: resolve React from this app.
            "--preserve-symlinks",
            # React's development build, as `vite dev` serves it: StrictMode mounts every effect twice.
            "--define:process.env.NODE_ENV='development'",
            f"--outfile={out / 'app.js'}",
            "--log-level=warning",
        ],
        cwd=APP,
        check=True,
        timeout=60,
    )
    (out / "index.html").write_text((APP / "index.html").read_text())
    (out / "favicon.ico").write_bytes(b"")  # the browser asks for one; a 404 would be a console error
    (out / "realtime").symlink_to(built_package())  # the worker entry, served as the package ships it


@pytest.fixture
def page_server(tmp_path, daphne):
    server = daphne()
    bundle(tmp_path)
    policy = f"default-src 'self'; script-src 'self'; worker-src 'self'; connect-src 'self' {server.ws}"

    class Handler(SimpleHTTPRequestHandler):
        def end_headers(self):
            self.send_header("Content-Security-Policy", policy)
            super().end_headers()

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(tmp_path)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield server, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def texts(driver, selector: str) -> list[str]:
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, selector)]


def test_react_hook_and_worker_receive_events(browser, page_server, make_user):
    server, page = page_server
    user = make_user("react-page")
    jwt = jwt_for(user)
    status, session = call("POST", f"{server.http}/api/auth/sessions", token=jwt)
    assert status == 201, session
    config = {"ws": server.ws, "jwt": jwt, "session": session["session"], "token": session["token"]}
    config["worker"] = "/realtime/worker.js"
    try:
        browser.get(f"{page}/index.html#{quote(json.dumps(config))}")
        wait = waiting(browser)
        wait.until(EC.text_to_be_present_in_element((By.ID, "state"), "authenticated"))
        assert browser.find_element(By.ID, "connected").text == "yes"
        wait.until(EC.text_to_be_present_in_element((By.ID, "rooms"), "market:BTC_USD"))  # the hook's subscribe
        wait.until(EC.text_to_be_present_in_element((By.ID, "worker-status"), "connected"))

        body = {"tradingSymbol": "BTC_USD", "orderType": "LIMIT", "transactionType": "BUY", "quantity": 1}
        status, order = call("POST", f"{server.http}/api/orders", {**body, "price": 1000, "leverage": 10}, token=jwt)
        assert status == 201, order
        order_id = order["orderId"]
        status, _ = call("POST", f"{server.http}/api/orders/{order_id}/cancel", token=jwt)
        assert status in (200, 202), _

        wait.until(lambda d: len(texts(d, "#orders li")) == 2 and len(texts(d, "#worker-orders li")) == 2)
        hook, worker = texts(browser, "#orders li"), texts(browser, "#worker-orders li")
        assert [line.split(" ", 1)[1] for line in hook] == [f"ORDER_PLACED {order_id}", f"ORDER_CANCELLED {order_id}"]
        assert hook == worker  # the same events with the same seq on both sockets
        assert browser.find_element(By.ID, "error").text == ""
        problems = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not problems, problems  # no CSP violation, no script error, in the page or the worker
    finally:
        browser.get("about:blank")  # close the sockets before the server stops
