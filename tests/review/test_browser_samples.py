"""The review flow in headless Chromium on a real cross-validated run of data_samples."""

from __future__ import annotations

import json
import shutil
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
