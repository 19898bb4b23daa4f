"""Columns that eval.subgroups / eval.aggregate name are checked against the manifest before training."""

from pathlib import Path

import pandas as pd
import pytest

from medrec import finetune
from medrec.config import load_config
from medrec.data.sources import load_source
from medrec.errors import ConfigError
from medrec.train.cv import check_eval_columns

SAMPLES = Path(__file__).resolve().parents[2] / "data_samples" / "chest_xray"


def _config(tmp_path: Path, evaluation: str):
    table = pd.read_csv(SAMPLES / "manifest.csv")
    table["path"] = [str(SAMPLES / p) for p in table["path"]]
    table.to_csv(tmp_path / "manifest.csv", index=False)
    (tmp_path / "exp.yaml").write_text(
        f"data:\n  manifest: {tmp_path / 'manifest.csv'}\n  image_size: 32\n"
        f"model:\n  weights: none\ncv:\n  folds: 3\neval:\n{evaluation}")
    return load_config(tmp_path / "exp.yaml")


def test_columns_of_the_manifest_pass(tmp_path):
    cfg = _config(tmp_path, "  subgroups: [sex, age_band, view]\n  aggregate: [patient]\n")
    manifest = load_source(cfg.data, tmp_path)
    assert {"sex", "age_band", "view"} <= set(manifest.table.columns)  # what the check relies on
    check_eval_columns(cfg, manifest)


def test_a_misspelt_subgroup_and_a_missing_study_id_are_named_with_the_columns_present(tmp_path):
    cfg = _config(tmp_path, "  subgroups: [sex, agee_band]\n  aggregate: [patient, study]\n")
    with pytest.raises(ConfigError) as err:
        check_eval_columns(cfg, load_source(cfg.data, tmp_path))
    msg = str(err.value)
    assert "eval.subgroups names column 'agee_band'" in msg and "'sex'" not in msg
    assert "eval.aggregate: [study] names column 'study_id'" in msg
    assert "age_band" in msg and str(tmp_path / "manifest.csv") in msg  # the columns it has, and which file


def test_finetune_stops_before_training(tmp_path, capsys):
    _config(tmp_path, "  subgroups: [site]\n")
    run = tmp_path / "run"
    assert finetune.main(["--config", str(tmp_path / "exp.yaml"), "--out", str(run), "--quiet"]) == 2
    assert "eval.subgroups names column 'site'" in capsys.readouterr().err
    assert not list(run.glob("folds/*/*.pt"))  # no fold was trained
