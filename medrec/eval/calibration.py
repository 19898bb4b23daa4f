"""Calibration: ECE, Brier score, reliability curve and (cross-fitted) temperature scaling.

Binning follows scikit-learn's `calibration_curve(strategy="uniform")`: `n_bins` equal-width
bins on [0, 1], each closed on the right (a probability of exactly 0.1 falls in the first of ten
bins), so the reliability curve here and scikit-learn's agree point for point.

Binary and multilabel scores are calibrated as positive-class probabilities; multiclass scores
as the top label (confidence = the largest probability, "correct" = the arg-max is the label).
The weighted functions take a (b, n) matrix of row weights and return b values at once, which
is how the bootstrap in `medrec.eval.metrics` resamples them.
"""

from __future__ import annotations

import logging

import numpy as np

from medrec.eval.crossfit import SAME_FOLD, crossfit_splits

log = logging.getLogger(__name__)

_EPS = 1e-7


def bin_ids(p: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin index (0..n_bins-1) of each probability, scikit-learn's uniform binning."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.searchsorted(edges[1:-1], np.asarray(p, dtype=float))


def weighted_ece(y: np.ndarray, p: np.ndarray, w: np.ndarray, n_bins: int) -> np.ndarray:
    """Expected calibration error for each row of weights `w` (b, n): sum over bins of
    |observed - predicted| weighted by the bin's share, i.e. sum_bins |sum w(y - p)| / sum w."""
    if len(p) == 0:
        return np.full(w.shape[0], np.nan)
    ids = bin_ids(p, n_bins)
    order = np.argsort(ids, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(ids[order]) != 0])
    # Per-bin sums by reduceat over bin-sorted columns: no BLAS, so the same order of additions
    # (and the same bytes in metrics.json) on every machine.
    diff = (np.asarray(y, dtype=float) - p).astype(w.dtype)[order]
    gap = np.add.reduceat(w[:, order] * diff, starts, axis=1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.abs(gap).sum(axis=1) / w.sum(axis=1, dtype=np.float64)


def weighted_brier(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Brier score (mean squared error of probabilities) for each row of weights.

    `p` may be (n,) with y in {0, 1}, or (n, K) class probabilities with y one-hot (n, K),
    in which case the squared error is summed over classes (the multiclass Brier score).
    """
    err = (np.asarray(p, dtype=float) - np.asarray(y, dtype=float)) ** 2
    if err.ndim == 2:
        err = err.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w * err.astype(w.dtype)).sum(axis=1, dtype=np.float64) / w.sum(axis=1, dtype=np.float64)


def ece(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error of positive-class probabilities `p` for 0/1 labels `y`."""
    return float(weighted_ece(y, np.asarray(p, dtype=float), np.ones((1, len(p))), n_bins)[0])


def brier(y: np.ndarray, p: np.ndarray) -> float:
    """Brier score; (n, K) probabilities with one-hot `y` give the multiclass score."""
    return float(weighted_brier(y, p, np.ones((1, len(p))))[0])


def top_label(y: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Multiclass -> (correct 0/1, confidence): the top-label view used for ECE and reliability."""
    pred = prob.argmax(axis=1)
    return (pred == y).astype(float), prob.max(axis=1)


def reliability_curve(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> dict[str, list]:
    """Per bin: edges, mean predicted probability, observed frequency and count (NaN if empty)."""
    ids = bin_ids(p, n_bins)
    count = np.bincount(ids, minlength=n_bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(ids, weights=p, minlength=n_bins) / count
        obs = np.bincount(ids, weights=np.asarray(y, dtype=float), minlength=n_bins) / count
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return {
        "bin_lower": edges[:-1].tolist(),
        "bin_upper": edges[1:].tolist(),
        "mean_predicted": mean_p.tolist(),
        "observed": obs.tolist(),
        "count": count.astype(int).tolist(),
    }


def _logits(p: np.ndarray, kind: str) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS)
    return np.log(p) if kind == "multiclass" else np.log(p) - np.log1p(-p)


def apply_temperature(p: np.ndarray, temperature: float, kind: str) -> np.ndarray:
    """Rescale probabilities by a temperature: sigmoid(logit(p)/T), or softmax(log p / T).

    `kind` is "binary" (positive-class probabilities, any shape) or "multiclass" ((n, K) rows).
    """
    z = _logits(p, kind) / temperature
    if kind == "multiclass":
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)
    return 1.0 / (1.0 + np.exp(-z))


def _nll(y: np.ndarray, p: np.ndarray, kind: str) -> float:
    p = np.clip(p, _EPS, 1 - _EPS)
    if kind == "multiclass":
        return float(-np.log(p[np.arange(len(y)), y.astype(int)]).mean())
    return float(-(y * np.log(p) + (1 - y) * np.log1p(-p)).mean())


def fit_temperature(y: np.ndarray, p: np.ndarray, kind: str) -> float:
    """The temperature T in [e^-4, e^4] that minimises the negative log-likelihood of `y`."""
    from scipy.optimize import minimize_scalar

    res = minimize_scalar(
        lambda log_t: _nll(y, apply_temperature(p, float(np.exp(log_t)), kind), kind),
        bounds=(-4.0, 4.0),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(np.exp(res.x))


def crossfit_temperature(
    y: np.ndarray, p: np.ndarray, fold: np.ndarray, repeat: np.ndarray, kind: str
) -> tuple[np.ndarray, list[dict]]:
    """Temperature-scale out-of-fold probabilities without fitting on the rows being scaled.

    Within each repeat, fold k's temperature is fitted on the other folds' rows and applied to
    fold k. A repeat with a single fold (a fixed validation set) is fitted on itself, and the
    returned record says so.

    Returns:
        (calibrated probabilities, one record per (repeat, fold) with its temperature).
    """
    out = np.array(p, dtype=float, copy=True)
    records = []
    for split in crossfit_splits(fold, repeat):
        t = fit_temperature(y[split.source], p[split.source], kind)
        out[split.target] = apply_temperature(p[split.target], t, kind)
        records.append({"repeat": split.repeat, "fold": split.fold, "temperature": t, "fitted_on": split.fitted_on})
    return out, records


def _columns(task: str, names: tuple[str, ...], y: np.ndarray, score: np.ndarray):
    """(name, rows mask, 0/1 target, probability) per calibrated quantity of a task."""
    if task == "multiclass":
        correct, conf = top_label(y, score)
        return [("top label", np.ones(len(y), dtype=bool), correct, conf)]
    return [(n, ~np.isnan(y[:, j]), y[:, j], score[:, j]) for j, n in enumerate(names)]


def calibration_summary(
    task: str, names: tuple[str, ...], y: np.ndarray, score: np.ndarray, fold: np.ndarray,
    repeat: np.ndarray, *, n_bins: int, temperature_scaling: bool,
) -> dict:
    """Reliability curves and, if asked, cross-fitted temperature scaling before/after.

    Args:
        y, score: as in `medrec.eval.metrics.OOF` (binary/multilabel (n, L), multiclass y (n,)).

    Returns:
        {"n_bins", "scope", "reliability": {name: curve}, "temperature_scaling": None | {...}}
        with ECE/Brier before and after scaling (point values; the metric table has CIs for
        the unscaled ones) and the temperatures: per fold (cross-fitted) and stored (all rows).
    """
    if np.nanmin(score) < 0 or np.nanmax(score) > 1:
        log.warning("scores outside [0, 1]: calibration needs probabilities; skipped")
        return {"n_bins": n_bins, "scope": "skipped: scores are not probabilities", "reliability": {},
                "temperature_scaling": None}
    cols = _columns(task, names, y, score)
    out = {
        "n_bins": n_bins,
        "scope": "top label" if task == "multiclass" else "positive class",
        "reliability": {n: reliability_curve(t[m], p[m], n_bins) for n, m, t, p in cols},
        "temperature_scaling": None,
    }
    if temperature_scaling:
        out["temperature_scaling"] = _temperature_section(task, names, y, score, fold, repeat, n_bins)
    return out


def _temperature_section(task, names, y, score, fold, repeat, n_bins) -> dict:
    targets = [("top label", np.ones(len(y), dtype=bool), y, score, "multiclass")] if task == "multiclass" else [
        (n, ~np.isnan(y[:, j]), y[:, j], score[:, j], "binary") for j, n in enumerate(names)
    ]
    before, after, per_fold, stored = {}, {}, [], {}
    for name, m, t, p, kind in targets:
        scaled, records = crossfit_temperature(t[m], p[m], fold[m], repeat[m], kind)
        per_fold += [{**r, "label": name} for r in records]
        stored[name] = fit_temperature(t[m], p[m], kind)
        for dest, probs in ((before, p[m]), (after, scaled)):
            dest[name] = _point_calibration(t[m], probs, kind, n_bins)
    # A fixed validation fold has nothing else to fit on: its "after" values are in-sample.
    in_sample = any(r["fitted_on"] == SAME_FOLD for r in per_fold)
    method = ("temperature scaling fitted on the validation fold itself (in-sample, optimistic)" if in_sample
              else "temperature scaling, cross-fitted like the thresholds (fitted on the other folds)")
    return {"method": method, "in_sample": in_sample,
            "before": before, "after": after, "per_fold": per_fold, "stored": stored}


def _point_calibration(y: np.ndarray, p: np.ndarray, kind: str, n_bins: int) -> dict[str, float]:
    if kind == "multiclass":
        correct, conf = top_label(y, p)
        return {"ece": ece(correct, conf, n_bins), "brier": brier(np.eye(p.shape[1])[y.astype(int)], p)}
    return {"ece": ece(y, p, n_bins), "brier": brier(y, p)}
