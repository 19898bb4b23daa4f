"""Metric functions: one weighted, vectorised code path for every metric.

A (b, n) matrix of row weights gives b estimates at once. Weights of one give the plain metric
(the tests check it against scikit-learn); the integer weights of a bootstrap resample give the
metric on that resample, exactly as if the resampled rows had been copied (see
`medrec.eval.bootstrap`).

Conventions: scores are probabilities (sigmoid for binary/multilabel, softmax for
multiclass); a case is called positive when score >= threshold; undefined ratios (0/0) are NaN.

Related modules: `thresholds` (operating points, cross-fitted), `bootstrap` (patient-level
resampling), `oof` (out-of-fold arrays as a statistic), `evaluate` (everything a report states).
Their public names are also reachable from here for older callers.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import numpy as np

from medrec.eval import calibration as cal

BINARY_METRICS = (
    "auroc", "auprc", "accuracy", "balanced_accuracy", "f1", "sensitivity", "specificity", "ppv", "npv",
)
RANK_METRICS = ("auroc", "auprc")
THRESHOLD_METRICS = BINARY_METRICS[2:]
CALIBRATION_METRICS = ("brier", "ece")
HEADLINE = ""  # the label slot of run-level metrics in (label, metric) keys

Key = tuple[str, str]  # (label name or HEADLINE, metric name)
Statistic = Callable[[np.ndarray], dict[Key, np.ndarray]]
Defined = dict[Key, bool]  # which per-label metrics the point estimate defines (the macro label set)


# ---------------------------------------------------------------- weighted core

def _weights(w: np.ndarray | None, n: int) -> np.ndarray:
    if w is None:
        return np.ones((1, n))
    w = np.asarray(w)
    if not np.issubdtype(w.dtype, np.floating):
        w = w.astype(float)
    return w[None, :] if w.ndim == 1 else w


def ranked_counts(
    y: np.ndarray, score: np.ndarray, w: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted cumulative true and false positives at each distinct score, highest first.

    Returns:
        tp (b, t + 1), fp (b, t + 1) starting with a column of zeros (nothing called positive),
        and the t distinct thresholds in decreasing order.
    """
    y = np.asarray(y, dtype=bool)
    s = np.asarray(score, dtype=float)
    w = _weights(w, len(s))
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    ends = np.r_[np.flatnonzero(s_sorted[1:] != s_sorted[:-1]), len(s) - 1]
    # Cumulate positives and negatives separately (cheaper than masking a full matrix twice),
    # then read each at the group ends: the count of positives ranked up to an end indexes it.
    out = []
    for mask in (y_sorted, ~y_sorted):
        cum = np.zeros((w.shape[0], int(mask.sum()) + 1))
        np.cumsum(w[:, order[mask]], axis=1, out=cum[:, 1:])
        out.append(cum[:, np.r_[0, np.cumsum(mask)[ends]]])
    return out[0], out[1], s_sorted[ends]


