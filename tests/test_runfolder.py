"""medrec.runfolder: the versioned run folder format, its one threshold rule and the checkpoint format."""

import json

import pytest
import torch

from medrec import runfolder as rf
from medrec.errors import CheckpointError
from medrec.runfolder import Checkpoint, CheckpointMeta, TrainState


def test_run_json_is_stamped_and_an_unknown_version_is_refused_by_name(tmp_path):
    rf.write_info(tmp_path, {"task": "binary", "threshold": 0.3})
    assert json.loads((tmp_path / "run.json").read_text())["format"] == "medrec-run/2"
    assert rf.read_info(tmp_path)["threshold"] == 0.3
    (tmp_path / "run.json").write_text(json.dumps({"format": "medrec-run/9", "task": "binary"}))
    with pytest.raises(CheckpointError) as err:
        rf.read_info(tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "run.json") in msg and "medrec-run/9" in msg and "medrec-run/2" in msg
    # run.json written before the format field existed is read as version 1
    (tmp_path / "run.json").write_text(json.dumps({"task": "binary"}))
    assert rf.read_info(tmp_path)["task"] == "binary"
    (tmp_path / "run.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="JSON object"):
        rf.read_info(tmp_path)
    with pytest.raises(CheckpointError, match="not a medrec run folder"):
        rf.read_info(tmp_path / "nowhere")


@pytest.mark.parametrize("stored, task, targets, values, missing", [
    (0.3, "binary", ("label",), {"label": 0.3}, ()),
    ({"a": 0.2, "b": 0.7}, "multilabel", ("a", "b"), {"a": 0.2, "b": 0.7}, ()),
    ({"a": 0.2, "b": None}, "multilabel", ("a", "b"), {"a": 0.2, "b": 0.5}, ("b",)),  # only b falls back
    ({"a": 0.2}, "multilabel", ("a", "b"), {"a": 0.2, "b": 0.5}, ("b",)),
    (None, "binary", ("label",), {"label": 0.5}, ("label",)),
    (True, "binary", ("label",), {"label": 0.5}, ("label",)),  # a bool is not a threshold
    (1.5, "binary", ("label",), {"label": 0.5}, ("label",)),  # outside [0, 1]
])
def test_one_threshold_rule_per_label_and_it_says_which_fell_back(stored, task, targets, values, missing):
    thr = rf.thresholds({"threshold": stored}, task, targets)
    assert thr.values == values and thr.missing == missing
    if missing:
        assert "0.5" in thr.source
        assert all(m in thr.source for m in missing) or "has none" in thr.source
    else:
        assert thr.source == "run.json"
    assert thr.for_task(task) == (values["label"] if task == "binary" else values)


def test_multiclass_has_no_threshold():
    thr = rf.thresholds({"threshold": None}, "multiclass", ("x", "y"))
    assert thr.for_task("multiclass") is None and thr.missing == ()


def _meta(**kw):
    base = dict(task="binary", label_names=["label"], num_outputs=1, normalization={"mean": [0.5], "std": [0.25]},
                config={"model": {"arch": "resnet18"}}, fold=2, repeat=1, epoch=3, history=[{"epoch": 0}])
    return CheckpointMeta(**{**base, **kw})


def test_checkpoint_round_trip_and_versions(tmp_path):
    state = {"w": torch.arange(6.0).view(2, 3)}
    ckpt = Checkpoint(_meta(selection={"rule": "last epoch"}), state, TrainState(optimizer={"x": 1}, rng=None))
    rf.save_checkpoint(tmp_path / "a.pt", ckpt)
    back = rf.load_checkpoint(tmp_path / "a.pt")
    assert back.meta == ckpt.meta and back.meta.version == "medrec-checkpoint/2"
    assert torch.equal(back.model["w"], state["w"]) and back.train_state == TrainState(optimizer={"x": 1})
    raw = torch.load(tmp_path / "a.pt", weights_only=True)
    assert raw["format"] == "medrec-checkpoint/2" and raw["meta"] == ckpt.meta.to_dict()
    raw["format"] = "medrec-checkpoint/7"
    torch.save(raw, tmp_path / "b.pt")
    with pytest.raises(CheckpointError, match=r"medrec-checkpoint/7.*supported: medrec-checkpoint/2"):
        rf.load_checkpoint(tmp_path / "b.pt")


def test_flat_format_1_checkpoints_are_still_read(tmp_path):
    flat = {"format": "medrec-checkpoint/1", "model": {"w": torch.ones(2)}, "optimizer": None, "task": "multilabel",
            "label_names": ["a", "b"], "num_outputs": 2, "normalization": {"mean": [0.1], "std": [1.0]},
            "config": {"model": {}}, "epoch": 4, "fold": 1, "repeat": 0, "threshold": None, "unknown_key": 1}
    torch.save(flat, tmp_path / "old.pt")
    ckpt = rf.load_checkpoint(tmp_path / "old.pt")
    assert ckpt.meta.task == "multilabel" and ckpt.meta.label_names == ["a", "b"] and ckpt.meta.epoch == 4
    assert ckpt.train_state is None and torch.equal(ckpt.model["w"], torch.ones(2))
    del flat["normalization"]
    torch.save(flat, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match="normalization"):
        rf.load_checkpoint(tmp_path / "broken.pt")


def test_fold_checkpoints_in_numeric_order_and_a_missing_fold_is_named(tmp_path):
    for name in ("fold_10", "fold_2", "repeat_1_fold_0", "fold_0"):
        (tmp_path / "folds" / name).mkdir(parents=True)
        (tmp_path / "folds" / name / "best.pt").write_bytes(b"x")
    assert [n for n, _ in rf.fold_checkpoints(tmp_path)] == ["fold_0", "fold_2", "fold_10", "repeat_1_fold_0"]
    assert rf.fold_checkpoints(tmp_path, ["2"])[0][1] == tmp_path / "folds" / "fold_2" / "best.pt"
    with pytest.raises(CheckpointError, match="fold_3.*available: fold_0, fold_2"):
        rf.fold_checkpoints(tmp_path, ["3"])
    assert rf.fold_name(2, 0) == "fold_2" and rf.fold_name(0, 1) == "repeat_1_fold_0"
