"""medrec.eval.thresholds: exact Youden ties, and operating points that can be undefined without a crash."""

from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from medrec.config import ExperimentConfig
from medrec.eval.thresholds import choose_threshold, run_operating_point


def _youden_exact(y: np.ndarray, s: np.ndarray) -> float:
    """Reference: Youden's J in exact rationals at every observed score; the highest threshold
    among the maxima (the documented tie rule). Calling nothing positive (J = 0) ranks above all."""
    pos, neg = int(y.sum()), int((~y).sum())
    best, best_t = Fraction(0), np.inf
    for t in sorted(set(s.tolist()), reverse=True):
        called = s >= t
        j = Fraction(int((called & y).sum()), pos) - Fraction(int((called & ~y).sum()), neg)
        if j > best:
            best, best_t = j, t
    return best_t


def test_youden_ties_follow_the_highest_threshold_rule_exactly():
    # Scores on a 1/12 grid give many thresholds with the same J in exact arithmetic; tpr - fpr in
    # floating point made the lower of two tied thresholds win by one ulp in 3 of the first 270 draws.
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(300):
        n = int(rng.integers(6, 40))
        y = rng.random(n) < rng.uniform(0.2, 0.8)
        if y.all() or not y.any():
            continue
        s = rng.integers(0, 12, n) / 12
        expected = _youden_exact(y, s)
        got = choose_threshold(y, s, "youden")
        if np.isinf(expected):
            assert got > s.max()
        else:
            assert got == expected
        checked += 1
    assert checked > 250


def test_sensitivity_rule_reaches_the_target_at_exact_fractions():
    # 20 positives: sensitivity 0.95 is exactly 19 of them (compared in counts: tp >= 0.95 * 20).
    y = np.r_[np.ones(20, dtype=bool), np.zeros(20, dtype=bool)]
    s = np.r_[np.linspace(0.3, 0.99, 20), np.linspace(0.0, 0.6, 20)]
    t = choose_threshold(y, s, "sensitivity:0.95")
    assert skm.recall_score(y, s >= t) == 0.95
    assert t == np.sort(s[y])[1]  # the highest threshold that keeps 19 of the 20 positives


def _multilabel_table(rng, n=120):
    y_a = (rng.random(n) < 0.4).astype(float)
    return pd.DataFrame({
        "path": [f"/d/{i}.png" for i in range(n)], "fold": np.arange(n) % 3, "repeat": 0,
        "label_a": y_a, "score_a": np.clip(0.4 * y_a + 0.6 * rng.random(n), 0, 1),
        "label_never": 0.0, "score_never": rng.random(n),  # a label with no positives at the end of a run
    })


def test_label_without_positives_gives_an_undefined_operating_point_not_an_error():
    table = _multilabel_table(np.random.default_rng(1))
    out = run_operating_point(table, "multilabel", "youden")["threshold"]
    assert out["never"] is None
    fpr, tpr, thr = skm.roc_curve(table["label_a"], table["score_a"], drop_intermediate=False)
    assert out["a"] == pytest.approx(thr[int(np.argmax(tpr - fpr))])
    binary = table.rename(columns={"label_never": "label", "score_never": "score"})
    assert run_operating_point(binary, "binary", "sensitivity:0.9") == {"threshold": None}
    assert run_operating_point(table, "multiclass", "youden") == {"threshold": None}


def test_training_finishes_with_an_undefined_operating_point():
    # The caller at the end of a run (all folds trained) used to raise DataError here.
    from medrec.train import runinfo

    cfg = ExperimentConfig.model_validate({"data": {"task": "multilabel"}})
    table = _multilabel_table(np.random.default_rng(2))
    assert runinfo.operating_point(table, cfg)["threshold"]["never"] is None
