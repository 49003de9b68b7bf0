"""The example's settings page in a real headless browser (Debian's chromium through Selenium),
against the example backend running under uvicorn in a subprocess. What the page changes is
checked where it lands: the queue folder on disk. Screenshots go to artifacts/ (gitignored).

`make browser` installs chromium and chromium-driver; without them this test is skipped.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PROJECT_ROOT, queued_messages

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = PROJECT_ROOT / "artifacts"
HOME = str(Path.home())
EMAIL = "jane.doe@example.com"

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="Debian's chromium and chromium-driver are not installed (`make browser` installs them as root)",
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def call(base: str, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The example backend under uvicorn; its PostHog host refuses connections, so what is emitted
    stays queued on disk (delivery retries with backoff) for the page to show and purge."""
    state_dir = tmp_path / "state"
    port = free_port()
    env = {
        **os.environ,
        "TELEMETRY_DIR": str(state_dir),
        "TELEMETRY_ENDPOINT": f"http://127.0.0.1:{free_port()}",
        "TELEMETRY_TOKEN": "phc_settings_page_token",
        "TELEMETRY_APP_VERSION": "1.4.0",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "examples.fastapi_backend.serve", "--port", str(port)],
        cwd=PROJECT_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                call(base, "GET", "/telemetry")
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield base, state_dir
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1100,1400",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(browser: Any, script: str, timeout: float = 15.0) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout).until(lambda driver: driver.execute_script(script))


def test_the_settings_page_previews_scrubbed_messages_and_opting_out_purges_the_queue(
    backend: tuple[str, Path], browser: Any
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    base, state_dir = backend
    project = f"{HOME}/clients/acme"
    call(base, "POST", "/proposals", {"files": ["main.py"], "lines_changed": 3})
    call(
        base,
        "POST",
        "/telemetry/events",
        {
            "event": "model_switched",
            "properties": {"from_model": "a", "to_model": f"b for {EMAIL} in {project}"},
        },
    )

    browser.get(f"{base}/settings")
    wait_for(browser, "return document.body.dataset.ready === 'yes'")
    assert browser.find_element(By.ID, "enabled").is_selected()
    assert "token phc_****" in browser.find_element(By.ID, "status").text
    browser.find_element(By.ID, "show-preview").click()
    wait_for(browser, "return Number(document.getElementById('preview').dataset.count) >= 4")
    preview = browser.find_element(By.ID, "preview").text
    for event in ("session_started", "proposal_created", "model_switched", "settings_opened"):
        assert event in preview  # the page's own settings_opened went through the backend's queue
    assert "<email>" in preview
    assert EMAIL not in preview
    assert project not in preview
    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "settings-page.png"))
    queued = queued_messages(state_dir)
    assert {m["event"] for m in queued} >= {"session_started", "proposal_created", "settings_opened"}

    Select(browser.find_element(By.ID, "level")).select_by_value("error")
    wait_for(browser, "return document.body.dataset.state === 'on-error'")
    assert call(base, "GET", "/telemetry")["level"] == "error"
    assert {m["event"] for m in queued_messages(state_dir)} <= {"$exception", "session_ended"}

    browser.find_element(By.ID, "enabled").click()
    wait_for(browser, "return document.body.dataset.state === 'off'")
    assert queued_messages(state_dir) == []
    assert (state_dir / "queue").exists() is False or not any((state_dir / "queue").iterdir())
    settings = call(base, "GET", "/telemetry")
    assert (settings["enabled"], settings["queue_depth"]) == (False, 0)
    wait_for(browser, "return document.getElementById('preview').dataset.count === '0'")
    assert browser.save_screenshot(str(ARTIFACTS / "settings-page-off.png"))
