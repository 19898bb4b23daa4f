"""medrec.eval.calibration against scikit-learn and against known miscalibration."""

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, log_loss

from medrec.eval import calibration as cal


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _overconfident(n=20000, factor=3.0, seed=0):
    """Labels drawn from sigmoid(z), predictions sigmoid(factor * z): temperature `factor` fixes them."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, n)
    y = (rng.random(n) < _sigmoid(z)).astype(float)
    return y, _sigmoid(factor * z)


@pytest.mark.parametrize("n_bins", [5, 10, 15])
def test_reliability_curve_matches_sklearn(n_bins):
    rng = np.random.default_rng(n_bins)
    p = np.r_[rng.random(500), np.linspace(0, 1, n_bins + 1)]  # include values on the bin edges
    y = (rng.random(len(p)) < p).astype(float)
    curve = cal.reliability_curve(y, p, n_bins)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=n_bins, strategy="uniform")
    nonempty = np.array(curve["count"]) > 0
    np.testing.assert_allclose(np.array(curve["observed"])[nonempty], prob_true)
    np.testing.assert_allclose(np.array(curve["mean_predicted"])[nonempty], prob_pred)
    assert sum(curve["count"]) == len(p)


def test_ece_is_the_count_weighted_gap_of_sklearns_curve():
    rng = np.random.default_rng(1)
    p = rng.random(2000)
    y = (rng.random(2000) < p ** 2).astype(float)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=10)
    # counts per non-empty bin with right-closed bins, computed independently of medrec
    counts = np.bincount(np.digitize(p, np.linspace(0, 1, 11)[1:-1], right=True), minlength=10)
    counts = counts[counts > 0]
    expected = np.sum(counts / len(p) * np.abs(prob_true - prob_pred))
    assert cal.ece(y, p, 10) == pytest.approx(expected)
    assert cal.ece(np.r_[0, 1], np.r_[0.0, 1.0]) == 0.0


def test_brier_matches_sklearn_binary_and_multiclass():
    rng = np.random.default_rng(2)
    p = rng.random(300)
    y = (rng.random(300) < p).astype(float)
    assert cal.brier(y, p) == pytest.approx(brier_score_loss(y, p))
    prob = rng.dirichlet(np.ones(4), 300)
    k = rng.integers(0, 4, 300)
    assert cal.brier(np.eye(4)[k], prob) == pytest.approx(brier_score_loss(k, prob, labels=[0, 1, 2, 3]))


def test_weighted_ece_equals_ece_of_copied_rows():
    rng = np.random.default_rng(3)
    p = rng.random(200)
    y = (rng.random(200) < p).astype(float)
    w = rng.integers(0, 3, (2, 200)).astype(float)
    got = cal.weighted_ece(y, p, w, 10)
    for b in range(2):
        reps = w[b].astype(int)
        assert got[b] == pytest.approx(cal.ece(np.repeat(y, reps), np.repeat(p, reps), 10))


def test_temperature_recovers_known_overconfidence_binary():
    y, p = _overconfident(factor=3.0)
    t = cal.fit_temperature(y, p, "binary")
    assert t == pytest.approx(3.0, rel=0.1)
    fixed = cal.apply_temperature(p, t, "binary")
    assert cal.ece(y, fixed) < cal.ece(y, p) / 3
    assert log_loss(y, fixed) < log_loss(y, p)


def test_temperature_recovers_known_overconfidence_multiclass():
    rng = np.random.default_rng(5)
    n, k = 20000, 3
    logits = rng.normal(0, 1.2, (n, k))
    true = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(k, p=row) for row in true])
    sharp = np.exp(2.5 * logits)
    prob = sharp / sharp.sum(axis=1, keepdims=True)
    t = cal.fit_temperature(y, prob, "multiclass")
    assert t == pytest.approx(2.5, rel=0.1)
    fixed = cal.apply_temperature(prob, t, "multiclass")
    np.testing.assert_allclose(fixed.sum(axis=1), 1.0)
    assert np.array_equal(fixed.argmax(axis=1), prob.argmax(axis=1))  # scaling never changes decisions
    assert log_loss(y, fixed) < log_loss(y, prob)


def test_crossfit_temperature_ignores_its_own_fold():
    y, p = _overconfident(n=3000, factor=2.0, seed=1)
    rng = np.random.default_rng(0)
    fold = rng.integers(0, 3, len(y))
    repeat = np.zeros(len(y), dtype=int)
    scaled, records = cal.crossfit_temperature(y, p, fold, repeat, "binary")
    for rec in records:
        k = rec["fold"]
        other = fold != k
        assert rec["temperature"] == pytest.approx(cal.fit_temperature(y[other], p[other], "binary"))
        np.testing.assert_allclose(scaled[fold == k], cal.apply_temperature(p[fold == k], rec["temperature"], "binary"))
        perturbed = p.copy()
        perturbed[fold == k] = rng.random((fold == k).sum())
        _, again = cal.crossfit_temperature(y, perturbed, fold, repeat, "binary")
        assert next(r for r in again if r["fold"] == k)["temperature"] == rec["temperature"]
