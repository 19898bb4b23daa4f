"""The CT and MRI example configs run end to end (shortened), with their modality's preprocessing.

The full configs are measured in the README (pooled AUROC, wall time); here 2 folds x 2 epochs at
64 px prove that every piece is wired: the CT window stack reaches a 3-channel network, the MRI
volumes become one sample per slice with all slices of a patient in one fold, the preview is
written before training, and `medrec.predict` rebuilds the same preprocessing from the checkpoints.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medrec.runfolder import load_checkpoint
from tests.conftest import ROOT, run_finetune

SHORT = ["--set", "train.epochs=2", "--set", "cv.folds=2", "--set", "data.image_size=64", "--set", "eval.bootstrap=20",
         "--set", "train.precise_bn_batches=4", "--quiet"]


@pytest.fixture(scope="module")
def ct_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ct") / "run"
    res = run_finetune("--config", ROOT / "configs" / "ct_head.yaml", *SHORT, "--out", out)
    assert res.returncode == 0, res.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def mri_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("mri") / "run"
    res = run_finetune("--config", ROOT / "configs" / "mri_brain.yaml", *SHORT, "--set", "data.image_size=48",
                       "--out", out)
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def test_ct_run_feeds_three_windows_to_a_three_channel_network(ct_run):
    ckpt = load_checkpoint(ct_run / "folds" / "fold_0" / "best.pt")
    assert ckpt.meta.config["model"]["in_channels"] == 3
    assert ckpt.meta.config["data"]["channels"] == ["brain", "subdural", "bone"]
    stem = next(v for k, v in ckpt.model.items() if k.endswith("conv1.weight"))
    assert stem.shape[1] == 3
    assert ckpt.meta.normalization["mean"] == pytest.approx([0.485, 0.456, 0.406])  # ImageNet RGB, channel by channel
    oof = pd.read_csv(ct_run / "oof_predictions.csv")
    manifest = pd.read_csv(ROOT / "data_samples" / "ct_head" / "manifest.csv")
    assert len(oof) == len(manifest) and oof["score"].between(0, 1).all()
    assert oof.groupby("patient_id")["fold"].nunique().max() == 1


def test_mri_run_uses_every_slice_of_a_volume_and_keeps_a_patient_in_one_fold(mri_run):
    import nibabel as nib

    oof = pd.read_csv(mri_run / "oof_predictions.csv")
    manifest = pd.read_csv(ROOT / "data_samples" / "mri_brain" / "manifest.csv")
    n_slices = sum(nib.load(ROOT / "data_samples" / "mri_brain" / p).shape[2] for p in manifest["path"])
    assert len(oof) == n_slices and oof["image_id"].is_unique
    per_volume = oof.groupby("path")["slice"].apply(lambda s: sorted(s.tolist()))
    assert all(v == list(range(len(v))) for v in per_volume)
    assert oof.groupby("patient_id")["fold"].nunique().max() == 1  # slices and follow-ups stay together
    labels = dict(zip(manifest["path"].map(lambda p: str((ROOT / "data_samples" / "mri_brain" / p).resolve())),
                      manifest["label"]))
    assert (oof["label"] == oof["path"].map(labels)).all()  # each slice carries its volume's label
    ckpt = load_checkpoint(mri_run / "folds" / "fold_0" / "best.pt")
    assert ckpt.meta.normalization == {"mean": [0.0], "std": [1.0]}  # z-scored inputs go in as they are


@pytest.mark.parametrize("which", ["ct_run", "mri_run"])
def test_preview_is_written_into_the_run_folder_before_training(which, request):
    run = request.getfixturevalue(which)
    png = run / "preview.png"
    img = np.asarray(Image.open(png).convert("RGB"))
    assert img.shape[0] > 500 and img.shape[1] > 1000
    assert png.stat().st_mtime < (run / "folds" / "fold_0" / "history.csv").stat().st_mtime
    if which == "ct_run":  # three windows drawn as colours: the picture is not gray
        assert np.abs(img[..., 0].astype(int) - img[..., 2].astype(int)).max() > 60


def test_predict_reproduces_the_mri_out_of_fold_scores_slice_by_slice(mri_run, tmp_path):
    manifest = ROOT / "data_samples" / "mri_brain" / "manifest.csv"
    oof = pd.read_csv(mri_run / "oof_predictions.csv")
    fold0 = oof[oof["fold"] == 0]
    sub = pd.read_csv(manifest)
    sub = sub[sub["patient_id"].isin(set(fold0["patient_id"]))]
    sub["path"] = [str((manifest.parent / p).resolve()) for p in sub["path"]]
    sub_csv = tmp_path / "fold0.csv"
    sub.to_csv(sub_csv, index=False)
    res = subprocess.run([sys.executable, "-m", "medrec.predict", "--run", str(mri_run), "--input", str(sub_csv),
                          "--folds", "0", "--out", str(tmp_path / "p.csv"), "--quiet", "--cam"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    pred = pd.read_csv(tmp_path / "p.csv")
    merged = fold0.merge(pred, on="image_id", suffixes=("_oof", "_pred"))
    assert len(merged) == len(fold0)
    assert (merged["slice_oof"] == merged["slice_pred"]).all()
    np.testing.assert_allclose(merged["score_pred"], merged["score_oof"], atol=1e-5)
    cams = sorted((tmp_path / "cams").glob("*.npy"))  # one Grad-CAM per slice, on the slice's own grid
    assert len(cams) == len(fold0)
    assert all(np.load(c).shape == (64, 64) for c in cams[:3])


def test_preview_cli_writes_the_grid_for_each_example_config(tmp_path):
    for name in ("chest_xray", "ct_head", "mri_brain"):
        out = tmp_path / f"{name}.png"
        res = subprocess.run([sys.executable, "-m", "medrec.preview", "--config", f"configs/{name}.yaml", "--n", "4",
                              "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr[-2000:]
        img = np.asarray(Image.open(out).convert("L"), dtype=float)
        assert img.std() > 20  # images, not an empty canvas
