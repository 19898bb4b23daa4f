"""Suite-wide settings: no network, an empty torch cache, and a modest thread count.

MEDREC_OFFLINE makes the weights resolver skip download attempts, so no test can reach the
network; TORCH_HOME points at an empty folder so a developer's cached ImageNet weights never
change what a test sees (tests that need weights write their own files there).
"""

import os
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
