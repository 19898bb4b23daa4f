"""Operating points: the threshold a rule picks, chosen without looking at the reported rows.

In cross-validation, fold k's threshold is chosen on the other folds' out-of-fold predictions
("cross-fitting") and applied to fold k; pooled threshold metrics use those per-fold thresholds.
The threshold stored for future data is chosen on all out-of-fold predictions. With a single
(fixed validation) fold there is nothing to cross-fit: the threshold is chosen on that fold,
and its metrics are flagged as optimistic.
"""

from __future__ import annotations

import logging

import numpy as np

from medrec.config import parse_operating_point
from medrec.errors import DataError
from medrec.eval.crossfit import crossfit_splits
from medrec.eval.metrics import ranked_counts
from medrec.eval.oof import OOF

log = logging.getLogger(__name__)


def choose_threshold(y: np.ndarray, score: np.ndarray, rule: str) -> float:
    """The score threshold (positive if score >= threshold) that `rule` picks on (y, score).

    youden: maximises sensitivity + specificity - 1 (the highest such threshold on ties, the
        tie decided in exact integer counts: J * P * N = tp * N - fp * P);
    sensitivity:x: the highest threshold whose sensitivity is >= x;
    specificity:x: the lowest threshold whose specificity is >= x;
    fixed:x: x. Thresholds are observed scores, or just above the largest score when the
    rule calls nothing positive.

    Raises:
        DataError: the rule needs both classes and `y` has only one.
    """
    kind, value = parse_operating_point(rule)
    if kind == "fixed":
        return float(value)
    y = np.asarray(y, dtype=bool)
    if y.all() or not y.any():
        raise DataError(
            f"operating point '{rule}' needs positive and negative cases; got {int(y.sum())} of {len(y)} positive"
        )
    i = _rule_index(y, score, kind, value)
    thr = np.r_[np.inf, ranked_counts(y, score)[2]]
    t = thr[i]
    return float(np.nextafter(np.max(score), np.inf)) if np.isinf(t) else float(t)


def _rule_index(y: np.ndarray, score: np.ndarray, kind: str, value: float | None) -> int:
    """Index into (+inf, distinct scores descending) of the threshold `kind` picks.

    Counts are compared as integers (weights are one, so the cumulative counts are exact):
    two thresholds with the same Youden index in exact arithmetic tie here too, whereas
    tpr - fpr in floating point can differ in the last bit and pick the lower one.
    """
    tp, fp, _ = ranked_counts(y, score)
    tp, fp = np.rint(tp).astype(np.int64), np.rint(fp).astype(np.int64)
    return int(rule_indices(tp, fp, kind, value)[0])


def rule_indices(tp: np.ndarray, fp: np.ndarray, kind: str, value: float | None,
                 present: np.ndarray | None = None) -> np.ndarray:
    """Per row of cumulative counts (b, t + 1) from `ranked_counts`, the index the rule picks.

    With integer-valued counts (weights one, or bootstrap counts) every comparison is exact.
    `present` (b, t + 1) marks the thresholds that are observed scores of that row's data (a
    bootstrap resample leaves some scores out); the rule only picks those, as it would on the
    resampled rows themselves. Rows without both classes get -1.
    """
    n_pos, n_neg = tp[:, -1:], fp[:, -1:]
    present = np.ones(tp.shape, dtype=bool) if present is None else present
    if kind == "youden":
        j = tp * n_neg - fp * n_pos  # Youden's J times P * N: exact in integers
        out = np.argmax(np.where(present, j, j.min() - 1), axis=1)  # first maximum = highest threshold
    elif kind == "sensitivity":  # tp >= x * P; the slack absorbs x * P's rounding (x = 0.95, P = 20)
        out = np.argmax(tp >= value * n_pos - 1e-9, axis=1)
    else:  # the lowest present threshold whose specificity is >= x
        ok = (n_neg - fp >= value * n_neg - 1e-9) & present
        out = ok.shape[1] - 1 - np.argmax(ok[:, ::-1], axis=1)
    return np.where((n_pos[:, 0] > 0) & (n_neg[:, 0] > 0), out, -1)


