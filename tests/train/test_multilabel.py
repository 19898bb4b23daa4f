"""A multilabel run with 30% missing (NaN) labels trains and reports per-label AUROC without them."""

import json

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from tests.conftest import ROOT, run_finetune


def test_multilabel_run_masks_missing_labels(tmp_path):
    samples = ROOT / "data_samples" / "chest_xray"
    m = pd.read_csv(samples / "manifest.csv")
    rng = np.random.default_rng(0)
    m["path"] = [str(samples / p) for p in m["path"]]
    m["opacity"] = m["label"].astype(float)
    m["ap_view"] = (m["view"] == "AP").astype(float)
    m["noise"] = rng.integers(0, 2, len(m)).astype(float)
    for col in ("opacity", "ap_view", "noise"):
        m.loc[rng.random(len(m)) < 0.3, col] = np.nan
    manifest = tmp_path / "multi.csv"
    m.drop(columns=["label"]).to_csv(manifest, index=False)
    out = tmp_path / "run"
    res = run_finetune("--config", ROOT / "configs" / "chest_xray.yaml", "--set", f"data.manifest={manifest}",
                       "--set", "data.task=multilabel", "--set", "data.label_columns=[opacity, ap_view, noise]",
                       "--set", "train.epochs=1", "--set", "cv.folds=2", "--set", "data.image_size=64",
                       "--set", "eval.bootstrap=20", "--quiet", "--out", out)
    assert res.returncode == 0, res.stderr[-3000:]
    oof = pd.read_csv(out / "oof_predictions.csv")
    metrics = json.loads((out / "metrics.json").read_text())
    for name in ("opacity", "ap_view", "noise"):
        assert oof[f"label_{name}"].isna().mean() > 0.15  # the NaNs reached the predictions file
        ok = oof[f"label_{name}"].notna()
        expected = roc_auc_score(oof.loc[ok, f"label_{name}"], oof.loc[ok, f"score_{name}"])
        assert abs(metrics["per_label"][name]["auroc"]["value"] - expected) < 1e-5
        assert metrics["data"]["n_labelled"][name] == int(ok.sum())
    assert np.isfinite(pd.read_csv(out / "folds" / "fold_0" / "history.csv")["train_loss"]).all()
