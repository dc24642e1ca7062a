"""The Content-Security-Policy in a real headless Chromium: the panel, the Django admin and the API
docs (Swagger UI from drf-spectacular-sidecar) work under it with no violation in the console, and
/api/docs loads nothing from another host (Chrome's performance log and the page's own
``performance.getEntries()``)."""

from __future__ import annotations

import json
import urllib.request
from urllib.parse import urlsplit

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC

from tests.browser.chrome import chrome
from tests.browser.test_panel_browser import log_in, staff, visit, waiting  # noqa: F401

pytestmark = pytest.mark.usefixtures("instruments")


@pytest.fixture(scope="module")
def browser():
    driver = chrome(logs=True)
    yield driver
    driver.quit()


@pytest.fixture
def server(daphne, browser):
    server = daphne(AXISOR_SIMULATE="")
    browser.get_log("browser")  # start each test with empty logs
    browser.get_log("performance")
    yield server
    browser.get("about:blank")


def violations(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if "Content Security Policy" in e["message"]]


def requested_hosts(driver) -> set[str]:
    """Every host the page asked for anything since the last call (Chrome's network events)."""
    hosts = set()
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            url = urlsplit(message["params"]["request"]["url"])
            if url.scheme not in ("data", "blob", "about"):
                hosts.add(url.netloc)
    return hosts


def csp_of(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.headers["Content-Security-Policy"]


def test_panel_and_admin_work_under_the_csp_without_a_violation(browser, server, staff):  # noqa: F811
    policy = csp_of(f"{server.http}/panel/login")
    assert "script-src 'self'" in policy and "style-src 'self'" in policy and "unsafe-inline" not in policy
    staff.is_superuser = True  # for the admin's change lists
    staff.save(update_fields=["is_superuser"])
    log_in(browser, server, staff)
    for page in ("/panel/events", "/panel/orders", "/panel/notifications", "/panel/system", "/panel/market"):
        visit(browser, server, page)  # each page's socket connects: connect-src 'self' covers ws:
    # The event filters' form is never submitted (its inline onsubmit handler moved to panel.js):
    # dispatchEvent answers false when a listener cancelled the submit.
    visit(browser, server, "/panel/events")
    submit = "return document.getElementById('event-filters').dispatchEvent(new Event('submit', {cancelable: true}))"
    assert browser.execute_script(submit) is False

    # The Django admin: index, a change list with its actions, a change form and its scripts.
    for path in ("/admin/", "/admin/accounts/user/", f"/admin/accounts/user/{staff.pk}/change/"):
        browser.get(f"{server.http}{path}")
        waiting(browser).until(EC.presence_of_element_located((By.ID, "content")))
    assert browser.execute_script("return typeof django !== 'undefined' && typeof django.jQuery") == "function"
    assert not violations(browser), violations(browser)
    assert requested_hosts(browser) == {urlsplit(server.http).netloc}


def test_api_docs_render_from_this_origin_only(browser, server):
    policy = csp_of(f"{server.http}/api/docs")
    assert "script-src 'self'" in policy
    browser.get(f"{server.http}/api/docs")
    waiting(browser).until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, ".swagger-ui .info .title"), "Axisor"))
    waiting(browser).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= 20)
    browser.find_element(By.CSS_SELECTOR, ".opblock-summary").click()  # an operation opens
    waiting(browser).until(EC.presence_of_element_located((By.CSS_SELECTOR, ".opblock-body")))

    origin = urlsplit(server.http).netloc
    entries = browser.execute_script("return performance.getEntries().map((e) => e.name)")
    foreign = [n for n in entries if n.startswith("http") and urlsplit(n).netloc != origin]
    assert not foreign, foreign
    hosts = requested_hosts(browser)
    assert hosts == {origin}, hosts
    assert not violations(browser), violations(browser)
    print(f"\n/api/docs: {len(entries)} resources, all from {origin}")
