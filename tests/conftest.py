"""Suite-wide settings: no network, an empty torch cache, and a modest thread count.

MEDREC_OFFLINE makes the weights resolver skip download attempts, so no test can reach the
network; TORCH_HOME points at an empty folder so a developer's cached ImageNet weights never
change what a test sees (tests that need weights write their own files there).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    os.environ["MEDREC_OFFLINE"] = "1"
    os.environ.setdefault("MPLBACKEND", "Agg")
    torch_home = Path(os.environ.get("PYTEST_TORCH_HOME", "/tmp")) / f"medrec-test-torch-home-{os.getpid()}"
    torch_home.mkdir(parents=True, exist_ok=True)
    os.environ["TORCH_HOME"] = str(torch_home)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def samples_manifest() -> Path:
    return ROOT / "data_samples" / "chest_xray" / "manifest.csv"


@pytest.fixture(scope="session")
def pneumoniamnist_npz() -> Path:
    """The real PneumoniaMNIST file from ../shared (never copied into the repo); skip if absent."""
    path = Path(os.environ.get("MEDREC_PNEUMONIAMNIST",
                               ROOT.parent / "shared" / "datasets" / "pneumoniamnist" / "pneumoniamnist_trainval.npz"))
    if not path.exists():
        pytest.skip(f"PneumoniaMNIST not found at {path}; set MEDREC_PNEUMONIAMNIST")
    return path


# One short but real cross-validated run of data_samples, shared by every test that needs a run
# folder: 3 patient-grouped folds, 3 epochs, 64 px, few bootstrap resamples.
SHORT_RUN = ["--set", "train.epochs=3", "--set", "cv.folds=3", "--set", "data.image_size=64",
             "--set", "eval.bootstrap=50", "--quiet"]


def run_finetune(*args, env=None, timeout=900):
    e = {**os.environ, "OMP_NUM_THREADS": "2", **(env or {})}
    return subprocess.run([sys.executable, "-m", "medrec.finetune", *map(str, args)], cwd=ROOT, env=e,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def samples_run(tmp_path_factory):
    """(run folder, CompletedProcess) of `configs/chest_xray.yaml` shortened by SHORT_RUN."""
    out = tmp_path_factory.mktemp("samples_run") / "run"
    res = run_finetune("--config", ROOT / "configs" / "chest_xray.yaml", *SHORT_RUN, "--out", out)
    assert res.returncode == 0, res.stderr[-3000:]
    return out, res


@pytest.fixture(scope="session")
def short_run_args():
    """The --set arguments that `samples_run` was made with (to make a comparable run)."""
    return list(SHORT_RUN)
