"""The parts of a run folder the review reads (through medrec.runfolder), checked for serving.

Everything here is untrusted input (a run folder may come from someone else): run.json's
`data_root` decides which files the app may serve, so it is only taken when it is one of the
paths the run was trained on (config.yaml's data.root or the manifest's folder) and never a
filesystem root, the home folder or a parent of the working directory.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from medrec import runfolder as rf
from medrec.config import DataConfig
from medrec.errors import DataError, MedrecError

log = logging.getLogger(__name__)

OOF_CSV = rf.OOF_CSV
RUN_CAMS = "cams"  # RUN/cams/<image_id>.npy: out-of-fold maps (medrec.explain RUN)
PREDICT_CAMS = Path("predictions") / "cams"  # medrec.predict --cam --out RUN/predictions
DEFAULT_THRESHOLD = rf.DEFAULT_THRESHOLD


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
    info = rf.read_info(run_dir)  # version-checked run.json
    pred_path = Path(predictions).resolve() if predictions else rf.oof_path(run_dir)
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
    path = rf.config_path(run_dir)
    if not path.is_file():
        return None
    try:
        return rf.read_config(run_dir).data
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
    """Per-target decision thresholds and where they came from: medrec.runfolder's one rule."""
    thr = rf.thresholds(info, task, targets)
    return dict(thr.values), thr.source