def rank_metrics(y: np.ndarray, score: np.ndarray, w: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """AUROC and AUPRC per row of weights `w` (b, n).

    AUROC is the weighted Mann-Whitney statistic (a tied positive/negative pair counts one
    half), which equals the trapezoidal area under the ROC curve. AUPRC is average precision,
    sum_i (R_i - R_{i-1}) P_i over distinct thresholds (scikit-learn's definition), i.e. each
    positive's weight times the precision at its own score. Both only touch the positives'
    columns after one cumulative sum, which is what makes 1000 resamples cheap.
    """
    y = np.asarray(y, dtype=bool)
    s = np.asarray(score, dtype=float)
    w = _weights(w, len(s))
    if len(s) == 0:
        return {"auroc": np.full(w.shape[0], np.nan), "auprc": np.full(w.shape[0], np.nan)}
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    new_group = np.r_[True, s_sorted[1:] != s_sorted[:-1]]
    group = np.cumsum(new_group) - 1
    starts = np.flatnonzero(new_group)
    ends = np.r_[starts[1:], len(s)]  # one past each group's last row
    negs_before = np.r_[0, np.cumsum(~y_sorted)]  # negatives among the first i sorted rows
    poss_before = np.r_[0, np.cumsum(y_sorted)]
    g = group[y_sorted]  # group of each positive
    wp, cum_n = w[:, order[y_sorted]], _cumsum0(w[:, order[~y_sorted]])
    cum_p = _cumsum0(wp)
    neg_above, neg_through = negs_before[starts[g]], negs_before[ends[g]]
    n_pos, n_neg = cum_p[:, -1], cum_n[:, -1]
    through = cum_n[:, neg_through]
    # negatives ranked below a positive, plus half of those tied with it
    tied_half = through if np.array_equal(neg_above, neg_through) else (through + cum_n[:, neg_above]) / 2
    below = n_neg[:, None] - tied_half
    tp_through = cum_p[:, poss_before[ends[g]]]
    # tp_through includes the positive's own weight, so called == 0 only where that weight is 0;
    # the floor avoids 0/0 there without a masked copy.
    called = tp_through + through
    np.maximum(called, np.finfo(called.dtype).tiny, out=called)
    precision = np.divide(tp_through, called, out=called)
    # float64 accumulators: the pair counts summed here exceed float32's exact integer range.
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "auroc": (wp * below).sum(axis=1, dtype=np.float64) / (n_pos.astype(np.float64) * n_neg),
            "auprc": (wp * precision).sum(axis=1, dtype=np.float64) / n_pos,
        }


def _cumsum0(a: np.ndarray) -> np.ndarray:
    """Cumulative sum along rows with a leading column of zeros."""
    out = np.zeros((a.shape[0], a.shape[1] + 1), dtype=a.dtype)
    np.cumsum(a, axis=1, out=out[:, 1:])
    return out


