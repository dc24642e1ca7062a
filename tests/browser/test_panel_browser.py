"""The staff panel in a real headless Chromium (Debian's chromium + chromedriver, driven by
Selenium without Selenium Manager) against a real daphne process on PostgreSQL and Redis.

Every wait is on the DOM (WebDriverWait) or on a socket, never a sleep. Each page's screenshot is
saved under var/artifacts/panel/ (git-ignored) for a reviewer to look at.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import websocket
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.browser.chrome import chrome
from tests.conftest import jwt_for
from tests.integration.http import call
from tests.panel.grants import EVERY_PANEL_PERMISSION, grant

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "var" / "artifacts" / "panel"
PASSWORD = "staff-pass-123"
WAIT = 20

pytestmark = pytest.mark.usefixtures("instruments")


@pytest.fixture(scope="module")
def browser():
    driver = chrome()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


@pytest.fixture
def server(daphne, browser):
    server = daphne()
    yield server
    # Leave the page before the server stops: an HTTP request still in flight at SIGTERM can keep
    # daphne from exiting (its worker thread waits for the stopped event loop).
    browser.get("about:blank")


@pytest.fixture
def staff(make_user):
    user = make_user("operator", staff=True)
    # An operator granted every page and action (tests/panel/test_permissions.py), who also stands
    # in for the venue and the feed (their REST endpoints take their own permissions)
    grant(user, *EVERY_PANEL_PERMISSION, "orders.add_executionreport", "market.add_tick")
    # The server process uses Django's default hashers; the test settings' fast MD5 is not among them.
    user.password = PBKDF2PasswordHasher().encode(PASSWORD, "panelsalt1234", iterations=1000)
    user.save(update_fields=["password"])
    return user


def log_in(driver, server, staff) -> None:
    driver.get(f"{server.http}/panel/")
    waiting(driver).until(EC.url_contains("/panel/login"))
    driver.find_element(By.ID, "id_username").send_keys(staff.username)
    driver.find_element(By.ID, "id_password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    waiting(driver).until(EC.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Dashboard"))
    live(driver)
    staff.refresh_from_db()  # the server upgraded the cheap test hash at login: later JWTs carry the new one


def waiting(driver) -> WebDriverWait:
    """A wait that polls again when the live page replaced the element it was reading."""
    return WebDriverWait(driver, WAIT, ignored_exceptions=(StaleElementReferenceException,))


def live(driver) -> None:
    """Wait until the page's socket is connected (authenticated with its minted token)."""
    waiting(driver).until(EC.text_to_be_present_in_element_attribute((By.ID, "live"), "data-state", "connected"))


def visit(driver, server, path: str) -> None:
    driver.get(f"{server.http}{path}")
    live(driver)


def text_is(locator, expected: str):
    def check(driver):
        found = driver.find_elements(*locator)
        return bool(found) and found[0].text.strip() == expected

    return check


def screenshot(driver, name: str) -> None:
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def client_socket(server, user) -> websocket.WebSocket:
    sock = websocket.create_connection(
        f"{server.ws}/ws", header=[f"Authorization: Bearer {jwt_for(user)}"], timeout=WAIT
    )
    assert json.loads(sock.recv())["type"] == "connection"
    return sock


def receive_type(sock: websocket.WebSocket, type_: str) -> dict:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        msg = json.loads(sock.recv())
        if msg.get("type") == type_:
            return msg
    raise AssertionError(f"no {type_} within {WAIT} s")


def test_staff_log_in_and_see_a_connection_appear_on_the_dashboard(browser, server, staff, make_user):
    trader = make_user("trader", tier="premium")
    log_in(browser, server, staff)
    ws_total = (By.CSS_SELECTOR, '#endpoint-totals [data-endpoint="/ws"]')
    waiting(browser).until(text_is(ws_total, "1"))  # the panel's own socket
    waiting(browser).until(text_is((By.CSS_SELECTOR, '#room-totals [data-room="admin"]'), "1"))

    sock = client_socket(server, trader)
    try:
        waiting(browser).until(text_is(ws_total, "2"))
        # this server's row (a process an earlier test killed may linger until its lease runs out)
        row = f'#processes tbody tr[data-process$=":{server.proc.pid}"]'
        waiting(browser).until(text_is((By.CSS_SELECTOR, f'{row} [data-col="ws"]'), "2"))
        waiting(browser).until(text_is((By.CSS_SELECTOR, '[data-check="database"]'), "ok"))
        assert browser.find_element(By.CSS_SELECTOR, '[data-check="channelLayer"]').text == "ok"
        assert browser.find_element(By.CSS_SELECTOR, '[data-check="status"]').text == "ready"
        screenshot(browser, "dashboard")
    finally:
        sock.close()
    waiting(browser).until(text_is(ws_total, "1"))


