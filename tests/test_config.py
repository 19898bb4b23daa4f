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


# ----------------------------------------------------------------------------- augmentation and modalities

AUG_NAMES = ("affine", "bias_field", "coarse_dropout", "contrast", "flip", "noise", "rotate", "scale_intensity",
             "shift_intensity", "smooth", "window_jitter", "zoom")


@pytest.mark.parametrize("text, must_name", [
    # an unknown augmentation: named, the nearest valid one suggested, every valid name listed
    ("data:\n  augment:\n    preset: cxr\n    rotat: {degrees: 10}\n", ["data.augment.rotat", "did you mean 'rotate'",
                                                                       *AUG_NAMES]),
    # an unknown parameter of a known augmentation: named with that augmentation's parameters
    ("data:\n  augment:\n    noise: {sigma: 0.1}\n", ["data.augment.noise.sigma", "valid: prob, std"]),
    # a parameter out of range / of the wrong shape
    ("data:\n  augment:\n    rotate: {degrees: 400}\n", ["data.augment.rotate.degrees", "180", "400"]),
    ("data:\n  augment:\n    zoom: {range: [1.3, 0.7]}\n", ["data.augment.zoom.range", "low <= high"]),
    ("data:\n  augment:\n    flip: {axes: [diagonal]}\n", ["data.augment.flip.axes", "left_right", "up_down"]),
    ("data:\n  augment:\n    noise: {prob: 1.5}\n", ["data.augment.noise.prob", "1.5"]),
    # an unknown preset lists the presets
    ("data:\n  augment: chest\n", ["data.augment.preset", "'cxr'", "'ct'", "'mri'", "chest"]),
    # window jitter without CT windows
    ("data:\n  augment:\n    window_jitter: true\n", ["window_jitter", "modality ct"]),
])
def test_bad_augmentation_config_names_it_and_the_valid_choices(tmp_path, text, must_name):
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, text))
    for part in must_name:
        assert part in str(exc.value)


def test_cli_rejects_a_bad_augmentation_before_any_training(tmp_path):
    text = (ROOT / "configs" / "ct_head.yaml").read_text().replace("preset: ct", "preset: ct\n    rotatte: {}")
    p = write(tmp_path, text)
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "medrec.finetune", "--config", str(p), "--out", str(tmp_path / "run")],
                         capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert time.monotonic() - t0 < 5
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "data.augment.rotatte" in res.stderr and "did you mean 'rotate'" in res.stderr
    assert not (tmp_path / "run" / "folds").exists()


def test_augment_items_override_the_preset_one_by_one(tmp_path):
    cfg = load_config(write(tmp_path, "data:\n  augment:\n    preset: cxr\n    rotate: {degrees: 15}\n"
                                      "    noise: false\n    smooth: true\n"))
    items = cfg.data.augment.resolved(cfg.data.modality)
    assert items["rotate"].degrees == 15 and items["rotate"].prob == 0.5  # prob still the preset's
    assert "noise" not in items and "smooth" in items and items["smooth"].sigma == (0.25, 1.0)
    assert list(items) == ["rotate", "zoom", "affine", "contrast", "smooth"]  # fixed order
    assert "flip" not in items
    plain = load_config(write(tmp_path, "data:\n  augment: cxr\n"))
    assert set(plain.data.augment.resolved("cxr")) == {"rotate", "zoom", "affine", "contrast", "noise"}


def test_preset_auto_follows_the_modality(tmp_path):
    ct = load_config(write(tmp_path, "data:\n  modality: ct\n  channels: [brain]\n"))
    assert "window_jitter" in ct.data.augment.resolved(ct.data.modality)
    mri = load_config(write(tmp_path, "data:\n  modality: mri\n"))
    assert "bias_field" in mri.data.augment.resolved(mri.data.modality)


def test_ct_channels_set_in_channels_and_a_mismatch_is_refused(tmp_path):
    cfg = load_config(write(tmp_path, "data:\n  modality: ct\n  channels: [brain, subdural, bone]\n"))
    assert cfg.model.in_channels == 3 and cfg.data.num_channels == 3
    two = load_config(write(tmp_path, "data:\n  modality: ct\n  channels: [brain, [300, 1500]]\n"))
    assert two.model.in_channels == 2
    with pytest.raises(ConfigError, match="model.in_channels 1 does not match the data.s 2 channels"):
        load_config(write(tmp_path, "data:\n  modality: ct\n  channels: [brain, subdural]\nmodel:\n  in_channels: 1\n"))
    with pytest.raises(ConfigError, match="needs data.channels"):
        load_config(write(tmp_path, "data:\n  modality: ct\n"))
    with pytest.raises(ConfigError, match="window 'brian' unknown; valid: .*subdural"):
        load_config(write(tmp_path, "data:\n  modality: ct\n  channels: [brian]\n"))
    with pytest.raises(ConfigError, match="needs data.modality ct"):
        load_config(write(tmp_path, "data:\n  channels: [brain]\n"))


def test_a_saved_config_resolves_the_same_augmentation(tmp_path):
    # contrast's prob in the cxr preset (0.3) differs from the item's default (0.5): saving must not
    # turn the preset's value into an explicit 0.5, or a resumed run would augment differently.
    cfg = load_config(write(tmp_path, "data:\n  augment:\n    preset: cxr\n    contrast: {gamma: [0.7, 1.4]}\n"
                                      "    noise: false\n"))
    save_config(cfg, tmp_path / "saved.yaml")
    again = load_config(tmp_path / "saved.yaml")
    assert again.data.augment.resolved("cxr") == cfg.data.augment.resolved("cxr")
    assert cfg.data.augment.resolved("cxr")["contrast"].prob == 0.3
    assert again == cfg


def test_dead_and_contradicting_keys_are_refused_with_the_fix():
    from medrec.config import validate_config

    with pytest.raises(ConfigError, match="num_classes.*derived from data.task"):
        validate_config({"model": {"num_classes": 3}})
    assert "num_classes" not in validate_config({"model": {"num_classes": None}}).to_dict()["model"]  # old saved configs
    with pytest.raises(ConfigError, match="split_column.*repeats"):
        validate_config({"cv": {"split_column": "fold", "repeats": 3}})
    with pytest.raises(ConfigError, match="early_stopping.metric"):
        validate_config({"train": {"early_stopping": {"metric": "aurco"}}})  # a typo fails before any work
    loss = validate_config({"train": {"early_stopping": {"metric": "loss", "patience": 2}}}).train.early_stopping
    assert loss.direction == "min" and loss.inner_fraction == 0.15
    with pytest.raises(ConfigError, match="contradicts"):
        validate_config({"train": {"early_stopping": {"metric": "loss", "mode": "max"}}})


def test_names_come_from_one_torch_free_module():
    import subprocess
    import sys

    from medrec import config, names

    assert config.ARCHS == names.ARCHS and set(config.WINDOW_PRESETS) == set(names.WINDOW_PRESETS)
    code = "import medrec.names, sys; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