def weighted_auroc(y: np.ndarray, score: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """Area under the ROC curve per row of weights."""
    return rank_metrics(y, score, w)["auroc"]


def weighted_auprc(y: np.ndarray, score: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """Average precision per row of weights."""
    return rank_metrics(y, score, w)["auprc"]


def confusion_counts(
    y: np.ndarray, pred: np.ndarray, w: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Weighted (tp, fp, tn, fn), each of shape (b,)."""
    y = np.asarray(y, dtype=bool)
    pred = np.asarray(pred, dtype=bool)
    w = _weights(w, len(y))
    tp, called, pos = (_dot(w, v) for v in (y & pred, pred, y))
    fn = pos - tp
    return tp, called - tp, w.sum(axis=1) - called - fn, fn


def _dot(w: np.ndarray, v: np.ndarray) -> np.ndarray:
    """w @ v without BLAS: einsum's own loop measured 100x faster than a multi-threaded BLAS
    gemv on a busy machine, and it adds in the same order everywhere."""
    return np.einsum("ij,j->i", w, v.astype(w.dtype))


def rates(tp: np.ndarray, fp: np.ndarray, tn: np.ndarray, fn: np.ndarray) -> dict[str, np.ndarray]:
    """Threshold metrics from confusion counts (NaN where a ratio is 0/0)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = tp / (tp + fn)
        spec = tn / (tn + fp)
        return {
            "accuracy": (tp + tn) / (tp + fp + tn + fn),
            "balanced_accuracy": (sens + spec) / 2,
            "f1": 2 * tp / (2 * tp + fp + fn),
            "sensitivity": sens,
            "specificity": spec,
            "ppv": tp / (tp + fp),
            "npv": tn / (tn + fn),
        }


def binary_block(
    y: np.ndarray, score: np.ndarray, threshold: float | np.ndarray, w: np.ndarray | None = None,
    n_bins: int | None = None,
) -> dict[str, np.ndarray]:
    """Every binary metric for each row of weights.

    Args:
        threshold: one value, or one per row (the row's fold threshold). Rows whose threshold is
            NaN (a fold where none could be chosen) are left out of the threshold metrics, never
            called negative; with no threshold at all those metrics are NaN. Rank and
            calibration metrics use every row.
        n_bins: also compute Brier score and ECE with this many bins.
    """
    w = _weights(w, len(score))
    out = rank_metrics(y, score, w)
    thr = np.broadcast_to(np.asarray(threshold, dtype=float), np.shape(score))
    ok = ~np.isnan(thr)
    if not ok.any():
        out.update({m: np.full(w.shape[0], np.nan) for m in THRESHOLD_METRICS})
    elif ok.all():
        out.update(rates(*confusion_counts(y, score >= thr, w)))
    else:
        y_ok, s_ok = np.asarray(y)[ok], np.asarray(score)[ok]
        out.update(rates(*confusion_counts(y_ok, s_ok >= thr[ok], w[:, ok])))
    if n_bins is not None:
        out["brier"] = cal.weighted_brier(y, score, w)
        out["ece"] = cal.weighted_ece(y, score, w, n_bins)
    return out


# ---------------------------------------------------------------- plain metrics

def auroc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve of 0/1 labels `y` and scores."""
    return float(weighted_auroc(y, score)[0])


def auprc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the precision-recall curve as average precision."""
    return float(weighted_auprc(y, score)[0])


def _rate(name: str) -> Callable[[np.ndarray, np.ndarray], float]:
    def metric(y: np.ndarray, pred: np.ndarray) -> float:
        return float(rates(*confusion_counts(y, pred))[name][0])

    metric.__name__ = name
    metric.__doc__ = f"{name.replace('_', ' ').capitalize()} of 0/1 predictions `pred` against 0/1 labels `y`."
    return metric


accuracy = _rate("accuracy")
balanced_accuracy = _rate("balanced_accuracy")
f1 = _rate("f1")
sensitivity = _rate("sensitivity")
specificity = _rate("specificity")
ppv = _rate("ppv")
npv = _rate("npv")


def binary_metrics(y: np.ndarray, score: np.ndarray, threshold: float | np.ndarray) -> dict[str, float]:
    """All binary metrics of scores at a threshold (one value or one per row)."""
    return {k: float(v[0]) for k, v in binary_block(y, score, threshold).items()}


def multiclass_block(
    y: np.ndarray, prob: np.ndarray, names: tuple[str, ...], w: np.ndarray | None = None,
    n_bins: int | None = None, defined: Defined | None = None,
) -> dict[Key, np.ndarray]:
    """Multiclass metrics per row of weights: one-vs-rest per class, macro averages, accuracy.

    Decisions are the arg-max class. Macro averages (balanced accuracy included) are over the
    classes whose value is defined at the point estimate (all rows, weight one): a resample in
    which one of them is undefined has an undefined macro value, not the mean of the rest.

    Args:
        defined: {(class, metric): defined at the point estimate}; computed here when omitted.
    """
    w = _weights(w, len(y))
    y = np.asarray(y, dtype=int)
    if defined is None and not _is_point(w):
        defined = defined_at_point(multiclass_block(y, prob, names))
    pred = prob.argmax(axis=1)
    out: dict[Key, np.ndarray] = {}
    for c, name in enumerate(names):
        per = rank_metrics(y == c, prob[:, c], w)
        per.update(rates(*confusion_counts(y == c, pred == c, w)))
        out.update({(name, m): per[m] for m in BINARY_METRICS if m not in ("accuracy", "balanced_accuracy")})
    with np.errstate(invalid="ignore", divide="ignore"):
        out[(HEADLINE, "accuracy")] = _dot(w, pred == y) / w.sum(axis=1)
    for metric, source in (("balanced_accuracy", "sensitivity"), ("f1_macro", "f1"),
                           ("auroc_macro", "auroc"), ("auprc_macro", "auprc")):
        out[(HEADLINE, metric)] = _macro(out, names, source, defined)
    if n_bins is not None:
        onehot = np.eye(prob.shape[1])[y]
        correct, conf = cal.top_label(y, prob)
        out[(HEADLINE, "brier")] = cal.weighted_brier(onehot, prob, w)
        out[(HEADLINE, "ece")] = cal.weighted_ece(correct, conf, w, n_bins)
    return out


def multilabel_block(
    y: np.ndarray, score: np.ndarray, threshold: np.ndarray, names: tuple[str, ...],
    w: np.ndarray | None = None, n_bins: int | None = None, defined: Defined | None = None,
) -> dict[Key, np.ndarray]:
    """Per-label binary metrics (NaN labels masked out), their macro and micro averages.

    With one label (a binary task) the label's metrics are the run-level metrics themselves.
    Micro averages pool every (image, label) pair that has a label. Macro averages are over
    the labels defined at the point estimate (see `multiclass_block`).
    """
    w = _weights(w, len(y))
    if defined is None and not _is_point(w) and len(names) > 1:
        defined = defined_at_point(multilabel_block(y, score, threshold, names, None, n_bins))
    threshold = np.broadcast_to(threshold, y.shape)
    has = ~np.isnan(y)
    out: dict[Key, np.ndarray] = {}
    for j, name in enumerate(names):
        rows = has[:, j] if not has[:, j].all() else slice(None)  # skip copying w when nothing is masked
        block = binary_block(y[rows, j] == 1, score[rows, j], threshold[rows, j], w[:, rows], n_bins)
        out.update({(name, m): v for m, v in block.items()})
    if len(names) == 1:
        return {(HEADLINE, m): v for (_, m), v in out.items()}
    rows, cols = np.nonzero(has)
    micro = binary_block(y[rows, cols] == 1, score[rows, cols], threshold[rows, cols], w[:, rows])
    metrics = BINARY_METRICS + (CALIBRATION_METRICS if n_bins is not None else ())
    for m in metrics:
        out[(HEADLINE, f"{m}_macro")] = _macro(out, names, m, defined)
    out.update({(HEADLINE, f"{m}_micro"): v for m, v in micro.items()})
    return out


def defined_at_point(block: dict[Key, np.ndarray]) -> Defined:
    """{key: is the first row's value finite}: which metrics a point estimate defines."""
    return {k: bool(np.isfinite(v[0])) for k, v in block.items()}


def _is_point(w: np.ndarray) -> bool:
    """True for a single row of unit weights: the point estimate, which defines its own label set."""
    return w.shape[0] == 1 and bool((w == 1).all())


def _macro(out: dict[Key, np.ndarray], names: tuple[str, ...], metric: str, defined: Defined | None) -> np.ndarray:
    """Mean of `metric` over a fixed set of labels: those defined at the point estimate.

    A resample in which one of those labels is undefined (no positives drawn, say) gives NaN,
    so `n_valid` counts it; averaging the remaining labels would shift the interval towards
    the easy labels. Without `defined` (the point estimate itself) the set is the finite ones.
    """
    if defined is None:
        keep = [out[(n, metric)] for n in names if np.isfinite(out[(n, metric)]).all()]
    else:
        keep = [out[(n, metric)] for n in names if defined.get((n, metric), True)]
    if not keep:
        return np.full(len(out[(names[0], metric)]), np.nan)
    return np.mean(np.vstack(keep), axis=0)


# ---------------------------------------------------------------- curves

def roc_curve(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), starting at (0, 0) with threshold +inf."""
    tp, fp, thr = ranked_counts(y, score)
    with np.errstate(invalid="ignore", divide="ignore"):
        return fp[0] / fp[0, -1], tp[0] / tp[0, -1], np.r_[np.inf, thr]


def pr_curve(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(recall, precision, thresholds) by decreasing threshold, starting at recall 0, precision 1."""
    tp, fp, thr = ranked_counts(y, score)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = tp[0] / tp[0, -1]
        precision = np.r_[1.0, tp[0, 1:] / (tp[0, 1:] + fp[0, 1:])]
    return recall, precision, np.r_[np.inf, thr]


# Names that moved to the modules split out of this one; `from medrec.eval.metrics import X`
# keeps working for them (resolved lazily, so the modules may import this one).
_MOVED = {
    "choose_threshold": "thresholds", "crossfit_thresholds": "thresholds", "oof_thresholds": "thresholds",
    "threshold_selection": "thresholds",
    "bootstrap": "bootstrap", "bootstrap_draws": "bootstrap", "percentile_interval": "bootstrap",
    "OOF": "oof", "oof_statistic": "oof",
    "per_fold_metrics": "evaluate", "confusion": "evaluate", "evaluate": "evaluate",
}


def __getattr__(name: str):
    if name in _MOVED:
        return getattr(importlib.import_module(f"medrec.eval.{_MOVED[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