def test_compose_a_notification_and_the_client_receives_it(browser, server, staff, make_user):
    trader = make_user("trader", tier="premium")
    sock = client_socket(server, trader)
    try:
        log_in(browser, server, staff)
        visit(browser, server, "/panel/notifications")
        Select(browser.find_element(By.ID, "id_audience")).select_by_value("user")
        browser.find_element(By.ID, "id_username").send_keys("trader")
        browser.find_element(By.ID, "id_title").send_keys("Desk message")
        browser.find_element(By.ID, "id_message").send_keys("Your limits were raised.")
        Select(browser.find_element(By.ID, "id_type")).select_by_value("success")
        browser.find_element(By.CSS_SELECTOR, "form.stack button[type=submit]").click()

        received = receive_type(sock, "in_app_notification")
        assert received["data"]["title"] == "Desk message" and received["data"]["type"] == "success"
        waiting(browser).until(
            EC.text_to_be_present_in_element((By.CSS_SELECTOR, ".messages"), "Sent 1 notification(s).")
        )
        badge = f'#notifications tr[data-notification="{received["data"]["id"]}"] [data-method="in_app"]'
        # the delivery worker sees the trader online and marks it delivered; the row follows live
        waiting(browser).until(text_is((By.CSS_SELECTOR, badge), "in_app: delivered"))
        screenshot(browser, "notifications")

        # a form error is shown beside its field and sends nothing
        browser.find_element(By.ID, "id_username").send_keys("nobody-here")
        browser.find_element(By.ID, "id_title").send_keys("x")
        browser.find_element(By.ID, "id_message").send_keys("x")
        browser.find_element(By.CSS_SELECTOR, "form.stack button[type=submit]").click()
        waiting(browser).until(
            EC.text_to_be_present_in_element((By.CSS_SELECTOR, "small.error"), "No active user with this name.")
        )
        screenshot(browser, "notifications-error")
    finally:
        sock.close()


def placed(server, trader, quantity: int) -> tuple[dict, str]:
    """A BUY limit the trader places through the API, and its blotter row's selector."""
    body = {"tradingSymbol": "SBIN-EQ", "orderType": "LIMIT", "transactionType": "BUY", "quantity": quantity}
    status, order = call("POST", f"{server.http}/api/orders", {**body, "price": 625.5}, token=jwt_for(trader))
    assert status == 201, order
    return order, f'#orders tr[data-order="{order["orderId"]}"]'


def test_order_status_changes_live_in_the_blotter(browser, server, staff, make_user):
    trader = make_user("trader", tier="premium")
    log_in(browser, server, staff)
    visit(browser, server, "/panel/orders")

    order, row = placed(server, trader, 10)
    waiting(browser).until(text_is((By.CSS_SELECTOR, f'{row} [data-col="orderStatus"]'), "PENDING"))

    def execution(kind: str, exec_id: str, **extra) -> None:
        report = {"orderId": order["orderId"], "execId": exec_id, "type": kind, **extra}
        status, answer = call("POST", f"{server.http}/api/internal/executions", report, token=jwt_for(staff))
        assert status == 200 and answer["applied"], answer

    execution("fill", "venue-1", quantity=4, price=625.5)
    waiting(browser).until(text_is((By.CSS_SELECTOR, f'{row} [data-col="filledQuantity"]'), "4"))
    waiting(browser).until(text_is((By.CSS_SELECTOR, f'{row} [data-col="orderStatus"]'), "OPEN"))
    waiting(browser).until(text_is((By.CSS_SELECTOR, f'{row} [data-col="averagePrice"]'), "625.5"))
    execution("fill", "venue-2", quantity=6, price=625.0)
    waiting(browser).until(text_is((By.CSS_SELECTOR, f'{row} [data-col="orderStatus"]'), "COMPLETE"))
    waiting(browser).until(text_is((By.CSS_SELECTOR, f'{row} [data-col="filledQuantity"]'), "10"))
    waiting(browser).until(text_is((By.CSS_SELECTOR, f'{row} [data-col="averagePrice"]'), "625.2"))
    assert not browser.find_elements(By.CSS_SELECTOR, f"{row} .actions form")  # nothing left to cancel

    # staff cancel from the blotter: a second order, accepted, cancelled with the row's button
    order, row = placed(server, trader, 10)
    execution("accept", "venue-3")
    waiting(browser).until(text_is((By.CSS_SELECTOR, f'{row} [data-col="orderStatus"]'), "OPEN"))
    screenshot(browser, "orders")
    browser.find_element(By.CSS_SELECTOR, f'{row} form[action$="/cancel"] button').click()
    waiting(browser).until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, ".messages"), "cancelled"))
    waiting(browser).until(text_is((By.CSS_SELECTOR, f'{row} [data-col="orderStatus"]'), "CANCELLED"))


