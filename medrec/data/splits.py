"""Patient-grouped, stratified splits, and the leakage check that every run performs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from medrec.config import CVConfig
from medrec.errors import ConfigError, LeakageError


@dataclass(frozen=True)
class Split:
    """Row indices into the manifest for one fold of one repeat."""

    fold: int
    repeat: int
    train: np.ndarray
    val: np.ndarray


def stratification_labels(labels: np.ndarray, task: str) -> np.ndarray:
    """1-D strata: the class for binary/multiclass, the label-vector pattern for multilabel."""
    if task == "multiclass":
        return labels.astype(int)
    lab = np.nan_to_num(labels.reshape(len(labels), -1), nan=0.0).astype(int)
    if lab.shape[1] == 1:
        return lab[:, 0]
    # Multilabel: stratify on the label vector. Rare combinations are merged into one stratum
    # so every stratum can appear in every fold.
    codes = np.array(["".join(map(str, row)) for row in lab])
    uniq, counts = np.unique(codes, return_counts=True)
    rare = set(uniq[counts < 2 * lab.shape[1]])
    return pd.Series(["rare" if c in rare else c for c in codes]).astype("category").cat.codes.to_numpy()


def make_splits(table: pd.DataFrame, labels: np.ndarray, task: str, cfg: CVConfig, seed: int) -> list[Split]:
    """Folds for cross-validation, or the fixed split named by `cfg.split_column`.

    Rows of the held-out test set (see `holdout_mask`) must be removed before calling this.
    """
    groups = table["patient_id"].to_numpy()
    if cfg.split_column:
        return fixed_splits(table, cfg.split_column)
    strata = stratification_labels(labels, task)
    n_groups = len(np.unique(groups))
    if n_groups < cfg.folds:
        raise ConfigError(f"cv.folds={cfg.folds} but the data has only {n_groups} patients; lower cv.folds")
    splits = []
    for r in range(cfg.repeats):
        sgkf = StratifiedGroupKFold(n_splits=cfg.folds, shuffle=True, random_state=seed + r)
        for k, (tr, va) in enumerate(sgkf.split(np.zeros(len(strata)), strata, groups)):
            splits.append(Split(k, r, np.sort(tr), np.sort(va)))
    return splits


def fixed_splits(table: pd.DataFrame, column: str) -> list[Split]:
    """A split read from a manifest column: fold numbers (each is a validation fold), or train/val."""
    if column not in table.columns:
        raise ConfigError(f"cv.split_column '{column}' is not a manifest column; present: {list(table.columns)}")
    values = table[column].astype(str).str.strip().str.lower().to_numpy()
    idx = np.arange(len(values))
    if set(values) <= {"train", "val", "valid", "validation"}:
        is_val = np.isin(values, ["val", "valid", "validation"])
        return [Split(0, 0, idx[~is_val], idx[is_val])]
    try:
        folds = values.astype(int)
    except ValueError:
        raise ConfigError(
            f"cv.split_column '{column}' must hold fold numbers or train/val, got {sorted(set(values))[:5]}"
        ) from None
    return [Split(int(k), 0, idx[folds != k], idx[folds == k]) for k in sorted(set(folds))]


def holdout_mask(table: pd.DataFrame, labels: np.ndarray, task: str, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of a patient-disjoint, stratified held-out test set of about `fraction`."""
    if fraction <= 0:
        return np.zeros(len(table), dtype=bool)
    n_splits = max(2, round(1 / fraction))
    sgkf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed + 10_000)
    _, test = next(sgkf.split(np.zeros(len(table)), stratification_labels(labels, task), table["patient_id"]))
    mask = np.zeros(len(table), dtype=bool)
    mask[test] = True
    return mask


def assert_no_patient_overlap(patients: np.ndarray, splits: list[Split], test_mask: np.ndarray | None = None) -> None:
    """Raise LeakageError if any patient is on both sides of any split.

    Checked: train vs validation within each split, validation sets of two folds of the same
    repeat, and the held-out test set against everything else.
    """
    patients = np.asarray(patients)
    for s in splits:
        both = np.intersect1d(patients[s.train], patients[s.val])
        if len(both):
            raise LeakageError(
                f"repeat {s.repeat} fold {s.fold}: {len(both)} patient(s) in both train and validation "
                f"(e.g. {both[0]}); splits must be grouped by patient_id"
            )
    seen: dict[tuple[int, str], int] = {}
    for s in splits:
        for p in np.unique(patients[s.val]):
            other = seen.setdefault((s.repeat, p), s.fold)
            if other != s.fold:
                raise LeakageError(f"repeat {s.repeat}: patient {p} is in the validation sets of folds {other} and {s.fold}")
    if test_mask is not None and test_mask.any():
        both = np.intersect1d(patients[test_mask], patients[~test_mask])
        if len(both):
            raise LeakageError(f"{len(both)} patient(s) in both the held-out test set and the CV data (e.g. {both[0]})")
