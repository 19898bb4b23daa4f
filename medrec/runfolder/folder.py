"""The run folder on disk: its paths, run.json, saved config, splits, predictions and thresholds.

Layout (format "medrec-run/2", written into run.json as "format"):

    RUN/run.json                what the run was made from, its status and operating point
    RUN/config.yaml             the resolved config (every field)
    RUN/splits.csv              patient -> fold for every repeat, and the held-out test patients
    RUN/oof_predictions.csv     out-of-fold predictions of every fold (and repeat)
    RUN/test_set.csv            held-out test images with their labels (cv.test_fraction > 0)
    RUN/errors.csv              images that could not be read
    RUN/folds/<fold>/last.pt    resumable state after the last finished epoch
    RUN/folds/<fold>/best.pt    the fold's final model (see medrec.runfolder.checkpoint)
    RUN/folds/<fold>/oof.csv    the fold's out-of-fold rows; its presence marks the fold done

Thresholds follow one rule everywhere (`thresholds`): one per label (binary: the label column),
taken from run.json; a label without a usable stored threshold gets 0.5 and the returned source
names it, so no caller falls back silently.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from medrec.errors import CheckpointError
from medrec.fileio import atomic_write_json, atomic_write_text

FORMAT = "medrec-run/2"
LEGACY_FORMAT = "medrec-run/1"  # run.json written before the format field existed: same fields
SUPPORTED = (FORMAT, LEGACY_FORMAT)
RUN_JSON = "run.json"
CONFIG_YAML = "config.yaml"
SPLITS_CSV = "splits.csv"
OOF_CSV = "oof_predictions.csv"
FOLD_OOF_CSV = "oof.csv"
TEST_SET_CSV = "test_set.csv"
ERRORS_CSV = "errors.csv"
FOLDS_DIR = "folds"
BEST_PT = "best.pt"
LAST_PT = "last.pt"
DEFAULT_THRESHOLD = 0.5
MAX_RUN_JSON_BYTES = 16 << 20  # a run.json is a few kB; refuse anything that could exhaust memory
ID_DTYPES = {"path": str, "image_id": str, "patient_id": str}


def fold_name(fold: int, repeat: int = 0) -> str:
    """Folder name of one fold: fold_2, or repeat_1_fold_2 for later repeats."""
    return f"fold_{fold}" if repeat == 0 else f"repeat_{repeat}_fold_{fold}"


def fold_dir(run_dir: Path, fold: int, repeat: int = 0) -> Path:
    return Path(run_dir) / FOLDS_DIR / fold_name(fold, repeat)


def is_fold_done(run_dir: Path, fold: int, repeat: int = 0) -> bool:
    return (fold_dir(run_dir, fold, repeat) / FOLD_OOF_CSV).exists()


# ---------------------------------------------------------------- run.json

def read_info(run_dir: str | Path) -> dict[str, Any]:
    """run.json as a dict, its format version checked.

    Raises:
        CheckpointError: run.json is missing, too large, not a JSON object, or of an unknown format.
    """
    path = Path(run_dir) / RUN_JSON
    if not path.is_file():
        raise CheckpointError(f"{Path(run_dir)} is not a medrec run folder: {RUN_JSON} not found; "
                              "pass the folder medrec.finetune wrote")
    try:
        if path.stat().st_size > MAX_RUN_JSON_BYTES:
            raise ValueError(f"larger than {MAX_RUN_JSON_BYTES >> 20} MiB")
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read it as JSON: {exc}") from None
    if not isinstance(info, dict):
        raise CheckpointError(f"{path}: expected a JSON object, found {type(info).__name__}")
    found = info.get("format", LEGACY_FORMAT)
    if found not in SUPPORTED:
        raise CheckpointError(f"{path}: run folder format {found!r} is not supported by this medrec "
                              f"(supported: {', '.join(SUPPORTED)}); use the medrec version that wrote it")
    return info


def read_info_if_any(run_dir: str | Path) -> dict[str, Any]:
    """run.json, or {} when the folder has none yet (a run being started)."""
    return read_info(run_dir) if (Path(run_dir) / RUN_JSON).is_file() else {}


def write_info(run_dir: str | Path, info: Mapping[str, Any]) -> None:
    """Write run.json atomically, stamped with the current format."""
    atomic_write_json(Path(run_dir) / RUN_JSON, {**info, "format": FORMAT}, default=_jsonable)


def _jsonable(x: Any) -> Any:
    if hasattr(x, "item"):  # numpy scalars
        return x.item()
    return str(x)


# ---------------------------------------------------------------- config

def config_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / CONFIG_YAML


def read_config(run_dir: str | Path):
    """The run's resolved config (an ExperimentConfig).

    Raises:
        CheckpointError: config.yaml is missing. ConfigError: it is not a valid config.
    """
    from medrec.config import load_config

    path = config_path(run_dir)
    if not path.is_file():
        raise CheckpointError(f"{Path(run_dir)}: no {CONFIG_YAML} there; is it a medrec run folder?")
    return load_config(path)


def write_config(run_dir: str | Path, cfg) -> None:
    from medrec.config import save_config

    save_config(cfg, config_path(run_dir))


# ---------------------------------------------------------------- predictions

def oof_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / OOF_CSV


def read_oof(run_dir: str | Path, path: str | Path | None = None) -> pd.DataFrame:
    """oof_predictions.csv (or another predictions CSV at `path`), ids and paths as text.

    Raises:
        CheckpointError: the file is missing or not a readable CSV.
    """
    path = Path(path) if path else oof_path(run_dir)
    if not path.is_file():
        raise CheckpointError(f"{path} not found; the run has not finished every fold (rerun with --resume)")
    try:
        return pd.read_csv(path, dtype=ID_DTYPES)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise CheckpointError(f"{path} is not a readable CSV: {exc}") from None


def write_oof(run_dir: str | Path, table: pd.DataFrame) -> None:
    atomic_write_text(oof_path(run_dir), table.to_csv(index=False))


def read_fold_oof(run_dir: str | Path, fold: int, repeat: int = 0) -> pd.DataFrame:
    return pd.read_csv(fold_dir(Path(run_dir), fold, repeat) / FOLD_OOF_CSV, dtype=ID_DTYPES)


def write_fold_oof(run_dir: str | Path, fold: int, repeat: int, rows: pd.DataFrame) -> None:
    atomic_write_text(fold_dir(Path(run_dir), fold, repeat) / FOLD_OOF_CSV, rows.to_csv(index=False))


def write_table(run_dir: str | Path, name: str, table: pd.DataFrame) -> None:
    """One of the run folder's other CSVs (TEST_SET_CSV, ERRORS_CSV), atomically."""
    atomic_write_text(Path(run_dir) / name, table.to_csv(index=False))


