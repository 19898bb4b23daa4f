"""Metrics on out-of-fold predictions, operating points and patient-level bootstrap CIs.

One weighted, vectorised code path computes every metric: a (b, n) matrix of row weights gives
b estimates at once. Weights of one give the plain metric (the tests check it against
scikit-learn); the integer weights of a bootstrap resample give the metric on that resample,
exactly as if the resampled rows had been copied. Resampling draws patients with replacement
and gives each of a patient's rows the patient's count, so a patient's images move together.

Operating points are never chosen on the rows they are reported on: in cross-validation, fold
k's threshold is chosen on the other folds' out-of-fold predictions ("cross-fitting") and
applied to fold k; pooled threshold metrics use those per-fold thresholds. The threshold stored
for future data is chosen on all out-of-fold predictions. With a single (fixed validation)
fold there is nothing to cross-fit: the threshold is chosen on that fold, and its metrics are
flagged as optimistic.

Conventions: scores are probabilities (sigmoid for binary/multilabel, softmax for
multiclass); a case is called positive when score >= threshold; undefined ratios (0/0) are NaN
and averages over labels skip them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from medrec.config import EvalConfig, parse_operating_point
from medrec.errors import DataError
from medrec.eval import calibration as cal

log = logging.getLogger(__name__)

BINARY_METRICS = (
    "auroc", "auprc", "accuracy", "balanced_accuracy", "f1", "sensitivity", "specificity", "ppv", "npv",
)
RANK_METRICS = ("auroc", "auprc")
THRESHOLD_METRICS = BINARY_METRICS[2:]
CALIBRATION_METRICS = ("brier", "ece")
HEADLINE = ""  # the label slot of run-level metrics in (label, metric) keys

Key = tuple[str, str]  # (label name or HEADLINE, metric name)
Statistic = Callable[[np.ndarray], dict[Key, np.ndarray]]


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
        threshold: one value, or one per row (the row's fold threshold). NaN thresholds make the
            threshold metrics NaN rather than silently calling everything negative.
        n_bins: also compute Brier score and ECE with this many bins.
    """
    w = _weights(w, len(score))
    out = rank_metrics(y, score, w)
    thr = np.broadcast_to(np.asarray(threshold, dtype=float), np.shape(score))
    if np.isnan(thr).any():
        out.update({m: np.full(w.shape[0], np.nan) for m in THRESHOLD_METRICS})
    else:
        out.update(rates(*confusion_counts(y, score >= thr, w)))
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
    n_bins: int | None = None,
) -> dict[Key, np.ndarray]:
    """Multiclass metrics per row of weights: one-vs-rest per class, macro averages, accuracy.

    Decisions are the arg-max class. Macro averages skip classes whose value is undefined in
    the (re)sample, which matches scikit-learn's choice of averaging over the classes present.
    """
    w = _weights(w, len(y))
    y = np.asarray(y, dtype=int)
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
        out[(HEADLINE, metric)] = _nanmean([out[(n, source)] for n in names])
    if n_bins is not None:
        onehot = np.eye(prob.shape[1])[y]
        correct, conf = cal.top_label(y, prob)
        out[(HEADLINE, "brier")] = cal.weighted_brier(onehot, prob, w)
        out[(HEADLINE, "ece")] = cal.weighted_ece(correct, conf, w, n_bins)
    return out


def multilabel_block(
    y: np.ndarray, score: np.ndarray, threshold: np.ndarray, names: tuple[str, ...],
    w: np.ndarray | None = None, n_bins: int | None = None,
) -> dict[Key, np.ndarray]:
    """Per-label binary metrics (NaN labels masked out), their macro and micro averages.

    With one label (a binary task) the label's metrics are the run-level metrics themselves.
    Micro averages pool every (image, label) pair that has a label.
    """
    w = _weights(w, len(y))
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
        out[(HEADLINE, f"{m}_macro")] = _nanmean([out[(n, m)] for n in names])
    out.update({(HEADLINE, f"{m}_micro"): v for m, v in micro.items()})
    return out