def crossfit_thresholds(
    y: np.ndarray, score: np.ndarray, fold: np.ndarray, rule: str, *, repeat: np.ndarray | None = None
) -> tuple[np.ndarray, list[dict]]:
    """One threshold per row, chosen without looking at the row's own fold.

    Within each repeat, fold k's threshold is `choose_threshold` on the rows of the other folds
    (rows whose label is NaN are ignored). A repeat with one fold is a fixed validation set:
    its threshold is chosen on that fold itself and the record says "this fold (optimistic)".
    A threshold that cannot be chosen (one class only) is NaN, with a warning.

    Returns:
        (thresholds per row, records [{"repeat", "fold", "threshold", "chosen_on"}]).
    """
    y = np.asarray(y, dtype=float)
    fixed = parse_operating_point(rule)[0] == "fixed"
    out = np.full(len(y), np.nan)
    records = []
    for split in crossfit_splits(fold, repeat):
        source = split.source & ~np.isnan(y)
        try:
            t = choose_threshold(y[source] == 1, score[source], rule)
        except DataError as exc:
            log.warning("repeat %s fold %s: no threshold (%s)", split.repeat, split.fold, exc)
            t = float("nan")
        out[split.target] = t
        records.append({"repeat": split.repeat, "fold": split.fold, "threshold": t,
                        "chosen_on": "fixed" if fixed else split.fitted_on})
    return out, records


def oof_thresholds(oof: OOF, rule: str) -> tuple[np.ndarray | None, list[dict], dict[str, float] | None]:
    """Cross-fitted thresholds per (row, label), their records, and the stored threshold per
    label chosen on all out-of-fold rows (None for multiclass, which uses the arg-max)."""
    if oof.task == "multiclass":
        return None, [], None
    rows = np.full(oof.y.shape, np.nan)
    records: list[dict] = []
    stored: dict[str, float] = {}
    for j, name in enumerate(oof.names):
        rows[:, j], recs = crossfit_thresholds(oof.y[:, j], oof.score[:, j], oof.fold, rule, repeat=oof.repeat)
        records += [{**r, "label": name} for r in recs]
        stored[name] = stored_threshold(oof.y[:, j], oof.score[:, j], rule, name)
    return rows, records, stored


def stored_threshold(y: np.ndarray, score: np.ndarray, rule: str, label: str = "label") -> float:
    """The threshold for future data: `rule` on every labelled row (NaN labels ignored).

    NaN, with a warning, when the rule cannot be applied (the label has one class only), so a
    run whose folds all trained still finishes with an undefined operating point for it.
    """
    y = np.asarray(y, dtype=float)
    has = ~np.isnan(y)
    try:
        return choose_threshold(y[has] == 1, np.asarray(score, dtype=float)[has], rule)
    except DataError as exc:
        log.warning("label %s: no operating point (%s)", label, exc)
        return float("nan")


def run_operating_point(table, task: str, rule: str) -> dict:
    """run.json's {"threshold": ...} from the merged out-of-fold table (oof_predictions.csv):
    a float (binary), {label: float} (multilabel) or None (multiclass: arg-max); a label whose
    rule cannot be applied gets None (undefined) instead of ending the run."""
    def value(t: float) -> float | None:
        return None if np.isnan(t) else float(t)

    if task == "multiclass":
        return {"threshold": None}
    if task == "binary":
        return {"threshold": value(stored_threshold(table["label"].to_numpy(dtype=float),
                                                    table["score"].to_numpy(dtype=float), rule))}
    names = [c[len("label_"):] for c in table.columns if c.startswith("label_")]
    return {"threshold": {n: value(stored_threshold(table[f"label_{n}"].to_numpy(dtype=float),
                                                    table[f"score_{n}"].to_numpy(dtype=float), rule, n))
                          for n in names}}


def threshold_selection(oof: OOF, rule: str) -> str:
    """How the reported operating points were chosen: "argmax" (multiclass), "fixed",
    "cross-fitted", or "same data (optimistic)" when a repeat has a single fold."""
    if oof.task == "multiclass":
        return "argmax"
    if parse_operating_point(rule)[0] == "fixed":
        return "fixed"
    single = any(len(np.unique(oof.fold[oof.repeat == r])) == 1 for r in np.unique(oof.repeat))
    return "same data (optimistic)" if single else "cross-fitted"
