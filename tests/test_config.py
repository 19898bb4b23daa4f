import subprocess
import sys
import time
from pathlib import Path

import pytest

from medrec.config import ExperimentConfig, load_config, save_config
from medrec.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, text):
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


def test_misspelled_section_names_it_and_the_valid_sections(tmp_path):
    p = write(tmp_path, "trian:\n  epochs: 2\n")
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    msg = str(exc.value)
    assert "'trian'" in msg and "did you mean 'train'" in msg
    for section in ("data", "model", "cv", "train", "eval"):
        assert section in msg


def test_cli_rejects_misspelled_section_fast_and_nonzero(tmp_path):
    p = write(tmp_path, "trian:\n  epochs: 2\n")
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "medrec.finetune", "--config", str(p)], capture_output=True,
                         text=True, cwd=ROOT, timeout=30)
    assert time.monotonic() - t0 < 5
    assert res.returncode != 0
    assert "trian" in res.stderr and "train" in res.stderr and "Traceback" not in res.stderr


def test_unknown_nested_key_and_wrong_type_name_the_key_path(tmp_path):
    p = write(tmp_path, "train:\n  lrr: 5\n  epochs: many\n")
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    msg = str(exc.value)
    assert "train.lrr" in msg and "did you mean 'lr'" in msg
    assert "train.epochs" in msg and "integer" in msg


def test_set_overrides_any_field_with_yaml_values(tmp_path):
    p = write(tmp_path, "name: demo\ntrain:\n  epochs: 5\n")
    cfg = load_config(p, ["train.epochs=2", "data.window=[40, 400]", "model.arch=resnet34", "eval.bootstrap=10"])
    assert cfg.train.epochs == 2
    assert cfg.data.window == (40.0, 400.0)
    assert cfg.model.arch == "resnet34"
    with pytest.raises(ConfigError, match="model.arch"):
        load_config(p, ["model.arch=resnet5"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(p, ["train.epochs"])


def test_config_is_frozen_and_round_trips(tmp_path):
    cfg = load_config(ROOT / "configs" / "chest_xray.yaml")
    with pytest.raises(Exception):
        cfg.train.epochs = 3
    save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == cfg
    assert cfg.name == "chest_xray"


def test_allow_random_init_only_with_imagenet(tmp_path):
    p = write(tmp_path, "model:\n  weights: none\n  allow_random_init: true\n")
    with pytest.raises(ConfigError, match="allow_random_init"):
        load_config(p)
    assert ExperimentConfig().model.allow_random_init is False