def _nanmean(arrays: list[np.ndarray]) -> np.ndarray:
    stack = np.vstack(arrays)
    n = np.isfinite(stack).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.nansum(stack, axis=0) / n, np.nan)


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


# ---------------------------------------------------------------- operating points

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
    repeat = np.zeros(len(y), dtype=int) if repeat is None else np.asarray(repeat)
    out = np.full(len(y), np.nan)
    records = []
    for r in np.unique(repeat):
        in_r = repeat == r
        folds = np.unique(fold[in_r])
        for k in folds:
            target = in_r & (fold == k)
            source = (in_r & (fold != k) if len(folds) > 1 else target) & ~np.isnan(y)
            try:
                t = choose_threshold(y[source] == 1, score[source], rule)
            except DataError as exc:
                log.warning("repeat %s fold %s: no threshold (%s)", r, k, exc)
                t = float("nan")
            out[target] = t
            chosen_on = "other folds" if len(folds) > 1 else "this fold (optimistic)"
            if parse_operating_point(rule)[0] == "fixed":
                chosen_on = "fixed"
            records.append({"repeat": int(r), "fold": int(k), "threshold": t, "chosen_on": chosen_on})
    return out, records


# ---------------------------------------------------------------- bootstrap

def bootstrap_draws(
    stat: Statistic, units: np.ndarray, *, n_resamples: int, seed: int, chunk: int | None = None
) -> tuple[dict[Key, float], dict[Key, np.ndarray]]:
    """Point estimates and `n_resamples` bootstrap replicates of `stat`, resampling `units`.

    `stat` maps (b, n) row weights to {key: (b,) values}. Each replicate draws as many units as
    there are, with replacement, and gives every row its unit's count, so rows of one unit
    (one patient's images, across repeats) move together. The draws depend only on `seed` and
    the data, never on the machine, so metrics.json is reproducible.
    """
    codes = np.unique(np.asarray(units), return_inverse=True)[1].ravel()
    n = len(codes)
    n_units = int(codes.max()) + 1 if n else 0
    point = {k: float(v[0]) for k, v in stat(np.ones((1, n))).items()}
    if n_resamples == 0 or n_units == 0:
        return point, {k: np.empty(0) for k in point}
    rng = np.random.default_rng(seed)
    # Chunks of ~500k weights (2 MB in float32) stay in cache; measured fastest for 1e3-1e4 rows.
    chunk = chunk or max(1, min(n_resamples, 500_000 // max(n, 1)))
    parts: dict[Key, list[np.ndarray]] = {k: [] for k in point}
    for start in range(0, n_resamples, chunk):
        c = min(chunk, n_resamples - start)
        draws = rng.integers(0, n_units, size=(c, n_units)) + n_units * np.arange(c)[:, None]
        counts = np.bincount(draws.ravel(), minlength=c * n_units).reshape(c, n_units)
        # float32 halves the memory traffic; counts and their sums stay exact integers below 2**24.
        for k, v in stat(counts[:, codes].astype(np.float32)).items():
            parts[k].append(v)
    return point, {k: np.concatenate(v) for k, v in parts.items()}


def percentile_interval(draws: np.ndarray, level: float = 0.95) -> tuple[float, float, int]:
    """(low, high, number of finite replicates) of the percentile bootstrap interval."""
    ok = draws[np.isfinite(draws)]
    if len(ok) == 0:
        return float("nan"), float("nan"), 0
    alpha = 100 * (1 - level) / 2
    low, high = np.percentile(ok, [alpha, 100 - alpha])
    return float(low), float(high), int(len(ok))


def bootstrap(
    stat: Statistic, units: np.ndarray, *, n_resamples: int, seed: int, level: float = 0.95
) -> dict[Key, dict[str, float]]:
    """{key: {"value", "ci_low", "ci_high", "n_valid"}} with percentile bootstrap intervals."""
    point, draws = bootstrap_draws(stat, units, n_resamples=n_resamples, seed=seed)
    out = {}
    for k, value in point.items():
        low, high, n_valid = percentile_interval(draws[k], level)
        out[k] = {"value": value, "ci_low": low, "ci_high": high, "n_valid": n_valid}
    return out


# ---------------------------------------------------------------- out-of-fold evaluation

@dataclass(frozen=True)
class OOF:
    """Out-of-fold predictions as arrays.

    y/score: binary and multilabel (n, L) float (labels may be NaN); multiclass y (n,) int and
    score (n, K). `unit` is the bootstrap unit of each row (the patient id, or the image when
    the data has no patient ids).
    """

    task: str
    names: tuple[str, ...]
    y: np.ndarray
    score: np.ndarray
    fold: np.ndarray
    repeat: np.ndarray
    unit: np.ndarray

    def block(self, rows: np.ndarray, thresholds: np.ndarray | None, w: np.ndarray,
              n_bins: int | None) -> dict[Key, np.ndarray]:
        """All metrics of the rows `rows` for each row of weights `w` (b, len(rows))."""
        if self.task == "multiclass":
            return multiclass_block(self.y[rows], self.score[rows], self.names, w, n_bins)
        return multilabel_block(self.y[rows], self.score[rows], thresholds[rows], self.names, w, n_bins)


def oof_statistic(oof: OOF, thresholds: np.ndarray | None, n_bins: int | None) -> Statistic:
    """The run's metrics as a function of row weights: per repeat, then averaged over repeats."""
    groups = [np.flatnonzero(oof.repeat == r) for r in np.unique(oof.repeat)]

    def stat(w: np.ndarray) -> dict[Key, np.ndarray]:
        parts = [oof.block(rows, thresholds, w[:, rows], n_bins) for rows in groups]
        return {k: np.mean([p[k] for p in parts], axis=0) for k in parts[0]}

    return stat


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
    binary/multilabel: {label: [[tn, fp], [fn, tp]]}.
    """
    repeats = np.unique(oof.repeat)
    if oof.task == "multiclass":
        k = len(oof.names)
        m = np.zeros((k, k))
        np.add.at(m, (oof.y.astype(int), oof.score.argmax(axis=1)), 1.0)
        return {"matrix": (m / len(repeats)).tolist()}
    out = {}
    for j, name in enumerate(oof.names):
        has = ~np.isnan(oof.y[:, j])
        y = oof.y[has, j] == 1
        pred = oof.score[has, j] >= thresholds[has, j]
        tp, fp, tn, fn = (float(c[0]) / len(repeats) for c in confusion_counts(y, pred))
        out[name] = [[tn, fp], [fn, tp]]
    return out


def evaluate(oof: OOF, cfg: EvalConfig) -> dict:
    """Everything the report states about a run's out-of-fold predictions.

    Args:
        cfg: the run's `EvalConfig` (operating_point, bootstrap, bootstrap_seed,
            calibration_bins, temperature_scaling).

    Returns:
        {"metrics": {(label, metric): {"value", "ci_low", "ci_high", "n_valid"}},
         "thresholds": per (row, label) or None, "fold_thresholds", "stored_threshold",
         "selection", "per_fold", "confusion", "calibration"} (floats unrounded).
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
        "per_fold": per_fold_metrics(oof, thresholds, n_bins),
        "confusion": confusion(oof, thresholds),
        "calibration": cal.calibration_summary(
            oof.task, oof.names, oof.y, oof.score, oof.fold, oof.repeat,
            n_bins=cfg.calibration_bins, temperature_scaling=cfg.temperature_scaling,
        ),
    }


def threshold_selection(oof: OOF, rule: str) -> str:
    """How the reported operating points were chosen: "argmax" (multiclass), "fixed",
    "cross-fitted", or "same data (optimistic)" when a repeat has a single fold."""
    if oof.task == "multiclass":
        return "argmax"
    if parse_operating_point(rule)[0] == "fixed":
        return "fixed"
    single = any(len(np.unique(oof.fold[oof.repeat == r])) == 1 for r in np.unique(oof.repeat))
    return "same data (optimistic)" if single else "cross-fitted"
