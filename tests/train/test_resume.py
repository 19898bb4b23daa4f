"""Issue 15 item 9: a run folder keeps its splits; --resume reuses them and refuses changed data."""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medrec import runfolder as rf
from medrec.config import load_config
from medrec.train.cv import prepare_data
from medrec.train.resume import DataChangedError

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "data_samples" / "chest_xray"


@pytest.fixture()
def data(tmp_path):
    """A copy of the chest_xray samples' manifest (images stay where they are), writable per test."""
    table = pd.read_csv(SAMPLES / "manifest.csv")
    table["path"] = [str(SAMPLES / p) for p in table["path"]]
    return tmp_path, table


def config(tmp_path, table):
    table.to_csv(tmp_path / "manifest.csv", index=False)
    (tmp_path / "exp.yaml").write_text(
        f"data:\n  manifest: {tmp_path / 'manifest.csv'}\n  image_size: 32\n"
        "model:\n  weights: none\ncv:\n  folds: 3\n  test_fraction: 0.2\n")
    return load_config(tmp_path / "exp.yaml")


def test_resume_reuses_saved_splits_and_refuses_three_added_patients_by_name(data):
    tmp_path, table = data
    patients = sorted(table["patient_id"].unique())
    added = patients[-3:]
    run = tmp_path / "run"
    run.mkdir()
    cfg = config(tmp_path, table[~table["patient_id"].isin(added)])
    _, _, splits, _ = prepare_data(cfg, run, tmp_path, progress=False)
    saved = rf.read_splits(run)
    assert set(saved["patient_id"]) == set(patients) - set(added)
    assert {"fold_r0", "test", "sha256"} <= set(saved.columns)
    test_set = pd.read_csv(run / "test_set.csv")
    assert "label" in test_set.columns and test_set["label"].notna().all()  # predict can report metrics on it
    # a resumed run rebuilds exactly these splits from the file (even with another seed in the config)
    cfg2 = config(tmp_path, table[~table["patient_id"].isin(added)]).model_copy(update={"seed": 7})
    _, _, again, _ = prepare_data(cfg2, run, tmp_path, progress=False)
    assert [(s.fold, list(s.train), list(s.val)) for s in again] == [(s.fold, list(s.train), list(s.val)) for s in splits]
    with pytest.raises(DataChangedError) as err:
        prepare_data(config(tmp_path, table), run, tmp_path, progress=False)
    msg = str(err.value)
    assert "3 patient(s) added" in msg and all(p in msg for p in added)
    assert "--allow-changed-data" in msg
    assert set(rf.read_splits(run)["patient_id"]) == set(saved["patient_id"])  # nothing overwritten


def test_edited_image_content_is_refused(data):
    tmp_path, table = data
    images = tmp_path / "images"
    shutil.copytree(SAMPLES / "images", images)
    table["path"] = [str(images / Path(p).name) for p in table["path"]]
    run = tmp_path / "run"
    run.mkdir()
    cfg = config(tmp_path, table)
    prepare_data(cfg, run, tmp_path, progress=False)
    victim = Path(table["path"].iloc[5])
    victim.write_bytes(victim.read_bytes() + b"\0")  # same file, other bytes
    with pytest.raises(DataChangedError, match=r"1 image\(s\) with changed content \(patients " + table["patient_id"].iloc[5]):
        prepare_data(config(tmp_path, table), run, tmp_path, progress=False)


def test_allow_changed_data_resplits_into_a_new_folder(data, monkeypatch):
    from medrec import finetune
    from medrec.train import cv

    tmp_path, table = data
    run = tmp_path / "run"
    run.mkdir()
    cfg = config(tmp_path, table.iloc[:-6])
    cfg.model_dump()
    rf.write_config(run, cfg)
    prepare_data(cfg, run, tmp_path, progress=False)
    table.to_csv(tmp_path / "manifest.csv", index=False)  # the resumed config reads the grown manifest
    calls = []

    def fake_run(cfg, run_dir, **kw):  # the data check only; training is tested elsewhere
        prepare_data(cfg, run_dir, tmp_path, progress=False)
        calls.append(run_dir)
        return {"status": "partial: test"}

    monkeypatch.setattr(cv, "run", fake_run)
    assert finetune.main(["--resume", str(run), "--quiet"]) == 2  # refused: the data changed
    assert finetune.main(["--resume", str(run), "--allow-changed-data", "--quiet"]) == 0
    new = calls[-1]
    assert new != run and new.name.startswith("run-resplit-") and rf.read_splits(new) is not None
    assert len(rf.read_splits(new)) == len(table) > len(rf.read_splits(run))
    np.testing.assert_array_equal(sorted(rf.read_splits(run)["image_id"]),
                                  sorted(pd.read_csv(tmp_path / "run" / "splits.csv")["image_id"]))
