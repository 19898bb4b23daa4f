"""Patient-grouped, stratified splits, and the leakage check that every run performs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

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
    """Folds for cross-validation (patient-grouped, stratified: `grouped_assignment`), or the fixed
    split named by `cfg.split_column`. Repeat r uses seed + r, so repeats differ.

    Rows of the held-out test set (see `holdout_mask`) must be removed before calling this.
    """
    groups = table["patient_id"].to_numpy()
    if cfg.split_column:
        return fixed_splits(table, cfg.split_column)
    strata = stratification_labels(labels, task)
    n_groups = len(np.unique(groups))
    if n_groups < cfg.folds:
        raise ConfigError(f"cv.folds={cfg.folds} but the data has only {n_groups} patients; lower cv.folds")
    splits, idx = [], np.arange(len(table))
    for r in range(cfg.repeats):
        fold_of = grouped_assignment(groups, strata, [1.0] * cfg.folds, seed + r)
        splits += [Split(k, r, idx[fold_of != k], idx[fold_of == k]) for k in range(cfg.folds)]
    return splits


def grouped_assignment(groups: np.ndarray, strata: np.ndarray, fractions: list[float], seed: int,
                       *, restarts: int = 16) -> np.ndarray:
    """Assign every row to a bin (0..len(fractions)-1), whole groups at a time, stratified.

    Greedy: groups are visited roughly largest first (sizes jittered by a seeded random factor in
    [0.5, 1.5]) and each joins the bin where it most reduces the squared deviation from that bin's
    target share of every stratum and of the row count; of `restarts` seeded orders the one with
    the smallest deviation wins. Unlike sklearn's StratifiedGroupKFold(shuffle=True), which sorts
    groups by their class spread and shuffles only among identical ones, the seed changes the
    partition even when every patient has a different number of images.

    Returns:
        (n_rows,) bin index per row.
    """
    rng = np.random.default_rng(seed)
    uniq, inverse = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    codes = np.unique(strata, return_inverse=True)[1]
    # per group: count of rows in each stratum, plus its row count (balances the bin sizes too)
    counts = np.zeros((len(uniq), codes.max() + 2))
    np.add.at(counts, (inverse, codes), 1.0)
    counts[:, -1] = counts[:, :-1].sum(axis=1)
    share = np.asarray(fractions, dtype=float) / float(np.sum(fractions))
    target = share[:, None] * counts.sum(axis=0)[None, :]  # (bins, strata + 1)
    best, best_cost = None, np.inf
    for _ in range(restarts):
        order = np.argsort(-counts[:, -1] * rng.uniform(0.5, 1.5, len(uniq)), kind="stable")
        where, cost = _greedy(counts, order, share, target, rng)
        if cost < best_cost:
            best, best_cost = where, cost
    _fill_empty_bins(best, len(share), rng)
    return best[inverse]


def _greedy(counts: np.ndarray, order: np.ndarray, share: np.ndarray, target: np.ndarray,
            rng: np.random.Generator) -> tuple[np.ndarray, float]:
    filled = np.zeros_like(target)
    where = np.empty(len(counts), dtype=int)
    for g in order:
        c = counts[g]
        # increase of sum_j (filled_bj - target_bj)^2 / share_b when group g joins bin b
        delta = ((2 * c * (filled - target) + c * c) / share[:, None]).sum(axis=1)
        ties = np.flatnonzero(np.isclose(delta, delta.min()))
        b = ties[rng.integers(len(ties))]
        filled[b] += c
        where[g] = b
    return where, float((((filled - target) ** 2) / share[:, None]).sum())


def _fill_empty_bins(where: np.ndarray, n_bins: int, rng: np.random.Generator) -> None:
    """A bin left empty (few, large groups) takes a random group from the fullest bin."""
    for b in range(n_bins):
        if not (where == b).any():
            donor = np.bincount(where, minlength=n_bins).argmax()
            if (where == donor).sum() > 1:
                where[rng.choice(np.flatnonzero(where == donor))] = b


def inner_split(table: pd.DataFrame, labels: np.ndarray, task: str, fraction: float,
                seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, select) positions into `table`: a patient-grouped, stratified inner split whose
    `select` part (about `fraction` of the rows) chooses the epoch for early stopping.

    Raises:
        ConfigError: the training fold has fewer than two patients.
    """
    groups = table["patient_id"].to_numpy()
    if len(np.unique(groups)) < 2:
        raise ConfigError("early stopping needs at least two patients in each training fold for its inner "
                          "split; lower cv.folds or turn early stopping off (train.early_stopping.patience: null)")
    where = grouped_assignment(groups, stratification_labels(labels, task), [fraction, 1 - fraction], seed)
    idx = np.arange(len(table))
    return idx[where == 1], idx[where == 0]


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
    """Boolean mask of a patient-disjoint, stratified held-out test set of `fraction` of the images
    (to within about one patient), different for every seed."""
    if fraction <= 0:
        return np.zeros(len(table), dtype=bool)
    where = grouped_assignment(table["patient_id"].to_numpy(), stratification_labels(labels, task),
                               [fraction, 1 - fraction], seed + 10_000)
    return where == 0


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
        # against the rows the folds use: an unreadable image (in neither) is no leak
        used = np.unique(np.concatenate([np.concatenate([s.train, s.val]) for s in splits])) if splits else []
        both = np.intersect1d(patients[test_mask], patients[used])
        if len(both):
            raise LeakageError(f"{len(both)} patient(s) in both the held-out test set and the CV data (e.g. {both[0]})")
