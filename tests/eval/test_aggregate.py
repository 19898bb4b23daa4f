"""Patient- and study-level results (issue 15 item 12) against pandas + scikit-learn by hand."""

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from medrec.errors import DataError
from medrec.eval.aggregate import aggregate_oof
from medrec.eval.oof import OOF
from medrec.eval.report import build_report
from medrec.eval.thresholds import choose_threshold

from . import oof_table, write_run


def _table():
    table = oof_table("binary", ("effusion",), n_patients=50, images=4, folds=3, repeats=2, seed=3, signal=0.12)
    table["study_id"] = table["patient_id"] + np.where(table["image_id"].str[-1].astype(int) < 2, "-s1", "-s2")
    return table


@pytest.fixture(scope="module")
def aggregate_run(tmp_path_factory):
    table = _table()
    run = write_run(tmp_path_factory.mktemp("agg") / "run", table, "binary", ("effusion",),
                    eval_cfg={"aggregate": ["patient", "study"], "bootstrap": 100, "worst_cases": 0})
    build_report(run)
    return run, table, json.loads((run / "metrics.json").read_text())


@pytest.mark.parametrize("how", ["max", "mean"])
def test_patient_level_metrics_are_those_of_the_combined_scores(aggregate_run, how):
    run, table, doc = aggregate_run
    res = doc["aggregate"]["levels"]["patient"][how]
    aucs, sens = [], []
    for r, part in table.groupby("repeat"):
        per = part.groupby("patient_id").agg(label=("label", "max"), score=("score", how), fold=("fold", "first"))
        aucs.append(skm.roc_auc_score(per["label"], per["score"]))
        # the threshold of each fold is re-chosen on the other folds' patient scores (cross-fitting)
        thr = {k: choose_threshold(per.loc[per.fold != k, "label"].to_numpy(), per.loc[per.fold != k, "score"].to_numpy(),
                                   "youden") for k in per["fold"].unique()}
        sens.append(skm.recall_score(per["label"], per["score"] >= per["fold"].map(thr)))
    assert res["n"] == 50 and res["n_units"] == 50
    assert res["metrics"]["auroc"]["value"] == pytest.approx(np.mean(aucs), abs=1e-6)  # mean over the 2 repeats
    assert res["metrics"]["sensitivity"]["value"] == pytest.approx(np.mean(sens), abs=1e-6)
    assert res["metrics"]["auroc"]["ci_low"] < res["metrics"]["auroc"]["value"] < res["metrics"]["auroc"]["ci_high"] < 1


def test_study_level_and_the_report_table(aggregate_run):
    run, table, doc = aggregate_run
    res = doc["aggregate"]["levels"]["study"]["max"]
    first = table[table["repeat"] == 0]
    per = first.groupby("study_id").agg(label=("label", "max"), score=("score", "max"))
    assert res["n"] == len(per) == 100 and res["n_units"] == 50  # studies resampled with their patient
    second = table[table["repeat"] == 1].groupby("study_id").agg(label=("label", "max"), score=("score", "max"))
    expected = np.mean([skm.roc_auc_score(p["label"], p["score"]) for p in (per, second)])
    assert res["metrics"]["auroc"]["value"] == pytest.approx(expected, abs=1e-6)
    html = (run / "report.html").read_text()
    assert "<h2>Image, patient and study level</h2>" in html
    for column in ("image, n = 400", "patient (max), n = 50", "patient (mean), n = 50", "study (max), n = 100"):
        assert f"<th>{column}</th>" in html


def test_aggregates_refuse_patients_split_across_folds():
    y = np.array([[0.0], [1.0], [0.0], [1.0]])
    oof = OOF("binary", ("t",), y, np.array([[0.1], [0.9], [0.2], [0.8]]), np.array([0, 1, 0, 1]),
              np.zeros(4, dtype=int), np.array(["a", "a", "b", "b"]))
    with pytest.raises(DataError, match="different folds"):
        aggregate_oof(oof, oof.unit, "max")
