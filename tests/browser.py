"""Headless Debian Chromium through chromedriver, for the browser tests; never downloads a browser or a driver.

Without Chromium the browser tests skip, except under CI, where they must run (a skipped WebUI test there
would hide a missing install step)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

CHROMIUM = os.environ.get("QWEN_STREAM_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("QWEN_STREAM_CHROMEDRIVER", "/usr/bin/chromedriver")
IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required",
)


def unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"CI is set, so the browser tests must run: {reason}", pytrace=False)
    pytest.skip(reason)


@contextmanager
def chromium(extra_flags: tuple[str, ...] = (), capabilities: dict[str, Any] | None = None) -> Iterator[Any]:
    """A selenium driver of a fresh Chromium profile, quit and removed on exit."""
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(binary):
            unavailable(f"{binary} is missing (apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        unavailable("the selenium package is not installed (pip install selenium)")
    profile = tempfile.mkdtemp(prefix="qwen-stream-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, *extra_flags, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    for name, value in (capabilities or {}).items():
        options.set_capability(name, value)
    try:
        browser = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    except Exception as e:  # any launch failure means the same thing: no browser to test with
        shutil.rmtree(profile, ignore_errors=True)
        unavailable(f"Chromium cannot run here: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    try:
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)
