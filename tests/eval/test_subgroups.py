"""Subgroup validation (issue 15 item 11) against hand computations with scikit-learn."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from medrec.config import ExperimentConfig, save_config
from medrec.eval.bootstrap import bootstrap_draws
from medrec.eval.oof import OOF
from medrec.eval.report import build_report
from medrec.eval.subgroups import masked_statistic

from . import oof_table, write_run


def _with_columns(seed: int = 1) -> pd.DataFrame:
    table = oof_table("binary", ("effusion",), n_patients=60, images=2, folds=3, seed=seed)
    rng = np.random.default_rng(0)
    pids = table["patient_id"].unique()
    table["sex"] = table["patient_id"].map(dict(zip(pids, rng.choice(["F", "M"], len(pids)))))
    table["age_band"] = table["patient_id"].map(dict(zip(pids, rng.choice(["18-49", "50-69", "70+"], len(pids),
                                                                          p=[0.6, 0.3, 0.1]))))
    table["view_position"] = np.where(np.arange(len(table)) % 2, "PA", "AP")  # both views per patient
    return table


def test_subgroup_metric_and_difference_to_the_rest_match_resampled_sklearn():
    table = _with_columns()
    y, s = table[["label"]].to_numpy(float), table[["score"]].to_numpy()
    oof = OOF("binary", ("effusion",), y, s, table["fold"].to_numpy(), table["repeat"].to_numpy(),
              table["patient_id"].to_numpy())
    thr = np.where(table["fold"].to_numpy() == 0, 0.55, 0.6)[:, None]  # any per-row thresholds
    female = (table["sex"] == "F").to_numpy()
    seen = []
    stat = masked_statistic(oof, thr, {("sex", "F", "group"): female, ("sex", "F", "rest"): ~female})

    def recording(w):
        seen.append(np.array(w))
        return stat(w)

    point, draws = bootstrap_draws(recording, oof.unit, n_resamples=100, seed=4)
    g, r = ("sex", "F", "group", "", "auroc"), ("sex", "F", "rest", "", "auroc")
    assert point[g] == pytest.approx(skm.roc_auc_score(y[female, 0], s[female, 0]))
    called = s[:, 0] >= thr[:, 0]
    sens = ("sex", "F", "group", "", "sensitivity")
    assert point[sens] == pytest.approx(skm.recall_score(y[female, 0], called[female]))
    w = np.vstack(seen[1:]).astype(int)
    by_hand = []
    for row in w:
        auc = [skm.roc_auc_score(np.repeat(y[m, 0], row[m]), np.repeat(s[m, 0], row[m])) for m in (female, ~female)]
        by_hand.append(auc[0] - auc[1])
    np.testing.assert_allclose(draws[g] - draws[r], by_hand, atol=1e-12)


@pytest.fixture(scope="module")
def subgroup_run(tmp_path_factory):
    table = _with_columns()
    run = write_run(tmp_path_factory.mktemp("sub") / "run", table, "binary", ("effusion",),
                    eval_cfg={"subgroups": ["sex", "age_band", "view_position", "site"], "bootstrap": 100,
                              "worst_cases": 0})
    build_report(run)
    return run, table, json.loads((run / "metrics.json").read_text())


def test_report_and_metrics_json_give_counts_cis_and_too_few(subgroup_run):
    run, table, doc = subgroup_run
    sub = doc["subgroups"]
    groups = {(g["column"], g["value"]): g for g in sub["groups"]}
    for (col, value), g in groups.items():
        rows = table[table[col] == value]
        assert g["patients"] == rows["patient_id"].nunique() and g["images"] == rows["path"].nunique()
        assert g["prevalence"]["effusion"] == pytest.approx(rows["label"].mean(), abs=1e-6)
        assert g["too_few"] == (g["patients"] < 10)
    few = [g for g in groups.values() if g["too_few"]]
    assert few and all("metrics" not in g for g in few)
    female = groups[("sex", "F")]["metrics"]["effusion"]["auroc"]
    rows = table[table["sex"] == "F"]
    assert female["value"] == pytest.approx(skm.roc_auc_score(rows["label"], rows["score"]), abs=1e-6)
    assert female["ci_low"] < female["value"] < female["ci_high"]
    rest = table[table["sex"] != "F"]
    diff = female["difference"]
    assert diff["value"] == pytest.approx(female["value"] - skm.roc_auc_score(rest["label"], rest["score"]), abs=2e-6)
    assert diff["ci_low"] < diff["value"] < diff["ci_high"]
    assert "site" in sub["unavailable"]
    html = (run / "report.html").read_text()
    assert "<h2>Subgroups</h2>" in html and "<h2>Subgroups: forest plot</h2>" in html and "too few" in html
    assert (run / "plots" / "forest.png").read_bytes()[:4] == b"\x89PNG"
    assert "| age_band | 70+ |" in (run / "report.md").read_text()


def test_subgroup_columns_come_from_the_manifest_when_the_predictions_lack_them(tmp_path):
    table = _with_columns()
    manifest = tmp_path / "manifest.csv"
    # The manifest names images relative to its folder; the predictions hold resolved paths.
    pd.DataFrame({"path": [p.lstrip("/") for p in table["path"]], "patient_id": table["patient_id"],
                  "label": table["label"], "sex": table["sex"]}).to_csv(manifest, index=False)
    table = table.assign(path=[str(tmp_path / p.lstrip("/")) for p in table["path"]]).drop(columns=["sex"])
    run = write_run(tmp_path / "run", table, "binary", ("effusion",))
    cfg = ExperimentConfig.model_validate({"name": "demo-run", "data": {"task": "binary", "manifest": str(manifest)},
                                           "eval": {"bootstrap": 50, "worst_cases": 0, "subgroups": ["sex"]}})
    save_config(cfg, run / "config.yaml")
    doc = build_report(run)
    values = {g["value"]: g["patients"] for g in doc["subgroups"]["groups"]}
    assert values == _with_columns().groupby("sex")["patient_id"].nunique().to_dict()
