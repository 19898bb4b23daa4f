"""medrec.eval.metrics against scikit-learn, and the properties of thresholds and the bootstrap."""

import time

import numpy as np
import pytest
from sklearn import metrics as skm

from medrec.config import EvalConfig
from medrec.errors import ConfigError, DataError
from medrec.eval import metrics as M


def _binary(seed: int, n: int = 300, ties: bool = False):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.35).astype(int)
    score = np.clip(0.3 * y + 0.7 * rng.random(n), 0, 1)
    return y, np.round(score, 1) if ties else score


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [False, True])
def test_binary_metrics_match_sklearn(seed, ties):
    y, s = _binary(seed, ties=ties)
    assert M.auroc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert M.auprc(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
    pred = (s >= 0.5).astype(int)
    expected = {
        "accuracy": skm.accuracy_score(y, pred),
        "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
        "f1": skm.f1_score(y, pred),
        "sensitivity": skm.recall_score(y, pred),
        "specificity": skm.recall_score(y, pred, pos_label=0),
        "ppv": skm.precision_score(y, pred),
        "npv": skm.precision_score(y, pred, pos_label=0),
    }
    for name, value in expected.items():
        assert getattr(M, name)(y, pred) == pytest.approx(value, abs=1e-12), name
    got = M.binary_metrics(y, s, 0.5)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name


def test_weights_equal_copied_rows():
    # The bootstrap's integer weights must give exactly the metric of the resampled (copied) rows.
    y, s = _binary(5, n=200, ties=True)
    rng = np.random.default_rng(1)
    w = rng.integers(0, 4, size=(3, len(y)))
    block = M.binary_block(y, s, 0.45, w.astype(float))
    for b in range(3):
        yy, ss = np.repeat(y, w[b]), np.repeat(s, w[b])
        pred = ss >= 0.45
        assert block["auroc"][b] == pytest.approx(skm.roc_auc_score(yy, ss), abs=1e-12)
        assert block["auprc"][b] == pytest.approx(skm.average_precision_score(yy, ss), abs=1e-12)
        assert block["f1"][b] == pytest.approx(skm.f1_score(yy, pred), abs=1e-12)
        assert block["npv"][b] == pytest.approx(skm.precision_score(yy, pred, pos_label=0), abs=1e-12)


def test_curves_match_sklearn():
    y, s = _binary(3, ties=True)
    fpr, tpr, thr = M.roc_curve(y, s)
    sk_fpr, sk_tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    recall, precision, _ = M.pr_curve(y, s)
    sk_p, sk_r, _ = skm.precision_recall_curve(y, s, drop_intermediate=False)
    # scikit-learn lists by increasing threshold and stops at full recall
    np.testing.assert_allclose(recall[: len(sk_r)], sk_r[::-1])
    np.testing.assert_allclose(precision[1: len(sk_p)], sk_p[::-1][1:])


def test_multiclass_matches_sklearn():
    rng = np.random.default_rng(0)
    n, k = 400, 4
    y = rng.integers(0, k, n)
    prob = rng.dirichlet(np.ones(k), n)
    prob[np.arange(n), y] += 0.3
    prob /= prob.sum(axis=1, keepdims=True)
    names = ("a", "b", "c", "d")
    out = {key: float(v[0]) for key, v in M.multiclass_block(y, prob, names).items()}
    pred = prob.argmax(axis=1)
    assert out[("", "auroc_macro")] == pytest.approx(skm.roc_auc_score(y, prob, multi_class="ovr", average="macro"))
    assert out[("", "accuracy")] == pytest.approx(skm.accuracy_score(y, pred))
    assert out[("", "balanced_accuracy")] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert out[("", "f1_macro")] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert out[("", "auprc_macro")] == pytest.approx(
        skm.average_precision_score(np.eye(k)[y], prob, average="macro"))
    recalls = skm.recall_score(y, pred, average=None)
    precisions = skm.precision_score(y, pred, average=None)
    for c, name in enumerate(names):
        assert out[(name, "sensitivity")] == pytest.approx(recalls[c])
        assert out[(name, "ppv")] == pytest.approx(precisions[c])
        assert out[(name, "auroc")] == pytest.approx(skm.roc_auc_score(y == c, prob[:, c]))


def test_multilabel_masks_nan_labels_and_averages():
    rng = np.random.default_rng(4)
    n, names = 300, ("x", "y", "z")
    y = (rng.random((n, 3)) < 0.3).astype(float)
    s = np.clip(0.3 * y + 0.7 * rng.random((n, 3)), 0, 1)
    y[rng.random((n, 3)) < 0.2] = np.nan
    thr = np.array([0.4, 0.5, 0.6])
    out = {key: float(v[0]) for key, v in M.multilabel_block(y, s, thr, names).items()}
    aucs, f1s = [], []
    for j, name in enumerate(names):
        m = ~np.isnan(y[:, j])
        aucs.append(skm.roc_auc_score(y[m, j], s[m, j]))
        f1s.append(skm.f1_score(y[m, j], s[m, j] >= thr[j]))
        assert out[(name, "auroc")] == pytest.approx(aucs[-1])
        assert out[(name, "f1")] == pytest.approx(f1s[-1])
    assert out[("", "auroc_macro")] == pytest.approx(np.mean(aucs))
    assert out[("", "f1_macro")] == pytest.approx(np.mean(f1s))
    m = ~np.isnan(y)
    flat_y, flat_s = y[m], s[m]
    flat_pred = (s >= thr)[m]
    assert out[("", "auroc_micro")] == pytest.approx(skm.roc_auc_score(flat_y, flat_s))
    assert out[("", "f1_micro")] == pytest.approx(skm.f1_score(flat_y, flat_pred))
    # scikit-learn's own micro average agrees when no label is missing
    full = {k: float(v[0]) for k, v in M.multilabel_block(np.nan_to_num(y), s, thr, names).items()}
    assert full[("", "auroc_micro")] == pytest.approx(skm.roc_auc_score(np.nan_to_num(y), s, average="micro"))


def test_choose_threshold_rules():
    y, s = _binary(7, n=500)
    fpr, tpr, thr = skm.roc_curve(y, s, drop_intermediate=False)
    t = M.choose_threshold(y, s, "youden")
    pred = s >= t
    j = skm.recall_score(y, pred) + skm.recall_score(y, pred, pos_label=0) - 1
    assert j == pytest.approx(np.max(tpr - fpr))

    distinct = np.unique(s)
    t = M.choose_threshold(y, s, "sensitivity:0.95")
    assert skm.recall_score(y, s >= t) >= 0.95
    higher = distinct[distinct > t]
    assert skm.recall_score(y, s >= higher.min()) < 0.95  # the highest threshold that reaches 0.95

    t = M.choose_threshold(y, s, "specificity:0.9")
    assert skm.recall_score(y, s >= t, pos_label=0) >= 0.9
    lower = distinct[distinct < t]
    assert skm.recall_score(y, s >= lower.max(), pos_label=0) < 0.9  # the lowest such threshold

    assert M.choose_threshold(y, s, "fixed:0.37") == 0.37
    with pytest.raises(ConfigError, match="valid: youden"):
        M.choose_threshold(y, s, "youdn")
    with pytest.raises(DataError, match="positive and negative"):
        M.choose_threshold(np.zeros(10), s[:10], "youden")


def test_crossfit_threshold_ignores_its_own_fold():
    rng = np.random.default_rng(0)
    n = 400
    y = (rng.random(n) < 0.4).astype(float)
    s = np.clip(0.3 * y + 0.7 * rng.random(n), 0, 1)
    fold = rng.integers(0, 4, n)
    thr, records = M.crossfit_thresholds(y, s, fold, "youden")
    others_moved = []
    for k in range(4):
        other = fold != k
        assert thr[fold == k][0] == M.choose_threshold(y[other], s[other], "youden")
        assert {r["chosen_on"] for r in records} == {"other folds"}

        perturbed = s.copy()
        perturbed[fold == k] = rng.random((fold == k).sum())  # scramble fold k's scores
        thr2, _ = M.crossfit_thresholds(y, perturbed, fold, "youden")
        assert np.all(thr2[fold == k] == thr[fold == k])
        others_moved.append(not np.array_equal(thr2[fold != k], thr[fold != k]))
    assert any(others_moved)  # the other folds' thresholds did see fold k, so the perturbation bites


def test_single_fold_is_chosen_on_itself_and_flagged():
    y, s = _binary(2)
    fold = np.zeros(len(y), dtype=int)
    thr, records = M.crossfit_thresholds(y, s, fold, "youden")
    assert np.all(thr == M.choose_threshold(y, s, "youden"))
    assert records[0]["chosen_on"] == "this fold (optimistic)"
    oof = M.OOF("binary", ("t",), y[:, None].astype(float), s[:, None], fold, fold, np.arange(len(y)))
    assert M.threshold_selection(oof, "youden") == "same data (optimistic)"
    assert M.threshold_selection(oof, "fixed:0.5") == "fixed"


def _clustered(n_patients=80, images=8, seed=0):
    """Each patient's images share the label and most of the score (a patient effect)."""
    rng = np.random.default_rng(seed)
    label = rng.random(n_patients) < 0.5
    effect = rng.normal(0, 1, n_patients) + 0.8 * label
    pid = np.repeat(np.arange(n_patients), images)
    y = label[pid].astype(float)
    s = 1 / (1 + np.exp(-(effect[pid] + rng.normal(0, 0.1, len(pid)))))
    return y, s, pid


def test_patient_bootstrap_is_wider_than_image_bootstrap():
    y, s, pid = _clustered()

    def stat(w):
        return {("", "auroc"): M.weighted_auroc(y == 1, s, w)}

    by_patient = M.bootstrap(stat, pid, n_resamples=400, seed=0)[("", "auroc")]
    by_image = M.bootstrap(stat, np.arange(len(y)), n_resamples=400, seed=0)[("", "auroc")]
    assert by_patient["value"] == by_image["value"] == pytest.approx(skm.roc_auc_score(y, s))
    width_p = by_patient["ci_high"] - by_patient["ci_low"]
    width_i = by_image["ci_high"] - by_image["ci_low"]
    # 8 nearly identical images per patient: the effective sample is the patients, ~sqrt(8) wider
    assert width_p > 1.8 * width_i


def test_bootstrap_moves_a_patients_rows_together_and_is_seeded():
    y, s, pid = _clustered(n_patients=30, images=4)
    seen = []

    def stat(w):
        seen.append(w)
        return {("", "auroc"): M.weighted_auroc(y == 1, s, w)}

    a = M.bootstrap_draws(stat, pid, n_resamples=50, seed=11)[1][("", "auroc")]
    w = np.vstack(seen[1:])  # seen[0] is the point estimate (all ones)
    for p in range(30):
        cols = w[:, pid == p]
        assert np.all(cols == cols[:, :1])
    assert np.all(w[:, ::4].sum(axis=1) == 30)  # each resample draws as many patients as there are
    b = M.bootstrap_draws(stat, pid, n_resamples=50, seed=11)[1][("", "auroc")]
    c = M.bootstrap_draws(stat, pid, n_resamples=50, seed=12)[1][("", "auroc")]
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_evaluate_pooled_metrics_use_fold_thresholds():
    rng = np.random.default_rng(9)
    n = 600
    pid = rng.integers(0, 150, n)
    fold = pid % 3
    y = (rng.random(n) < 0.3).astype(float)
    s = np.clip(0.3 * y + 0.7 * rng.random(n), 0, 1)
    oof = M.OOF("binary", ("t",), y[:, None], s[:, None], fold, np.zeros(n, dtype=int), pid)
    ev = M.evaluate(oof, EvalConfig(bootstrap=100, operating_point="sensitivity:0.9"))
    thr = np.array([M.choose_threshold(y[fold != f], s[fold != f], "sensitivity:0.9") for f in fold])
    pred = s >= thr
    got = ev["metrics"]
    assert got[("", "sensitivity")]["value"] == pytest.approx(skm.recall_score(y, pred))
    assert got[("", "specificity")]["value"] == pytest.approx(skm.recall_score(y, pred, pos_label=0))
    assert got[("", "auroc")]["value"] == pytest.approx(skm.roc_auc_score(y, s))
    assert got[("", "auroc")]["ci_low"] < got[("", "auroc")]["value"] < got[("", "auroc")]["ci_high"]
    assert ev["stored_threshold"]["t"] == M.choose_threshold(y, s, "sensitivity:0.9")
    fold1 = next(f for f in ev["per_fold"] if f["fold"] == 1)
    m = fold == 1
    assert fold1["metrics"]["f1"] == pytest.approx(skm.f1_score(y[m], pred[m]))


def test_bootstrap_takes_seconds_not_minutes():
    rng = np.random.default_rng(0)
    n = 5000
    pid = rng.integers(0, 1200, n)
    y = (rng.random(n) < 0.3).astype(float)
    s = rng.random(n)
    oof = M.OOF("binary", ("t",), y[:, None], s[:, None], pid % 5, np.zeros(n, dtype=int), pid)
    start = time.perf_counter()
    M.evaluate(oof, EvalConfig(bootstrap=1000))
    assert time.perf_counter() - start < 30  # ~1 s on one free core; generous for a shared machine


def _captured(stat):
    """The statistic, recording every matrix of row weights it is called with."""
    seen = []

    def wrapped(w):
        seen.append(np.array(w))
        return stat(w)

    return wrapped, seen


def test_macro_over_resamples_keeps_the_label_set_of_the_point_estimate():
    # A rare label (3 positive patients of 60) is undefined in some resamples. The macro AUROC of such a
    # resample is undefined too; it used to be the mean of the remaining labels, shifting the interval.
    rng = np.random.default_rng(0)
    n = 60
    y = np.c_[(rng.random(n) < 0.5), np.isin(np.arange(n), [3, 20, 41])].astype(float)
    s = np.clip(0.3 * y + 0.7 * rng.random((n, 2)), 0, 1)
    oof = M.OOF("multilabel", ("common", "rare"), y, s, np.arange(n) % 3, np.zeros(n, dtype=int), np.arange(n))
    stat, seen = _captured(M.oof_statistic(oof, np.full(y.shape, 0.5), None))
    ci = M.bootstrap(stat, oof.unit, n_resamples=300, seed=1)
    w = np.vstack(seen[1:])  # seen[0] is the point estimate (weights of one)
    expected = []
    for row in w.astype(int):
        aucs = []
        for j in range(2):
            yy, ss = np.repeat(y[:, j], row), np.repeat(s[:, j], row)
            aucs.append(skm.roc_auc_score(yy, ss) if 0 < yy.sum() < len(yy) else np.nan)
        expected.append(np.mean(aucs))  # NaN whenever the rare label is undefined
    expected = np.array(expected)
    assert 0 < np.isnan(expected).sum() < 300  # the data does exercise the rule
    low, high = np.percentile(expected[~np.isnan(expected)], [2.5, 97.5])
    macro = ci[("", "auroc_macro")]
    assert macro["n_valid"] == int((~np.isnan(expected)).sum())
    assert macro["ci_low"] == pytest.approx(low, abs=1e-12) and macro["ci_high"] == pytest.approx(high, abs=1e-12)


def test_multiclass_macro_and_balanced_accuracy_over_a_fixed_class_set():
    rng = np.random.default_rng(3)
    n = 50
    y = np.where(np.isin(np.arange(n), [5, 30]), 2, rng.integers(0, 2, n))  # class 2: two images only
    prob = rng.dirichlet(np.ones(3), n)
    prob[np.arange(n), y] += 0.5
    prob /= prob.sum(axis=1, keepdims=True)
    w = rng.multinomial(n, np.ones(n) / n, size=200).astype(float)  # bootstrap counts of images
    out = M.multiclass_block(y, prob, ("a", "b", "c"), w)
    pred = prob.argmax(axis=1)
    for b in range(len(w)):
        yy, pp, probs = np.repeat(y, w[b].astype(int)), np.repeat(pred, w[b].astype(int)), np.repeat(prob, w[b].astype(int), axis=0)
        if len(np.unique(yy)) < 3:  # class c absent from this resample: undefined, not the mean of a and b
            assert np.isnan(out[("", "balanced_accuracy")][b]) and np.isnan(out[("", "auroc_macro")][b])
            continue
        assert out[("", "balanced_accuracy")][b] == pytest.approx(skm.balanced_accuracy_score(yy, pp), abs=1e-12)
        assert out[("", "auroc_macro")][b] == pytest.approx(
            skm.roc_auc_score(yy, probs, multi_class="ovr", average="macro"), abs=1e-12)
    assert np.isnan(out[("", "balanced_accuracy")]).any()
