"""After `make demo`: `python -m medrec.review runs/<run>` shows a Grad-CAM overlay on case 1.

Slow (needs the demo run, ~3+ min of training): `make demo`, then
    MEDREC_DEMO_RUN=runs/<run> python -m pytest tests/review/test_browser_demo.py -m slow
The screenshot goes to $MEDREC_SCREENSHOT_DIR (default: the test's tmp folder) and
/tmp/review_demo_cam_overlay.png.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from .test_browser import LEAD_SCREENSHOT, browser, pytestmark, server  # noqa: F401  (fixtures by name)
from .test_browser_samples import check_case_one_overlay

DEMO_RUN = os.environ.get("MEDREC_DEMO_RUN")

pytestmark = [*pytestmark, pytest.mark.slow,
              pytest.mark.skipif(not DEMO_RUN, reason="set MEDREC_DEMO_RUN to the run folder `make demo` wrote")]


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A copy of the demo run without checkpoints (verdicts written here stay in this test)."""
    dst = tmp_path / "run"
    shutil.copytree(Path(DEMO_RUN), dst, ignore=shutil.ignore_patterns("*.pt", "tensorboard", "review.sqlite*"))
    return dst


def test_demo_run_case_one_shows_the_cam_overlay(server: str, browser, run_dir: Path, tmp_path: Path):
    shot = check_case_one_overlay(browser, server, run_dir, tmp_path, "review_demo_cam_overlay.png")
    shutil.copyfile(shot, LEAD_SCREENSHOT.with_name("review_demo_cam_overlay.png"))
    assert shot.stat().st_size > 10_000
