"""Debian's headless Chromium for the browser tests, driven by Selenium through an explicit
chromedriver path: Selenium Manager never runs (and never downloads anything)."""

from __future__ import annotations

import shutil

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def chrome(*, logs: bool = False, args: tuple[str, ...] = ()) -> webdriver.Chrome:
    """A new headless Chromium. ``logs``: keep the console (CSP violations are reported there) and
    the network events of every page, for ``driver.get_log("browser" | "performance")``."""
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(binary):
            pytest.fail(f"{binary} is missing: scripts/bootstrap installs chromium and chromium-driver (apt-get)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1440,1000", *args):
        options.add_argument(arg)
    if logs:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
