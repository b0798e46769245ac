"""The status page in a real headless Chromium (playwright) against a real server.

The shared servers: the keyless one, and the static-keys one (with a key of its own
for this file, so its recent jobs are only those made here). A browser
that cannot be found fails the tests (the page is a requirement, not an extra).
Screenshots go to the test's tmp dir and, when PIXELPOOL_TEST_ARTIFACTS names a
folder, there too.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from playwright.sync_api import Error as PlaywrightError
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from pixelpool.testing.server import ServerProcess

from .auth_helpers import VIEWER_KEY

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
SYSTEM_CHROMIUMS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TIMEOUT_MS = 120_000  # a job on 2 busy cores; the waits end as soon as the page is there


def launch(playwright) -> Browser:  # type: ignore[no-untyped-def]
    """Playwright's own Chromium, else a system one; none is a failure, not a skip."""
    try:
        return playwright.chromium.launch()
    except PlaywrightError as own:
        for name in SYSTEM_CHROMIUMS:
            path = shutil.which(name)
            if path:
                return playwright.chromium.launch(executable_path=path)
        pytest.fail(
            "no Chromium for the status page tests: run `python -m playwright install "
            "chromium`, or install the system package (e.g. `apt-get install chromium`)\n"
            f"playwright said: {own.message.splitlines()[0]}"
        )


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


def save_screenshot(page: Page, tmp_path: Path, name: str) -> Path:
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 0
    if folder := os.environ.get("PIXELPOOL_TEST_ARTIFACTS"):
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(folder) / name)
    return shot


def run_job_from_the_form(page: Page) -> str:
    """Fill the form (tiny demo model, 64x64, 2 steps), submit, and wait for the image."""
    expect(page.locator("#connection")).to_have_text("live", timeout=TIMEOUT_MS)
    page.fill("#prompt", "a red fox in the snow")
    page.select_option("#model", "demo-sd")
    for field, value in (("#width", "64"), ("#height", "64"), ("#steps", "2"), ("#seed", "7")):
        page.fill(field, value)
    page.click("#submit")
    expect(page.locator("#current")).to_have_attribute("data-status", "completed",
                                                      timeout=TIMEOUT_MS)  # fmt: skip
    image = page.locator("#current-image")
    expect(image).to_have_attribute("data-kind", "result", timeout=TIMEOUT_MS)
    assert image.evaluate("img => img.complete && img.naturalWidth") == 64
    job_id = page.evaluate("currentJob")
    # The previews came over the WebSocket (they may trail the result by a moment).
    page.wait_for_function(
        "id => (jobs.get(id).preview || '').startsWith('data:image/png;base64,')",
        arg=job_id,
        timeout=TIMEOUT_MS,
    )
    thumb = page.locator(f'#jobs li[data-job="{job_id}"] img')
    expect(thumb).to_have_attribute("src", page.locator("#current-image").get_attribute("src"))
    return job_id


def test_browsers_get_the_page_and_api_clients_the_json(server: ServerProcess) -> None:
    for accept in (None, "*/*", "application/json", "application/json, text/html"):
        headers = {"Accept": accept} if accept else {}
        resp = httpx.get(server.url + "/", headers=headers, timeout=30)
        assert resp.headers["content-type"] == "application/json", accept
        assert resp.json()["name"] == "pixelpool" and "endpoints" in resp.json()
    page = httpx.get(server.url + "/", headers={"Accept": BROWSER_ACCEPT}, timeout=30)
    assert page.headers["content-type"].startswith("text/html")
    assert "/ui/status.js" in page.text and page.headers["vary"] == "Accept"
    for path, kind in (("/ui/status.js", "text/javascript"), ("/ui/status.css", "text/css")):
        assert httpx.get(server.url + path, timeout=30).headers["content-type"].startswith(kind)


def test_the_page_runs_a_job_without_auth(
    server: ServerProcess, browser: Browser, tmp_path: Path
) -> None:
    page = browser.new_page()
    page.goto(server.url + "/")
    models = page.locator("#models tbody")
    expect(models).to_contain_text("demo-sd", timeout=TIMEOUT_MS)
    expect(models).to_contain_text("demo-sdxl")
    expect(page.locator("#devices .device")).not_to_have_count(0)
    expect(page.locator("#key-form")).to_be_hidden()
    run_job_from_the_form(page)
    expect(page.locator("#devices")).to_contain_text("demo-sd")  # now loaded on the device
    save_screenshot(page, tmp_path, "status-page.png")
    page.close()


def test_the_page_asks_for_a_key_when_auth_is_on(
    keyed_server: ServerProcess, browser: Browser, tmp_path: Path
) -> None:
    server, key = keyed_server, VIEWER_KEY
    assert httpx.get(server.url + "/api/status", timeout=30).status_code == 401
    ws_url = server.url.replace("http://", "ws://") + "/api/ws"
    with (
        connect(ws_url, subprotocols=["pixelpool", "bearer.pp_wrong"]) as ws,  # type: ignore[list-item]
        pytest.raises(ConnectionClosed) as closed,
    ):
        ws.recv(timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401

    context = browser.new_context()  # its own session storage
    page = context.new_page()
    page.goto(server.url + "/")  # the page itself is static and public
    expect(page.locator("#key-form")).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.locator("#main")).to_be_hidden()
    page.fill("#key", "pp_wrong")
    page.click("#key-form button")
    expect(page.locator("#key-error")).not_to_be_empty(timeout=TIMEOUT_MS)
    page.fill("#key", key)
    page.click("#key-form button")
    expect(page.locator("#models tbody")).to_contain_text("demo-sd", timeout=TIMEOUT_MS)
    # The viewer's recent jobs are its own: the other keys' jobs are not among them.
    expect(page.locator("#jobs li")).to_have_count(0)
    run_job_from_the_form(page)
    expect(page.locator("#jobs li")).to_have_count(1)
    save_screenshot(page, tmp_path, "status-page-auth.png")
    context.close()
