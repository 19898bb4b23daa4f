"""End to end in headless Chromium: `python -m medrec.review RUN --port P`, driven by Selenium.

Load the run, apply the false-negative filter, record a verdict, reload the page and find the
verdict still there. Needs /usr/bin/chromium, /usr/bin/chromedriver and the selenium package;
skipped with the reason when one is missing. Nothing touches the network: the driver path is
given (so Selenium Manager never runs) and Chromium's background services are switched off.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
from pathlib import Path

import pytest

from medrec.review.store import VerdictStore

from .conftest import THRESHOLD

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
REPO = Path(__file__).resolve().parents[2]
LEAD_SCREENSHOT = Path("/tmp/review_screenshot.png")

pytestmark = [
    pytest.mark.skipif(
        not Path(CHROMIUM).is_file(), reason=f"chromium not found at {CHROMIUM} (apt-get install chromium)"
    ),
    pytest.mark.skipif(
        not Path(CHROMEDRIVER).is_file(),
        reason=f"chromedriver not found at {CHROMEDRIVER} (apt-get install chromium-driver)",
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(run_dir: Path, tmp_path: Path):
    """The app served by `python -m medrec.review`; yields its URL, then stops it by its PID."""
    from .test_server import _env, _serving

    port = _free_port()
    argv = [sys.executable, "-m", "medrec.review", str(run_dir), "--port", str(port)]
    with _serving(argv, f"http://127.0.0.1:{port}", tmp_path / "server.log", _env()):
        yield f"http://127.0.0.1:{port}"
    assert "127.0.0.1" in (tmp_path / "server.log").read_text()


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install selenium)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # belt and braces: Selenium Manager must not download
    opts = Options()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1600,1050",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, predicate, timeout: float = 30):
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(
        driver, timeout, 0.1, ignored_exceptions=(StaleElementReferenceException, NoSuchElementException)
    ).until(predicate)


def _find(driver, xpath: str, timeout: float = 30):
    """The element at `xpath` once it is displayed (Streamlit renders in steps)."""
    from selenium.webdriver.common.by import By

    return _wait(
        driver, lambda d: next((e for e in d.find_elements(By.XPATH, xpath) if e.is_displayed()), False), timeout
    )


def _header(driver) -> str:
    from selenium.webdriver.common.by import By

    return " ".join(h.text for h in driver.find_elements(By.TAG_NAME, "h3") if h.text.startswith("Case "))


def _idle(driver) -> bool:
    """Streamlit shows a 'running' status widget while a script run is in progress."""
    from selenium.webdriver.common.by import By

    return not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"]')


def _page_text(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def _screenshot(driver, tmp_path: Path, name: str) -> Path:
    folder = Path(os.environ.get("MEDREC_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    driver.save_screenshot(str(path))
    return path


def test_review_flow_in_chromium(server: str, browser, run_dir: Path, tmp_path: Path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    d = browser
    d.get(server)
    _wait(d, lambda d: "Case 1 of 7" in _header(d), 60)

    # 1. the false-negative filter: label 1 and score below the run's threshold
    _find(d, "//*[@data-testid='stSidebar']//label[contains(., 'False negatives')]").click()
    _wait(d, lambda d: "Case 1 of 2" in _header(d) and "img1" in _header(d))

    # 2. a verdict: reviewer name, a comment typed with shortcut letters in it, Disagree
    name = _find(d, "//input[@aria-label='Reviewer']")
    name.send_keys("Dr Grey", Keys.ENTER)
    _wait(d, lambda d: "0 of 7 reviewed by Dr Grey" in _page_text(d))
    comment = "subtle opacity; jk, a definite miss"  # j, k, a, d, u typed here must not fire shortcuts
    box = _find(d, "//textarea[@aria-label='Comment']")
    box.send_keys(comment)
    box.send_keys(Keys.CONTROL, Keys.ENTER)  # commits the text area
    _wait(d, _idle)
    _find(d, "//button[.//p[normalize-space()='Disagree']]").click()
    _wait(d, lambda d: "Case 2 of 2" in _header(d) and "img2" in _header(d))  # advanced on save
    _wait(d, lambda d: "1 of 7 reviewed by Dr Grey" in _page_text(d))

    saved = VerdictStore(run_dir).history()
    assert [(v.image_id, v.reviewer, v.verdict, v.comment) for v in saved] == [("img1", "Dr Grey", "disagree", comment)]
    assert saved[0].model_score < THRESHOLD and saved[0].truth == "1"

    # 3. reload: filter, reviewer and case come back from the URL; K (previous) shows the verdict
    d.refresh()
    _wait(d, lambda d: "Case 2 of 2" in _header(d), 60)
    _wait(d, _idle)
    t0 = time.monotonic()
    d.find_element(By.TAG_NAME, "body").send_keys("k")
    _wait(d, lambda d: "Case 1 of 2" in _header(d))
    page_s = time.monotonic() - t0
    _wait(d, lambda d: "Dr Grey" in _page_text(d) and comment in _page_text(d))
    text = _page_text(d)
    assert "disagree" in text and "1 of 7 reviewed by Dr Grey" in text
    for secret in ("Doe", "MRN-778899", "19610203", "p001"):
        assert secret not in text

    _wait(d, _idle)
    time.sleep(0.5)  # let the image finish painting
    shot = _screenshot(d, tmp_path, "review_after_reload.png")
    shutil.copyfile(shot, LEAD_SCREENSHOT)
    assert shot.stat().st_size > 10_000
    print(f"page change by keyboard: {page_s:.2f} s; screenshot: {shot}")
    assert page_s < 5, f"paging took {page_s:.1f} s"
    assert VerdictStore(run_dir).count() == 1  # no shortcut fired while typing or paging


def test_token_url_opens_the_page_and_a_bare_url_asks_for_it(browser, run_dir: Path, tmp_path: Path):
    """Behind the token gate the real page (scripts, WebSocket, images) works from the printed URL."""
    from selenium.webdriver.common.by import By

    from .test_server import TOKEN, _env, _serving

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "medrec.review", str(run_dir), "--port", str(port)]
    with _serving(argv, base, tmp_path / "server.log", _env(TOKEN)):
        d = browser
        d.get(f"{base}/")
        assert "access token" in _page_text(d) and not _header(d)
        d.find_element(By.NAME, "token").send_keys(TOKEN + "\n")  # the page's own form
        _wait(d, lambda d: "Case 1 of 7" in _header(d), 60)
        _wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "[data-testid='stImage'] img"))
        d.delete_all_cookies()
        d.get(f"{base}/")
        assert "access token" in _page_text(d) and not _header(d)