def test_an_operator_granted_less_sees_less_and_the_live_rows_follow(browser, server, staff, make_user):
    """Granted only to view orders and the event log: the navigation has only those pages, and an
    order arriving live gets no Cancel/Reject (the page has no actions template to fill them from)."""
    grant(staff, "orders.view_order", "realtime.view_eventlog")
    trader = make_user("trader", tier="premium")
    log_in(browser, server, staff)
    links = {a.text for a in browser.find_elements(By.CSS_SELECTOR, "nav a")}
    assert links == {"Dashboard", "Events", "Orders"}, links
    visit(browser, server, "/panel/orders")
    _, row = placed(server, trader, 1)
    waiting(browser).until(text_is((By.CSS_SELECTOR, f'{row} [data-col="version"]'), "1"))
    assert not browser.find_elements(By.CSS_SELECTOR, f"{row} .actions form")
    browser.get(f"{server.http}/panel/users")
    assert "403" in browser.page_source or "Forbidden" in browser.page_source


def test_every_page_live_and_screenshotted(browser, server, staff, make_user):
    trader = make_user("trader", tier="premium")
    sock = client_socket(server, trader)
    try:
        log_in(browser, server, staff)

        # the event stream shows what flows, and holds it while paused
        visit(browser, server, "/panel/events")
        status, order = call(
            "POST",
            f"{server.http}/api/orders",
            {"tradingSymbol": "SBIN-EQ", "orderType": "MARKET", "transactionType": "BUY", "quantity": 5},
            token=jwt_for(trader),
        )
        assert status == 201
        waiting(browser).until(
            text_is((By.CSS_SELECTOR, "#stream tbody tr[data-type] td:nth-child(2)"), "order_update")
        )
        waiting(browser).until(
            EC.text_to_be_present_in_element((By.CSS_SELECTOR, "#stream tbody tr td.detail"), order["orderId"])
        )
        browser.find_element(By.ID, "pause").click()
        waiting(browser).until(EC.text_to_be_present_in_element((By.ID, "stream-state"), "Paused"))
        status, _ = call(
            "POST",
            f"{server.http}/api/notifications",
            {"userId": trader.pk, "title": "Held", "message": "while paused", "type": "info", "category": "system"},
            token=jwt_for(staff),
        )
        assert status == 201
        waiting(browser).until(EC.text_to_be_present_in_element((By.ID, "held"), "waiting"))
        assert "in_app_notification" not in browser.find_element(By.ID, "stream").text  # held, not shown
        browser.find_element(By.ID, "f-type").send_keys("notification")
        browser.find_element(By.ID, "pause").click()

        def visible_types(driver) -> list[str]:
            rows = driver.find_elements(By.CSS_SELECTOR, "#stream tbody tr[data-type]")
            return [r.get_attribute("data-type") for r in rows if r.is_displayed()]

        waiting(browser).until(lambda d: "in_app_notification" in visible_types(d))
        assert all("notification" in t for t in visible_types(browser))  # the filter hides order_update
        screenshot(browser, "events")

        # system notices: publish a service status; it shows in force live, then end it
        visit(browser, server, "/panel/system")
        browser.find_element(By.ID, "svc_service").send_keys("market-data")
        Select(browser.find_element(By.ID, "svc_status")).select_by_value("degraded")
        browser.find_element(By.ID, "svc_message").send_keys("Delayed quotes")
        browser.find_element(By.CSS_SELECTOR, 'form[action$="/system/status"] button').click()
        assert receive_type(sock, "service_status_update")["data"]["status"] == "degraded"
        waiting(browser).until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, "#in-force"), "market-data degraded"))
        screenshot(browser, "system")

        # market: a tick posted to the server moves the price on the page
        visit(browser, server, "/panel/market")
        status, _ = call(
            "POST",
            f"{server.http}/api/internal/ticks",
            [{"symbol": "BTC_USD", "price": 50123.5, "volume": 2}],
            token=jwt_for(staff),
        )
        assert status == 202
        waiting(browser).until(
            text_is((By.CSS_SELECTOR, '#market tr[data-symbol="BTC_USD"] [data-col="price"]'), "50123.5")
        )
        assert "No margin-guard executions" in browser.find_element(By.ID, "guard").text
        screenshot(browser, "market")

        visit(browser, server, "/panel/users")
        screenshot(browser, "users")
        visit(browser, server, f"/panel/users/{trader.pk}")
        waiting(browser).until(text_is((By.CSS_SELECTOR, '#connections [data-endpoint="/ws"]'), "1"))
        screenshot(browser, "user")
        browser.find_element(By.CSS_SELECTOR, 'form input[name="endpoint"][value="/ws"] + button').click()
        assert receive_type(sock, "error")["code"] == "DISCONNECTED"
        waiting(browser).until(text_is((By.CSS_SELECTOR, '#connections [data-endpoint="/ws"]'), "0"))

        # every page visited before closed its socket on leaving: only this page's is left
        visit(browser, server, "/panel/")
        ws_total = (By.CSS_SELECTOR, '#endpoint-totals [data-endpoint="/ws"]')
        waiting(browser).until(text_is(ws_total, "1"))
        screenshot(browser, "dashboard-after")
    finally:
        sock.close()

    browser.delete_all_cookies()
    browser.get(f"{server.http}/panel/login")
    screenshot(browser, "login")
