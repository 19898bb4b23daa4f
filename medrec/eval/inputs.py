"""A run folder's evaluation inputs as arrays: read through medrec.runfolder (the one owner of
run.json, config.yaml and oof_predictions.csv), then checked against the predictions contract."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medrec import runfolder as rf
from medrec.config import ExperimentConfig
from medrec.errors import CheckpointError, DataError
from medrec.eval.oof import OOF

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Run:
    """A run folder's saved evaluation inputs."""

    dir: Path
    info: dict  # run.json
    cfg: ExperimentConfig
    table: object  # pandas DataFrame of oof_predictions.csv
    oof: OOF
    unit_kind: str  # "patient" or "image"


# ---------------------------------------------------------------- loading

def load_run(run_dir: str | Path) -> Run:
    """Read and validate a run folder's oof_predictions.csv, run.json and config.yaml.

    Raises:
        CheckpointError: a file is missing or unreadable.
        DataError: the predictions violate the run-folder contract.
    """
    run_dir = Path(run_dir).resolve()
    paths = {rf.OOF_CSV: rf.oof_path(run_dir), rf.RUN_JSON: run_dir / rf.RUN_JSON, rf.CONFIG_YAML: rf.config_path(run_dir)}
    missing = [n for n, p in paths.items() if not p.is_file()]
    if missing:  # name every missing file at once, before the run-folder readers name the first
        raise CheckpointError(
            f"{run_dir} is not a complete run folder: missing {', '.join(missing)}; "
            "point at a folder written by `python -m medrec.finetune`"
        )
    info, cfg, table = rf.read_info(run_dir), rf.read_config(run_dir), rf.read_oof(run_dir)
    task = info.get("task") or cfg.data.task
    oof, unit_kind = oof_from_table(table, task, _names(info, cfg, task), str(paths[rf.OOF_CSV]),
                                    patient_level=info.get("patient_level"))
    return Run(run_dir, info, cfg, table, oof, unit_kind)


def _names(info: dict, cfg: ExperimentConfig, task: str) -> tuple[str, ...] | None:
    if task == "multiclass":
        names = info.get("class_names") or cfg.data.class_names
    else:
        names = info.get("label_names") or cfg.data.label_columns
    return tuple(str(n) for n in names) if names else None


def oof_from_table(
    table, task: str, names: tuple[str, ...] | None, source: str, *, patient_level: bool | None = None
) -> tuple[OOF, str]:
    """Turn the oof_predictions.csv table into arrays (see the run-folder contract).

    Args:
        patient_level: run.json's flag; False says the data has no real patient ids.

    Returns:
        (OOF, "patient" or "image"): the bootstrap unit is the image when the data has no
        patient ids: `patient_level` is False, there is no patient_id column, or every patient
        id has a single image (as when sources without ids, e.g. MedMNIST, use the image id).
    """
    if task not in ("binary", "multiclass", "multilabel"):
        raise DataError(f"{source}: task '{task}' unknown; valid: binary, multiclass, multilabel")
    for col in ("path", "fold"):
        if col not in table.columns:
            raise DataError(f"{source}: no column '{col}'; present: {', '.join(map(str, table.columns))}")
    if len(table) == 0:
        raise DataError(f"{source}: no predictions")
    y, score, names = _labels_and_scores(table, task, names, source)
    fold = _integers(table, "fold", source)
    repeat = _integers(table, "repeat", source) if "repeat" in table.columns else np.zeros(len(table), dtype=int)
    unit, kind = _units(table, patient_level)
    return OOF(task, names, y, score, fold, repeat, unit), kind


def _labels_and_scores(table, task: str, names: tuple[str, ...] | None, source: str):
    import pandas as pd

    score_cols = [c for c in table.columns if str(c).startswith("score_")]
    if task == "binary" and "score" in table.columns:
        names = names[:1] if names else ("label",)
        ycols, scols = ["label"], ["score"]
    else:
        if not names or any(f"score_{n}" not in table.columns for n in names):
            names = tuple(c[len("score_"):] for c in score_cols)
        if not names:
            raise DataError(f"{source}: no score column(s); expected 'score' (binary) or 'score_<name>'")
        ycols, scols = [f"label_{n}" for n in names], [f"score_{n}" for n in names]
    if task == "multiclass" and "label" in table.columns:
        ycols = ["label"]
    absent = [c for c in ycols + scols if c not in table.columns]
    if absent:
        raise DataError(f"{source}: missing column(s) {', '.join(absent)}")
    score = table[scols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    if not np.isfinite(score).all():
        bad = int((~np.isfinite(score)).any(axis=1).sum())
        raise DataError(f"{source}: {bad} row(s) have a missing or infinite score")
    labels = table[ycols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    if task == "multiclass":
        return _class_labels(labels, len(names), source), score, names
    ok = np.isnan(labels) | np.isin(labels, [0.0, 1.0])
    if not ok.all():
        raise DataError(f"{source}: label columns {ycols} must hold 0, 1 or empty")
    if task == "binary" and np.isnan(labels).any():
        log.warning("%s: %d row(s) without a label are left out", source, int(np.isnan(labels).sum()))
    return labels, score, names


def _class_labels(labels: np.ndarray, k: int, source: str) -> np.ndarray:
    if labels.shape[1] == 1:
        y = labels[:, 0]
        if np.isnan(y).any() or (y != np.round(y)).any() or y.min() < 0 or y.max() >= k:
            raise DataError(f"{source}: multiclass 'label' must hold class indices 0..{k - 1}")
        return y.astype(int)
    if not (np.isin(labels, [0.0, 1.0]).all() and (labels.sum(axis=1) == 1).all()):
        raise DataError(f"{source}: multiclass label_<class> columns must be one-hot (one 1 per row)")
    return labels.argmax(axis=1)


def _integers(table, col: str, source: str) -> np.ndarray:
    values = table[col].to_numpy(dtype=float)
    if np.isnan(values).any() or (values != np.round(values)).any():
        raise DataError(f"{source}: column '{col}' must hold integers on every row")
    return values.astype(int)


def _units(table, patient_level: bool | None) -> tuple[np.ndarray, str]:
    # The image path is the unit for image-level data, so an image's rows in every repeat move together.
    image = table["path"].astype(str).to_numpy()
    if patient_level is False or "patient_id" not in table.columns or table["patient_id"].isna().all():
        return image, "image"
    pid = table["patient_id"]
    # An image is a (path, slice): the slices of one volume are several images of its patient.
    images = table["path"].astype(str) + ("\x00" + table["slice"].astype(str) if "slice" in table.columns else "")
    if images.groupby(pid.fillna("")).nunique().max() == 1:  # every patient id has one image
        return image, "image"
    if pid.isna().any():
        log.warning("%d row(s) without patient_id are resampled as their own unit", int(pid.isna().sum()))
    image_unit = "image:" + table["path"].astype(str).to_numpy()
    unit = np.where(pid.isna().to_numpy(), image_unit, "patient:" + pid.astype(str).to_numpy())
    return unit, "patient"
