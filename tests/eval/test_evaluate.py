"""medrec.eval.evaluate through build_report: folds without a threshold, and in-sample temperature scaling."""

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from medrec.eval.report import build_report

from . import oof_table, write_run


@pytest.fixture(scope="module")
def rare_run(tmp_path_factory):
    """Label 'rare' has positives in fold 0 only: fold 0's threshold is chosen on folds 1-2, which
    have none, so it is undefined; folds 1 and 2 get thresholds chosen with fold 0's positives."""
    table = oof_table("multilabel", ("common", "rare"), n_patients=60, images=1, folds=3, seed=5)
    rng = np.random.default_rng(0)
    in0 = (table["fold"] == 0).to_numpy()
    table["label_rare"] = np.where(in0 & (rng.random(len(table)) < 0.3), 1.0, 0.0)
    table["score_rare"] = np.clip(0.4 * table["label_rare"] + 0.6 * rng.random(len(table)), 0, 1)
    run = write_run(tmp_path_factory.mktemp("rare") / "run", table, "multilabel", ("common", "rare"),
                    eval_cfg={"bootstrap": 50, "worst_cases": 100})
    build_report(run)
    return run, table, json.loads((run / "metrics.json").read_text())


def test_a_fold_without_threshold_is_excluded_and_counted_never_called_negative(rare_run):
    run, table, doc = rare_run
    op = doc["operating_point"]
    thr = {r["fold"]: r["threshold"] for r in op["fold_thresholds"] if r["label"] == "rare"}
    assert thr[0] is None and thr[1] is not None and thr[2] is not None
    in0 = (table["fold"] == 0).to_numpy()
    assert op["undefined"]["rare"] == {"folds": [[0, 0]], "n_rows": int(in0.sum())}
    # Independent truth: the confusion matrix and specificity of folds 1 and 2 at their own thresholds.
    rest = ~in0
    y = table.loc[rest, "label_rare"].to_numpy()
    pred = table.loc[rest, "score_rare"].to_numpy() >= table.loc[rest, "fold"].map(thr).to_numpy()
    assert y.sum() == 0  # every positive sits in the excluded fold
    (tn, fp), (fn, tp) = doc["confusion_matrix"]["rare"]
    assert [tn, fp, fn, tp] == skm.confusion_matrix(y, pred, labels=[0, 1]).ravel().tolist()  # old: fn = fold 0's positives
    spec = doc["per_label"]["rare"]["specificity"]["value"]
    assert spec == pytest.approx(skm.recall_score(y, pred, pos_label=0), abs=1e-6)  # old: undefined for the pool
    assert doc["per_label"]["rare"]["sensitivity"]["value"] is None  # no positive with a threshold
    assert doc["per_label"]["rare"]["auroc"]["value"] == pytest.approx(
        skm.roc_auc_score(table["label_rare"], table["score_rare"]), abs=1e-6)  # rank metrics keep every row
    per_fold0 = next(f for f in doc["per_fold"] if f["fold"] == 0)
    assert per_fold0["metrics"]["sensitivity_macro"] is not None  # 'common' still has one in fold 0


def test_worst_cases_leave_out_rows_without_threshold_and_say_so(rare_run):
    run, table, doc = rare_run
    html, md = (run / "report.html").read_text(), (run / "report.md").read_text()
    positives_of_fold0 = table.loc[(table["fold"] == 0) & (table["label_rare"] == 1), "image_id"]
    fn_section = html.split("Worst false negatives")[1]
    assert not any(f">{i}</div><div>rare:" in fn_section for i in positives_of_fold0)  # old: shown as misses
    n0 = int((table["fold"] == 0).sum())
    n_pos = len(positives_of_fold0)
    assert f"{n_pos} labelled row(s) in folds without a threshold are not shown here" in html
    assert f"{n0 - n_pos} labelled row(s) in folds without a threshold are not shown here" in html
    assert "no threshold could be chosen for 1 fold(s)" in md and "undefined" in md


def test_temperature_scaling_on_one_validation_fold_is_labelled_in_sample(tmp_path):
    table = oof_table("multilabel", ("a", "b"), n_patients=40, images=2, folds=1, seed=2)
    run = write_run(tmp_path / "run", table, "multilabel", ("a", "b"),
                    eval_cfg={"bootstrap": 20, "temperature_scaling": True, "worst_cases": 0})
    doc = build_report(run)
    ts = doc["calibration"]["temperature_scaling"]
    assert ts["in_sample"] is True and "cross-fitted" not in ts["method"]
    html, md = (run / "report.html").read_text(), (run / "report.md").read_text()
    for text in (html, md):
        assert "Temperature scaling (cross-fitted)" not in text and "cross-fitted like the thresholds" not in text
        assert "in-sample" in text
    # The † optimism mark on the per-label table's threshold metrics too, not only the headline table.
    per_label = html.split("<h2>Per label</h2>")[1].split("</table>")[0]
    assert "<th>sensitivity †</th>" in per_label and "<th>auroc</th>" in per_label
    assert doc["per_label"]["a"]["sensitivity"]["note"] == "threshold chosen on this data (optimistic)"


def test_a_label_without_positives_gives_a_report_with_an_undefined_operating_point(tmp_path):
    table = oof_table("multilabel", ("common", "never"), n_patients=30, images=2, folds=3, seed=1)
    table["label_never"] = 0.0
    run = write_run(tmp_path / "run", table, "multilabel", ("common", "never"),
                    eval_cfg={"bootstrap": 30, "temperature_scaling": True}, info={"threshold": {"common": 0.5,
                                                                                                  "never": None}})
    doc = build_report(run)
    assert doc["operating_point"]["threshold"]["never"] is None
    assert doc["operating_point"]["undefined"]["never"]["n_rows"] == len(table)
    assert doc["per_label"]["never"]["auroc"]["value"] is None
    # macro AUROC is over the labels defined on all the data: here 'common' alone
    has = table["label_common"].notna()
    assert doc["metrics"]["auroc_macro"]["value"] == pytest.approx(
        skm.roc_auc_score(table.loc[has, "label_common"], table.loc[has, "score_common"]), abs=1e-6)
    assert "never: —" in (run / "report.html").read_text()
