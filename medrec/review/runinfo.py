"""The parts of a run folder the review reads: run.json, config, predictions, CAM folders.

Everything here is untrusted input (a run folder may come from someone else): run.json's
`data_root` decides which files the app may serve, so it is only taken when it is one of the
paths the run was trained on (config.yaml's data.root or the manifest's folder) and never a
filesystem root, the home folder or a parent of the working directory.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from medrec.config import DataConfig, load_config
from medrec.errors import CheckpointError, DataError, MedrecError

log = logging.getLogger(__name__)

OOF_CSV = "oof_predictions.csv"
RUN_CAMS = "cams"  # RUN/cams/<image_id>.npy: out-of-fold maps (medrec.explain RUN)
PREDICT_CAMS = Path("predictions") / "cams"  # medrec.predict --cam --out RUN/predictions
DEFAULT_THRESHOLD = 0.5
MAX_RUN_JSON_BYTES = 16 << 20


@dataclass(frozen=True)
class Folder:
    run_dir: Path
    info: dict[str, Any]
    predictions: pd.DataFrame
    predictions_path: Path
    data_root: Path | None
    cam_dirs: tuple[Path, ...]
    data_cfg: DataConfig | None
    notes: tuple[str, ...]


def read_folder(run_dir: str | Path, predictions: str | Path | None = None) -> Folder:
    """run.json, the predictions table and the checked data root of a run folder."""
    run_dir = Path(run_dir).resolve()
    info = read_run_json(run_dir)
    pred_path = Path(predictions).resolve() if predictions else run_dir / OOF_CSV
    table, notes = read_predictions(pred_path, hint="pass --predictions FILE" if predictions is None else "check the path")
    data_cfg = data_config(run_dir)
    data_root, note = checked_data_root(info.get("data_root"), data_cfg)
    if note:
        notes.append(note)
    if predictions:
        cam_dirs = [pred_path.parent / "cams", run_dir / PREDICT_CAMS]
    else:
        cam_dirs = [run_dir / RUN_CAMS, run_dir / PREDICT_CAMS]
    return Folder(run_dir, info, table, pred_path, data_root, tuple(dict.fromkeys(cam_dirs)), data_cfg, tuple(notes))


def read_run_json(run_dir: Path) -> dict[str, Any]:
    run_json = run_dir / "run.json"
    if not run_json.is_file():
        raise CheckpointError(
            f"{run_dir} is not a medrec run folder: run.json not found; pass the folder medrec.finetune wrote"
        )
    try:
        if run_json.stat().st_size > MAX_RUN_JSON_BYTES:
            raise ValueError(f"larger than {MAX_RUN_JSON_BYTES >> 20} MiB")
        info = json.loads(run_json.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{run_json}: cannot read it as JSON: {exc}") from None
    if not isinstance(info, dict):
        raise CheckpointError(f"{run_json}: expected a JSON object, found {type(info).__name__}")
    return info


def read_predictions(path: Path, *, hint: str) -> tuple[pd.DataFrame, list[str]]:
    """The predictions CSV, ids and paths as text. Lines with the wrong number of fields are
    skipped and reported in the returned notes (one note), not raised."""
    if not path.is_file():
        raise DataError(f"predictions file {path} not found; {hint}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        try:
            table = pd.read_csv(path, dtype={"image_id": str, "path": str, "patient_id": str}, on_bad_lines="warn")
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise DataError(f"{path.name}: cannot read it as CSV: {exc}") from None
    skipped = [str(w.message).strip() for w in caught if issubclass(w.category, pd.errors.ParserWarning)]
    notes = [f"{path.name}: skipped malformed lines: " + " ".join(skipped)[:500]] if skipped else []
    table.columns = [str(c) for c in table.columns]
    return table, notes


def data_config(run_dir: Path) -> DataConfig | None:
    """The run's data config (modality, CT windows, slice), or None: older runs and copied
    folders may lack config.yaml, and the review works without it (generic windows)."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    try:
        return load_config(path).data
    except (MedrecError, OSError, ValueError) as exc:
        log.warning("%s: cannot read the run's config (%s); reviewing without its preprocessing", path, exc)
        return None


def _trained_paths(cfg: DataConfig) -> list[Path]:
    paths = [Path(cfg.root)] if cfg.root else []
    if cfg.manifest:
        paths.append(Path(cfg.manifest).parent)
    return paths


def _within_trained(root: Path, trained: Sequence[Path]) -> bool:
    for p in trained:
        if p.is_absolute():
            real = Path(os.path.realpath(p))
            if root == real or root.is_relative_to(real):
                return True
        elif not p.parts or root.parts[-len(p.parts):] == p.parts:  # relative to the training cwd
            return True
    return False


def _too_wide(root: Path) -> bool:
    """A filesystem root, the home folder, or a folder holding the working directory."""
    cwd = Path(os.path.realpath(Path.cwd()))
    home = Path(os.path.realpath(Path.home()))
    return len(root.parts) <= 1 or root == home or (cwd != root and cwd.is_relative_to(root))


def checked_data_root(value: Any, cfg: DataConfig | None) -> tuple[Path | None, str | None]:
    """(data_root, None) when run.json's data_root may be served from, else (None, why)."""
    if not value:
        return None, None
    if not isinstance(value, str) or "\x00" in value:
        return None, f"run.json data_root {value!r} is not a path; images outside the run folder are not shown"
    root = Path(os.path.realpath(value))
    if _too_wide(root):
        return None, (
            f"run.json data_root {value} is a filesystem root, the home folder or a parent of the working "
            "directory; refused (images outside the run folder are not shown). Fix data_root in run.json"
        )
    if cfg is not None and not _within_trained(root, _trained_paths(cfg)):
        trained = ", ".join(str(p) for p in _trained_paths(cfg)) or "none"
        return None, (
            f"run.json data_root {value} is not among the paths the run was trained on ({trained}, from "
            "config.yaml); refused (images outside the run folder are not shown)"
        )
    return root, None


def thresholds(info: Mapping[str, Any], task: str, targets: Sequence[str]) -> tuple[dict[str, float], str]:
    """Per-target decision thresholds from run.json (a number, or one per label; a missing or
    unusable label falls back to 0.5), and where they came from."""
    thr = info.get("threshold")
    if _usable(thr):
        return {t: float(thr) for t in targets}, "run.json"
    if isinstance(thr, Mapping) and thr:
        out = {t: float(thr[t]) if _usable(thr.get(t)) else DEFAULT_THRESHOLD for t in targets}
        missing = [t for t in targets if not _usable(thr.get(t))]
        note = f"run.json (default {DEFAULT_THRESHOLD} for {', '.join(missing)})" if missing else "run.json"
        return out, note
    if task == "multiclass":
        return {t: math.nan for t in targets}, "argmax (multiclass)"
    return {t: DEFAULT_THRESHOLD for t in targets}, f"default {DEFAULT_THRESHOLD} (run.json has none)"


def _usable(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1
