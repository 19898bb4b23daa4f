"""The review flow in headless Chromium on a real cross-validated run of data_samples."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

from medrec.review.store import VerdictStore

from .test_browser import (  # noqa: F401  (fixtures are used by name)
    LEAD_SCREENSHOT,
    _find,
    _header,
    _idle,
    _page_text,
    _screenshot,
    _wait,
    browser,
    pytestmark,
    server,
)


@pytest.fixture
def run_dir(samples_run, tmp_path: Path) -> Path:
    """A copy of the suite's data_samples run (so verdicts written here stay in this test)."""
    src, _ = samples_run
    dst = tmp_path / "run"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.pt", "tensorboard"))
    return dst


def test_false_negative_verdict_survives_reload_on_a_samples_run(server: str, browser, run_dir: Path, tmp_path):
    oof = pd.read_csv(run_dir / "oof_predictions.csv")
    threshold = json.loads((run_dir / "run.json").read_text())["threshold"]
    fn = oof[(oof["label"] == 1) & (oof["score"] < threshold)]
    assert len(fn) > 0, "the short run has no false negative to review"
    d = browser
    d.get(server)
    _wait(d, lambda d: f"Case 1 of {len(oof)}" in _header(d), 90)
    _find(d, "//*[@data-testid='stSidebar']//label[contains(., 'False negatives')]").click()
    _wait(d, lambda d: f"Case 1 of {len(fn)}" in _header(d))
    first = next(i for i in fn["image_id"] if i in _header(d))
    _find(d, "//input[@aria-label='Reviewer']").send_keys("Dr Lee\n")
    _wait(d, lambda d: f"0 of {len(oof)} reviewed by Dr Lee" in _page_text(d))
    _wait(d, _idle)
    _find(d, "//button[.//p[normalize-space()='Agree']]").click()
    _wait(d, lambda d: f"1 of {len(oof)} reviewed by Dr Lee" in _page_text(d))
    saved = VerdictStore(run_dir).history()
    assert [(v.image_id, v.reviewer, v.verdict) for v in saved] == [(first, "Dr Lee", "agree")]

    d.refresh()
    _wait(d, lambda d: "of" in _header(d), 90)
    _wait(d, _idle)
    if first not in _header(d):  # the app advanced after saving; go back to the reviewed case
        _find(d, "//button[.//p[contains(., 'Previous')]]").click()
        _wait(d, lambda d: first in _header(d))
    _wait(d, lambda d: "Dr Lee" in _page_text(d) and "agree" in _page_text(d))
    text = _page_text(d)
    assert f"1 of {len(oof)} reviewed by Dr Lee" in text
    _wait(d, _idle)
    shot = _screenshot(d, tmp_path, "review_samples_after_reload.png")
    shutil.copyfile(shot, LEAD_SCREENSHOT.with_name("review_samples_screenshot.png"))
    assert shot.stat().st_size > 10_000


def _main_image(d):
    """The case image's pixels (the PNG the page shows), fetched from the server."""
    import io
    import urllib.request

    import numpy as np
    from PIL import Image
    from selenium.webdriver.common.by import By

    img = _wait(d, lambda d: next((e for e in d.find_elements(By.CSS_SELECTOR, "[data-testid='stMain'] "
                                                               "[data-testid='stImage'] img") if e.is_displayed()),
                                  False))
    src = img.get_attribute("src")
    with urllib.request.urlopen(src, timeout=10) as r:
        return src, np.asarray(Image.open(io.BytesIO(r.read())).convert("RGB")).astype(int)


def _coloured_share(rgb) -> float:
    """Share of pixels that are not gray (an overlay tints them; a windowed image has R = G = B)."""
    return float(((rgb.max(axis=-1) - rgb.min(axis=-1)) > 24).mean())


def check_case_one_overlay(d, server: str, run_dir: Path, tmp_path: Path, shot_name: str) -> Path:
    """Open the run, assert case 1 shows a Grad-CAM overlay (and a plain image with it off)."""
    oof = pd.read_csv(run_dir / "oof_predictions.csv", dtype={"image_id": str})
    first = oof["image_id"].iloc[0]
    assert (run_dir / "cams" / f"{first}.npy").is_file(), "training wrote no CAM for case 1"
    d.get(server)
    _wait(d, lambda d: "Case 1 of" in _header(d) and first in _header(d), 90)
    _wait(d, _idle)
    assert "no Grad-CAM map" not in _page_text(d)
    src_on, with_cam = _main_image(d)
    assert _coloured_share(with_cam) > 0.02, "case 1 shows no coloured overlay"
    time.sleep(0.5)  # let the image finish painting
    shot = _screenshot(d, tmp_path, shot_name)
    _find(d, "//*[@data-testid='stMain']//label[contains(., 'Grad-CAM overlay')]").click()
    _wait(d, lambda d: _main_image(d)[0] != src_on)
    _wait(d, _idle)
    assert _coloured_share(_main_image(d)[1]) == 0.0  # the same case without the map: pure gray
    return shot


def test_case_one_shows_the_cam_overlay_made_after_training(server: str, browser, run_dir: Path, tmp_path: Path):
    oof = pd.read_csv(run_dir / "oof_predictions.csv", dtype={"image_id": str})
    maps = {p.stem for p in (run_dir / "cams").glob("*.npy")}
    assert maps == set(oof["image_id"]), "every out-of-fold image gets its map after training"
    shot = check_case_one_overlay(browser, server, run_dir, tmp_path, "review_cam_overlay.png")
    shutil.copyfile(shot, LEAD_SCREENSHOT.with_name("review_cam_overlay.png"))
    assert shot.stat().st_size > 10_000
