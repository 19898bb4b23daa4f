"""Shared helpers of the sample-data tests: the committed generator scripts are plain files, not
modules of the package, so they are imported by path."""

from __future__ import annotations

import csv
import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SAMPLES_ROOT = Path(__file__).resolve().parents[2] / "data_samples"


@contextmanager
def generator_module(name: str) -> Iterator:
    """Import `data_samples/<name>.py` for the duration of the block."""
    spec = importlib.util.spec_from_file_location(name, SAMPLES_ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def manifest_rows(folder: Path) -> list[dict]:
    """The rows of `<folder>/manifest.csv` as dicts of strings."""
    with open(folder / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))
