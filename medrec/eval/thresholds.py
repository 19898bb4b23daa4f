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
from medrec.eval.metrics import roc_curve
from medrec.eval.oof import OOF

log = logging.getLogger(__name__)


def choose_threshold(y: np.ndarray, score: np.ndarray, rule: str) -> float:
    """The score threshold (positive if score >= threshold) that `rule` picks on (y, score).

    youden: maximises sensitivity + specificity - 1 (the highest such threshold on ties);
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
    fpr, tpr, thr = roc_curve(y, score)
    tol = 1e-12
    if kind == "youden":
        i = int(np.argmax(tpr - fpr))
    elif kind == "sensitivity":
        i = int(np.flatnonzero(tpr >= value - tol)[0])
    else:
        i = int(np.flatnonzero(1 - fpr >= value - tol)[-1])
    t = thr[i]
    return float(np.nextafter(np.max(score), np.inf)) if np.isinf(t) else float(t)


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
        has = ~np.isnan(oof.y[:, j])
        try:
            stored[name] = choose_threshold(oof.y[has, j] == 1, oof.score[has, j], rule)
        except DataError as exc:
            log.warning("label %s: no stored threshold (%s)", name, exc)
            stored[name] = float("nan")
    return rows, records, stored


def threshold_selection(oof: OOF, rule: str) -> str:
    """How the reported operating points were chosen: "argmax" (multiclass), "fixed",
    "cross-fitted", or "same data (optimistic)" when a repeat has a single fold."""
    if oof.task == "multiclass":
        return "argmax"
    if parse_operating_point(rule)[0] == "fixed":
        return "fixed"
    single = any(len(np.unique(oof.fold[oof.repeat == r])) == 1 for r in np.unique(oof.repeat))
    return "same data (optimistic)" if single else "cross-fitted"
