"""`python -m medrec.export`: ONNX and TorchScript files that match PyTorch on any batch size and
carry the metadata a deployment needs."""

import json
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from medrec import export as ex
from medrec.config import ExperimentConfig
from medrec.models.adapt import normalization
from medrec.models.build import build_model
from medrec.models.specs import get_spec
from medrec.models.build import rebuild_model
from medrec.runfolder import Checkpoint, CheckpointMeta, load_checkpoint, save_checkpoint

SIZES = {"resnet18": 64, "inception_v3": 80}  # Inception-v3 needs >= 75 px


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # The machine's cores are shared: one thread each is faster than oversubscribing them.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def fake_run(root, arch: str, *, classes=("normal", "effusion", "nodule")):
    """A run folder with one random-weight fold checkpoint of a 3-class model (no training)."""
    cfg = ExperimentConfig.model_validate({
        "name": "export-test",
        "data": {"image_size": SIZES[arch], "task": "multiclass", "class_names": list(classes), "window": "lung"},
        "model": {"arch": arch, "weights": "none"}})
    spec = get_spec(arch)
    mean, std = normalization(spec, 1)
    torch.manual_seed(0)
    model, provenance = build_model(cfg.model, num_outputs=len(classes))
    # Fresh BatchNorm statistics (mean 0, var 1) let Inception's activations grow to logits of
    # ~1e6, where float32 rounding alone exceeds 1e-4. Estimate them as training would, so the
    # logits have a trained network's scale.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        model(torch.randn(8, 1, SIZES[arch], SIZES[arch]))
        # A random Inception-v3 rounds to ~1e-4 on unit-scale logits in float32 (PyTorch itself
        # against float64): as large as the tolerance. A tenfold smaller head keeps the check on
        # the exporter; a wrong op or padding still differs by far more.
        model.get_submodule(spec.classifier).weight.mul_(0.1)
    model.eval()
    meta = CheckpointMeta(task="multiclass", label_names=list(classes), num_outputs=len(classes),
                          normalization={"mean": mean, "std": std}, config=cfg.to_dict(), arch=spec.to_dict(),
                          provenance=provenance, epoch=0)
    save_checkpoint(root / "folds" / "fold_0" / "best.pt", Checkpoint(meta, model.state_dict()))
    (root / "run.json").write_text(json.dumps({"task": "multiclass", "label_names": list(classes), "threshold": None}))
    return root


def reference(run, n: int, seed: int = 123):
    """Random inputs and the logits of the checkpoint's network rebuilt independently of medrec.export."""
    ckpt = load_checkpoint(run / "folds" / "fold_0" / "best.pt")
    size = ckpt.meta.config["data"]["image_size"]
    x = torch.randn(n, 1, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        model = rebuild_model(ckpt.meta.config["model"], ckpt.model, ckpt.meta.num_outputs).eval()
        return x, model(x).numpy(), ckpt


@pytest.mark.parametrize("arch", ["resnet18", "inception_v3"])
def test_onnx_export_matches_pytorch_with_a_dynamic_batch(tmp_path, arch, capsys):
    run = fake_run(tmp_path / "run", arch)
    out = tmp_path / f"{arch}.onnx"
    assert ex.main(["--run", str(run), "--fold", "0", "--format", "onnx", "--out", str(out)]) == 0
    assert "max |exported - PyTorch|" in capsys.readouterr().out
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    batch_dim = session.get_inputs()[0].shape[0]
    assert isinstance(batch_dim, str) or batch_dim is None, batch_dim  # symbolic, not a fixed number
    for n in (1, 5):
        x, expected, ckpt = reference(run, n)
        got = session.run(None, {"image": x.numpy()})[0]
        assert got.shape == (n, 3) and np.abs(got - expected).max() < 1e-4
    meta = json.loads((tmp_path / f"{arch}.onnx.json").read_text())
    embedded = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(embedded["medrec"])["preprocessing"] == meta["preprocessing"]
    assert meta["preprocessing"]["normalization"] == ckpt.meta.normalization
    assert meta["preprocessing"]["window"] == "lung"
    assert meta["input"]["shape"] == ["batch", 1, SIZES[arch], SIZES[arch]]
    assert meta["label_names"] == ["normal", "effusion", "nodule"] and meta["threshold"] is None
    assert meta["parity"]["passed"] and meta["parity"]["max_abs_diff"] <= 1e-4
    assert 0 < meta["parity"]["float32_noise"] < 1e-4


def test_torchscript_export_matches_pytorch(tmp_path):
    run = fake_run(tmp_path / "run", "resnet18")
    out = tmp_path / "model.pt"
    assert ex.main(["--run", str(run), "--fold", "0", "--format", "torchscript", "--out", str(out)]) == 0
    files = {"medrec.json": ""}
    with warnings.catch_warnings():  # torch.jit is deprecated in favour of torch.export
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(out), _extra_files=files)
    for n in (1, 4):
        x, expected, ckpt = reference(run, n)
        with torch.no_grad():
            assert np.abs(module(x).numpy() - expected).max() < 1e-4
    assert json.loads(files["medrec.json"])["preprocessing"]["normalization"] == ckpt.meta.normalization
    assert (tmp_path / "model.pt.json").is_file()


def test_legacy_onnx_exporter_also_passes(tmp_path):
    run = fake_run(tmp_path / "run", "resnet18")
    out = tmp_path / "legacy.onnx"
    assert ex.main(["--run", str(run), "--fold", "0", "--format", "onnx", "--out", str(out), "--exporter", "legacy"]) == 0
    x, expected, _ = reference(run, 3)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})[0]
    assert np.abs(got - expected).max() < 1e-4


def test_a_mismatch_beyond_the_tolerance_fails(tmp_path, monkeypatch, capsys):
    """An exported model whose outputs drift by 1e-3 must be rejected with a non-zero exit."""
    run = fake_run(tmp_path / "run", "resnet18")
    real = ex.torchscript_runner
    monkeypatch.setattr(ex, "torchscript_runner", lambda path: (lambda x: real(path)(x) + 1e-3))
    out = tmp_path / "drift.pt"
    assert ex.main(["--run", str(run), "--fold", "0", "--format", "torchscript", "--out", str(out)]) == 3
    assert "differs from PyTorch by up to 0.001" in capsys.readouterr().err
    assert json.loads((tmp_path / "drift.pt.json").read_text())["parity"]["passed"] is False


def test_unknown_fold_is_a_clear_error(tmp_path, capsys):
    run = fake_run(tmp_path / "run", "resnet18")
    assert ex.main(["--run", str(run), "--fold", "7", "--format", "onnx"]) == 2
    assert "available: fold_0" in capsys.readouterr().err
