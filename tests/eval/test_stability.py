"""Operating-point stability (issue 19 item 2): the threshold's bootstrap interval and rules side by side."""

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from medrec.errors import DataError
from medrec.eval.bootstrap import bootstrap_draws
from medrec.eval.report import build_report
from medrec.eval.stability import threshold_draws
from medrec.eval.thresholds import choose_threshold

from . import oof_table, write_run


@pytest.mark.parametrize("rule", ["youden", "sensitivity:0.9", "specificity:0.8"])
def test_each_resampled_threshold_is_the_rule_on_the_copied_rows(rule):
    table = oof_table("binary", ("t",), n_patients=40, images=3, folds=3, seed=2)
    y, s, units = table["label"].to_numpy(float), np.round(table["score"].to_numpy(), 2), table["patient_id"].to_numpy()
    point, draws = threshold_draws(y, s, rule, units, n_resamples=150, seed=5)
    assert point == choose_threshold(y == 1, s, rule)
    seen = []  # the same resamples, drawn again: bootstrap_draws depends only on units and seed

    def capture(w):
        seen.append(np.array(w))
        return {"x": np.zeros(len(w))}

    bootstrap_draws(capture, units, n_resamples=150, seed=5)
    for t, row in zip(draws, np.vstack(seen[1:]).astype(int)):
        yy, ss = np.repeat(y, row) == 1, np.repeat(s, row)
        try:
            expected = choose_threshold(yy, ss, rule)
        except DataError:
            assert np.isnan(t)
            continue
        # the same decisions on the resampled rows (nothing-called thresholds may differ above the top score)
        np.testing.assert_array_equal(ss >= t, ss >= expected)
        if expected <= ss.max():
            assert t == expected


def test_report_states_the_threshold_interval_and_rules_that_transfer(tmp_path):
    table = oof_table("binary", ("effusion",), n_patients=60, images=2, folds=3, seed=4)
    run = write_run(tmp_path / "run", table, "binary", ("effusion",),
                    eval_cfg={"operating_point": "sensitivity:0.9", "bootstrap": 100, "worst_cases": 0})
    build_report(run)
    doc = json.loads((run / "metrics.json").read_text())
    rows = {r["rule"]: r for r in doc["threshold_stability"]["rows"]}
    assert list(rows) == ["sensitivity:0.9", "youden", "specificity:0.9"]
    own = rows["sensitivity:0.9"]
    assert own["threshold"] == pytest.approx(doc["operating_point"]["threshold"], abs=1e-6)
    iv = own["threshold_interval"]
    assert iv["ci_low"] <= own["threshold"] <= iv["ci_high"] and iv["n_valid"] == 100
    # cross-fitted sensitivity of the target rule, by hand: each fold's threshold from the other folds
    fold, y, s = table["fold"].to_numpy(), table["label"].to_numpy(), table["score"].to_numpy()
    thr = {k: choose_threshold(y[fold != k], s[fold != k], "sensitivity:0.9") for k in range(3)}
    assert own["sensitivity"]["value"] == pytest.approx(skm.recall_score(y, s >= np.vectorize(thr.get)(fold)), abs=1e-6)
    html = (run / "report.html").read_text()
    assert "<h2>Operating point stability</h2>" in html and "sensitivity:0.9 (this run)" in html
    assert f"(bootstrap 95% interval {iv['ci_low']:.4f} to {iv['ci_high']:.4f})" in html
