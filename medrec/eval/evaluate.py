"""Everything the report states about a run's out-of-fold predictions, in one call."""

from __future__ import annotations

import numpy as np

from medrec.config import EvalConfig
from medrec.eval import calibration as cal
from medrec.eval.bootstrap import bootstrap
from medrec.eval.metrics import HEADLINE, confusion_counts
from medrec.eval.oof import OOF, oof_statistic
from medrec.eval.thresholds import oof_thresholds, threshold_selection


def per_fold_metrics(oof: OOF, thresholds: np.ndarray | None, n_bins: int | None) -> list[dict]:
    """Run-level metrics of each (repeat, fold), at that fold's cross-fitted threshold."""
    out = []
    for r in np.unique(oof.repeat):
        for k in np.unique(oof.fold[oof.repeat == r]):
            rows = np.flatnonzero((oof.repeat == r) & (oof.fold == k))
            block = oof.block(rows, thresholds, np.ones((1, len(rows))), n_bins)
            out.append({
                "repeat": int(r), "fold": int(k), "n_images": len(rows),
                "n_patients": len(np.unique(oof.unit[rows])),
                "metrics": {m: float(v[0]) for (label, m), v in block.items() if label == HEADLINE},
            })
    return out


def confusion(oof: OOF, thresholds: np.ndarray | None) -> dict[str, list[list[float]]]:
    """Confusion matrices at the operating point, averaged over repeats.

    multiclass: {"matrix": K x K, rows = true class, columns = predicted class};
    binary/multilabel: {label: [[tn, fp], [fn, tp]]} over the rows whose fold has a threshold
    (rows of a fold without one are left out, see `undefined_thresholds`, never called negative).
    """
    repeats = np.unique(oof.repeat)
    if oof.task == "multiclass":
        k = len(oof.names)
        m = np.zeros((k, k))
        np.add.at(m, (oof.y.astype(int), oof.score.argmax(axis=1)), 1.0)
        return {"matrix": (m / len(repeats)).tolist()}
    out = {}
    for j, name in enumerate(oof.names):
        has = ~np.isnan(oof.y[:, j]) & ~np.isnan(thresholds[:, j])
        y = oof.y[has, j] == 1
        pred = oof.score[has, j] >= thresholds[has, j]
        tp, fp, tn, fn = (float(c[0]) / len(repeats) for c in confusion_counts(y, pred))
        out[name] = [[tn, fp], [fn, tp]]
    return out


def undefined_thresholds(oof: OOF, thresholds: np.ndarray | None, records: list[dict]) -> dict[str, dict]:
    """Per label whose threshold could not be chosen in some fold: those (repeat, fold) pairs and
    the number of labelled rows left out of its threshold metrics, confusion matrix and worst cases."""
    if thresholds is None:
        return {}
    out = {}
    for j, name in enumerate(oof.names):
        folds = [[r["repeat"], r["fold"]] for r in records if r["label"] == name and np.isnan(r["threshold"])]
        if folds:
            rows = ~np.isnan(oof.y[:, j]) & np.isnan(thresholds[:, j])
            out[name] = {"folds": folds, "n_rows": int(rows.sum())}
    return out


def evaluate(oof: OOF, cfg: EvalConfig) -> dict:
    """Everything the report states about a run's out-of-fold predictions.

    Args:
        cfg: the run's `EvalConfig` (operating_point, bootstrap, bootstrap_seed,
            calibration_bins, temperature_scaling).

    Returns:
        {"metrics": {(label, metric): {"value", "ci_low", "ci_high", "n_valid"}},
         "thresholds": per (row, label) or None, "fold_thresholds", "stored_threshold",
         "selection", "undefined_thresholds", "per_fold", "confusion", "calibration"} (floats unrounded).
    """
    probabilities = bool(np.nanmin(oof.score) >= 0 and np.nanmax(oof.score) <= 1)
    n_bins = cfg.calibration_bins if probabilities else None
    thresholds, records, stored = oof_thresholds(oof, cfg.operating_point)
    stat = oof_statistic(oof, thresholds, n_bins)
    return {
        "metrics": bootstrap(stat, oof.unit, n_resamples=cfg.bootstrap, seed=cfg.bootstrap_seed),
        "thresholds": thresholds,
        "fold_thresholds": records,
        "stored_threshold": stored,
        "selection": threshold_selection(oof, cfg.operating_point),
        "undefined_thresholds": undefined_thresholds(oof, thresholds, records),
        "per_fold": per_fold_metrics(oof, thresholds, n_bins),
        "confusion": confusion(oof, thresholds),
        "calibration": cal.calibration_summary(
            oof.task, oof.names, oof.y, oof.score, oof.fold, oof.repeat,
            n_bins=cfg.calibration_bins, temperature_scaling=cfg.temperature_scaling,
        ),
    }
