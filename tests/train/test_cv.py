"""End-to-end runs of `python -m medrec.finetune` on data_samples: outputs, privacy, resume, DDP."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "chest_xray.yaml"


def finetune(*args, env=None, **kw):
    e = {**os.environ, "OMP_NUM_THREADS": "2", **(env or {})}
    return subprocess.run([sys.executable, "-m", "medrec.finetune", *args], cwd=ROOT, env=e, capture_output=True,
                          text=True, timeout=600, **kw)


@pytest.fixture(scope="module")
def reference_run(samples_run):
    """The suite's shared short run of data_samples (see tests/conftest.py): uninterrupted."""
    return samples_run


def identifiers():
    """Every PatientName / PatientBirthDate / raw PatientID value in data_samples."""
    values = set()
    for f in (ROOT / "data_samples" / "chest_xray").rglob("*.dcm"):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        values |= {str(ds.PatientName), str(ds.PatientBirthDate), str(ds.PatientID)}
        values |= {part for part in str(ds.PatientName).replace("^", " ").split() if len(part) > 3}
    return {v for v in values if v}


def test_run_writes_every_output(reference_run):
    run, res = reference_run
    for name in ("config.yaml", "run.json", "oof_predictions.csv", "metrics.json", "report.html", "train.log"):
        assert (run / name).is_file(), name
    for k in range(3):
        assert (run / "folds" / f"fold_{k}" / "last.pt").is_file()
        assert (run / "folds" / f"fold_{k}" / "best.pt").is_file()
    oof = pd.read_csv(run / "oof_predictions.csv")
    manifest = pd.read_csv(ROOT / "data_samples" / "chest_xray" / "manifest.csv")
    assert len(oof) == len(manifest) and oof["path"].is_unique
    assert {"path", "patient_id", "fold", "label", "score"} <= set(oof.columns)
    assert oof["score"].between(0, 1).all()
    # each patient's images were predicted by exactly one fold model
    assert (oof.groupby("patient_id")["fold"].nunique() == 1).all()
    metrics = json.loads((run / "metrics.json").read_text())
    text = json.dumps(metrics)
    for key in ("auroc", "accuracy", "sensitivity", "specificity"):
        assert key in text
    html = (run / "report.html").read_text()
    assert "data:image/png;base64" in html
    info = json.loads((run / "run.json").read_text())
    assert info["initialisation"] == "random (ImageNet weights unavailable)"
    assert "random (ImageNet weights unavailable)" in html
    assert "pooled" in res.stdout and str(run) in res.stdout


def test_no_patient_identifier_anywhere_in_the_run_folder(reference_run):
    run, _ = reference_run
    values = identifiers()
    assert len(values) > 20
    for f in run.rglob("*"):
        if f.is_file():
            blob = f.read_bytes()
            for v in values:
                assert v.encode() not in blob, f"{v!r} found in {f}"


def test_killed_run_resumes_to_identical_predictions(reference_run, short_run_args, tmp_path):
    ref, _ = reference_run
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "medrec.finetune", "--config", str(CONFIG), *short_run_args,
                             "--out", str(out)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    marker = out / "folds" / "fold_1" / "last.pt"  # fold 2 (of 3) has finished an epoch
    log = out / "train.log"

    def fold2_epoch_logged():  # logged only after its checkpoint is on disk
        return log.exists() and "fold 1 epoch 1 done" in log.read_text()

    deadline = time.monotonic() + 300
    while not fold2_epoch_logged() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert marker.exists(), "the run ended before fold 2 started"
    assert not (out / "folds" / "fold_1" / "oof.csv").exists(), "killed too late: fold 2 had finished"
    assert not (out / "oof_predictions.csv").exists()

    res = finetune("--resume", str(out), "--quiet")
    assert res.returncode == 0, res.stderr[-3000:]
    a = pd.read_csv(ref / "oof_predictions.csv").sort_values("path").reset_index(drop=True)
    b = pd.read_csv(out / "oof_predictions.csv").sort_values("path").reset_index(drop=True)
    assert (a["path"] == b["path"]).all() and (a["fold"] == b["fold"]).all()
    np.testing.assert_allclose(b["score"], a["score"], rtol=0, atol=1e-6)
    # No finished epoch was trained twice: each (fold, epoch) is logged once across both processes.
    done = re.findall(r"fold (\d+) epoch (\d+) done", (out / "train.log").read_text())
    assert len(done) == 9 and len(set(done)) == 9
    assert "skipped" in (out / "train.log").read_text()


def test_torchrun_two_ranks_stay_in_step(tmp_path):
    out, ranks = tmp_path / "ddp", tmp_path / "ranks"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MEDREC_RANK_REPORT": str(ranks)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "medrec.finetune", "--config", str(CONFIG), "--set", "train.epochs=1", "--set", "cv.folds=3",
           "--set", "data.image_size=64", "--set", "eval.bootstrap=20", "--fold", "0", "--quiet", "--out", str(out)]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    r0 = json.loads((ranks / "rank0_fold0.json").read_text())
    r1 = json.loads((ranks / "rank1_fold0.json").read_text())
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["weights_sha256"] == r1["weights_sha256"]
    seen0, seen1 = set(r0["seen"][0]), set(r1["seen"][0])
    assert seen0 and not seen0 & seen1 and abs(len(seen0) - len(seen1)) == 0
    oof = pd.read_csv(out / "folds" / "fold_0" / "oof.csv")
    assert not set(oof["path"]) & set(pd.read_csv(ROOT / "data_samples/chest_xray/manifest.csv")["path"]
                                      .map(lambda p: str((ROOT / "data_samples/chest_xray" / p).resolve()))
                                      .iloc[sorted(seen0 | seen1)])
    # one set of files: rank 1 wrote nothing of its own
    names = sorted(p.name for p in out.rglob("*") if p.is_file() and "tensorboard" not in p.parts)
    assert names.count("train.log") == 1 and names.count("config.yaml") == 1
    assert len(list((out / "tensorboard").glob("events*"))) == 1