# ---------------------------------------------------------------- thresholds

@dataclass(frozen=True)
class Thresholds:
    """Decision thresholds per target (binary: the label column) and where they came from."""

    values: dict[str, float]  # multiclass: NaN per class (arg-max decides)
    source: str  # "run.json", "run.json (default 0.5 for a, b)", "default 0.5 (run.json has none)", "argmax"
    missing: tuple[str, ...] = ()  # targets that got the default

    def for_task(self, task: str) -> float | dict[str, float] | None:
        """run.json's own shape: one number (binary), one per label (multilabel), None (multiclass)."""
        if task == "multiclass":
            return None
        return next(iter(self.values.values())) if task == "binary" else dict(self.values)


def thresholds(info: Mapping[str, Any], task: str, targets: Sequence[str]) -> Thresholds:
    """The run's operating point per target, by the one rule described in the module docstring."""
    if task == "multiclass":
        return Thresholds({t: math.nan for t in targets}, "argmax (multiclass)")
    thr = info.get("threshold")
    if _usable(thr):
        return Thresholds({t: float(thr) for t in targets}, RUN_JSON)
    stored = thr if isinstance(thr, Mapping) else {}
    missing = tuple(t for t in targets if not _usable(stored.get(t)))
    values = {t: DEFAULT_THRESHOLD if t in missing else float(stored[t]) for t in targets}
    if not missing:
        return Thresholds(values, RUN_JSON)
    if len(missing) == len(targets):
        return Thresholds(values, f"default {DEFAULT_THRESHOLD} ({RUN_JSON} has none)", missing)
    return Thresholds(values, f"{RUN_JSON} (default {DEFAULT_THRESHOLD} for {', '.join(missing)})", missing)


def _usable(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1


# ---------------------------------------------------------------- fold checkpoints

def fold_checkpoints(run_dir: str | Path, folds: Sequence[str] | None = None) -> list[tuple[str, Path]]:
    """(fold folder name, best.pt) for the chosen folds ("2" means fold_2), all by default.

    Raises:
        CheckpointError: no fold checkpoint in the run, or a chosen fold has none.
    """
    root = Path(run_dir) / FOLDS_DIR
    available = sorted((d.name for d in root.iterdir() if (d / BEST_PT).is_file()) if root.is_dir() else [],
                       key=_fold_order)
    if not available:
        raise CheckpointError(f"{run_dir}: no {FOLDS_DIR}/*/{BEST_PT}; is it a finished medrec run folder?")
    if not folds:
        return [(n, root / n / BEST_PT) for n in available]
    chosen = []
    for f in folds:
        name = f"fold_{f}" if str(f).isdigit() else str(f)
        if name not in available:
            raise CheckpointError(f"--folds {f}: {root / name / BEST_PT} not found; available: {', '.join(available)}")
        chosen.append((name, root / name / BEST_PT))
    return chosen


def _fold_order(name: str) -> tuple[int, ...]:
    """(repeat, fold) of a fold folder name: fold_3 -> (0, 3), repeat_1_fold_0 -> (1, 0)."""
    numbers = tuple(int(p) for p in name.split("_") if p.isdigit())
    return numbers if len(numbers) == 2 else (0, *numbers)


# ---------------------------------------------------------------- splits

def splits_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / SPLITS_CSV


def write_splits(run_dir: str | Path, table: pd.DataFrame) -> None:
    """splits.csv: one row per readable image (path, image_id, patient_id, test, fold_r<repeat>...)."""
    atomic_write_text(splits_path(run_dir), table.to_csv(index=False))


def read_splits(run_dir: str | Path) -> pd.DataFrame | None:
    """splits.csv, or None for a run folder that has none (written before splits were saved)."""
    path = splits_path(run_dir)
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path, dtype=ID_DTYPES)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not a readable CSV: {exc}; start a new run") from None
