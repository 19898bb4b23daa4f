"""Grad-CAM (medrec.explain) and `medrec.predict --cam`: every architecture, a model that looks at
one quadrant, the way back to the original image grid, and the files the app reads."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from medrec import explain
from medrec.config import DataConfig, ExperimentConfig, ModelConfig
from medrec.data.transforms import preprocess_transforms
from medrec.io.images import read_image
from medrec.models.adapt import normalization
from medrec.models.build import build_model
from medrec.models.specs import SPECS, get_spec
from medrec.predict import main as predict_main
from medrec.train.checkpoint import save_checkpoint

# Smallest sizes at which each cam layer is at least 2 x 2 (a 1 x 1 layer gives a flat map).
SMOKE_SIZE = {name: 112 if name == "inception_v3" else 64 for name in SPECS}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # The machine's cores are shared: one thread each is faster than oversubscribing them.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def nonnegative_head(model, spec) -> None:
    """Non-negative classifier weights. The cam layers end in ReLU, so every location with
    features then raises the logit and no map is all-zero by chance of random signs."""
    with torch.no_grad():
        model.get_submodule(spec.classifier).weight.abs_()


def textbook_grad_cam(model, layer: str, x: torch.Tensor, k: int) -> torch.Tensor:
    """Grad-CAM from its definition with plain autograd (Selvaraju et al.): channel weights are
    the spatial mean of d logit_k / d A, map = ReLU(sum_c w_c A_c), bilinear to the input size."""
    store = {}
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    try:
        logits = model(x)
    finally:
        handle.remove()
    acts = store["a"]
    grads, = torch.autograd.grad(logits[:, k].sum(), acts)
    cam = F.relu((grads.mean(dim=(2, 3), keepdim=True) * acts).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0].detach()
    return cam / cam.flatten(1).amax(dim=1)[:, None, None]


@pytest.mark.parametrize("arch", list(SPECS))
def test_cam_of_every_architecture_matches_the_textbook_definition(arch):
    torch.manual_seed(0)
    spec = get_spec(arch)
    # GoogLeNet keeps its auxiliary heads and starts in train mode: the CAM must still use the
    # eval-mode network (plain logits) and leave the mode as it was.
    model, _ = build_model(ModelConfig(arch=arch, weights="none", aux_logits=arch == "googlenet"), num_outputs=2)
    nonnegative_head(model, spec)
    model.train(arch == "googlenet")
    size = SMOKE_SIZE[arch]
    x = torch.rand(2, 1, size, size) * 2 - 1
    cam = explain.GradCAM(model, explain.cam_layer(arch))(x, [1, 0])
    assert model.training == (arch == "googlenet")
    assert cam.shape == (2, size, size)
    assert torch.isfinite(cam).all() and cam.min() >= 0
    assert torch.allclose(cam.flatten(1).amax(dim=1), torch.ones(2))
    assert (cam.flatten(1).std(dim=1) > 1e-3).all(), "map is constant"
    model.eval()
    for i, k in enumerate([1, 0]):
        expected = textbook_grad_cam(model, spec.cam_layer, x[i:i + 1], k)[0]
        assert torch.allclose(cam[i], expected, atol=1e-4), float((cam[i] - expected).abs().max())


def _blob_images(labels: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """Noise; label 1 adds a Gaussian blob somewhere inside the top-right quadrant."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    n = len(labels)
    centre = size / 8 + torch.rand(n, 2, generator=gen) * size / 4
    centre[:, 1] += size / 2
    blob = torch.exp(-((yy - centre[:, 0, None, None]) ** 2 + (xx - centre[:, 1, None, None]) ** 2) / (2 * (size / 37) ** 2))
    return 0.05 * torch.randn(n, 1, size, size, generator=gen) + labels[:, None, None, None] * blob[:, None]


def test_cam_mass_lies_in_the_quadrant_the_model_decides_on():
    """A ResNet-18 trained for 15 steps to answer 'is there a blob in the top-right quadrant?'
    (blank otherwise). Its native 224 px input gives a 7 x 7 cam layer; the top-right quadrant
    rules out flipped or transposed maps."""
    size, gen = 224, torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model, _ = build_model(ModelConfig(arch="resnet18", weights="none"), num_outputs=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(15):
        y = torch.tensor([0.0, 1.0, 0.0, 1.0])
        loss = F.binary_cross_entropy_with_logits(model(_blob_images(y, size, gen))[:, 0], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    # 15 steps leave BatchNorm's running averages far from the batch statistics it trained
    # with: re-estimate them (cumulative average) before using the network in eval mode.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        model(_blob_images(torch.tensor([0.0, 1.0] * 8), size, gen))
    model.eval()
    positives, negatives = _blob_images(torch.ones(6), size, gen), _blob_images(torch.zeros(6), size, gen)
    with torch.no_grad():
        assert model(positives).sigmoid().min() > 0.9 and model(negatives).sigmoid().max() < 0.1, "did not learn"
    cam = explain.GradCAM(model, "layer4")(positives, 0)
    h = size // 2
    quadrants = torch.stack([cam[:, :h, :h], cam[:, :h, h:], cam[:, h:, :h], cam[:, h:, h:]], 1).sum(dim=(2, 3))
    share = quadrants / quadrants.sum(dim=1, keepdim=True)
    # Top-right holds the most of every map, and most of the maps' mass overall (chance: 0.25).
    assert (share.argmax(dim=1) == 1).all() and share[:, 1].mean() > 0.5, share


def test_to_original_undoes_resize_and_padding(tmp_path):
    """Mapping the preprocessed image itself back must give the original image (a 90 x 140
    PNG: resized to 64 px wide, padded above and below)."""
    rows, cols = 90, 140
    yy, xx = np.mgrid[0:rows, 0:cols]
    pixels = (127 + 120 * np.sin(xx / 9.0) * np.cos(yy / 13.0)).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    item = preprocess_transforms(DataConfig(image_size=64))({"image": str(tmp_path / "wide.png")})
    back = explain.to_original(item["image"][0].float(), item["image"].applied_operations)
    original, _ = read_image(tmp_path / "wide.png", window="auto")
    assert back.shape == (rows, cols)
    assert np.corrcoef(back.ravel(), original.ravel())[0, 1] > 0.98
    assert np.abs(back - original).mean() < 0.03


# ---------------------------------------------------------------- predict --cam

def fake_run(root, *, task="binary", names=("label",), folds=2, size=64, threshold=0.5):
    """A run folder with random-weight ResNet-18 fold checkpoints (no training)."""
    data = {"image_size": size, "task": task, "label_columns": list(names) if task == "multilabel" else ["label"]}
    cfg = ExperimentConfig.model_validate({"data": data, "model": {"arch": "resnet18", "weights": "none"}})
    spec, (mean, std) = get_spec("resnet18"), normalization(get_spec("resnet18"), 1)
    for k in range(folds):
        torch.manual_seed(k)
        model, provenance = build_model(cfg.model, num_outputs=len(names))
        nonnegative_head(model, spec)
        save_checkpoint(root / "folds" / f"fold_{k}" / "best.pt", {
            "model": model.state_dict(), "optimizer": None, "scheduler": None, "scaler": None, "rng": None,
            "epoch": 0, "fold": k, "repeat": 0, "config": cfg.to_dict(), "arch": spec.to_dict(),
            "normalization": {"mean": mean, "std": std}, "task": task, "label_names": list(names),
            "num_outputs": len(names), "threshold": None, "provenance": provenance})
    (root / "run.json").write_text(json.dumps({"task": task, "label_names": list(names), "threshold": threshold}))
    return root


@pytest.fixture(scope="module")
def cam_inputs(tmp_path_factory):
    """A folder with a wide 80 x 120 and a square 100 x 100 grayscale PNG."""
    folder = tmp_path_factory.mktemp("cam_inputs")
    rng = np.random.default_rng(0)
    for name, shape in (("wide.png", (80, 120)), ("square.png", (100, 100))):
        yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
        img = 100 + 80 * np.exp(-((yy - shape[0] / 3) ** 2 + (xx - shape[1] / 4) ** 2) / 200.0)
        Image.fromarray(np.clip(img + rng.normal(0, 10, shape), 0, 255).astype(np.uint8)).save(folder / name)
    return folder


def test_predict_writes_cams_at_the_original_size_averaged_over_folds(tmp_path, cam_inputs):
    run = fake_run(tmp_path / "run")
    out = tmp_path / "all" / "preds.csv"
    assert predict_main(["--run", str(run), "--input", str(cam_inputs), "--out", str(out), "--cam", "--quiet"]) == 0
    preds = json.loads((out.parent / "preds.meta.json").read_text())
    assert preds["cams"]["layer"] == "layer4" and preds["cams"]["written"] == 2
    per_fold = []
    for k in (0, 1):
        single = tmp_path / f"fold{k}" / "preds.csv"
        assert predict_main(["--run", str(run), "--input", str(cam_inputs), "--out", str(single), "--cam",
                             "--folds", str(k), "--quiet"]) == 0
        per_fold.append(single.parent / "cams")
    table = pd_read(out)
    for image_id, name in zip(table["image_id"], table["path"].map(lambda p: p.rsplit("/", 1)[-1])):
        cam = np.load(out.parent / "cams" / f"{image_id}.npy")
        original = np.asarray(Image.open(cam_inputs / name))
        assert cam.dtype == np.float16 and cam.shape == original.shape
        assert cam.min() >= 0 and cam.max() == 1 and cam.std() > 1e-3
        overlay = Image.open(out.parent / "cams" / f"{image_id}.png")
        assert overlay.size == (original.shape[1], original.shape[0]) and overlay.mode == "RGB"
        # Each fold's map was divided by its maximum before averaging; resizing is linear.
        folds = [np.load(d / f"{image_id}.npy").astype(np.float32) for d in per_fold]
        expected = explain.normalise(sum(folds) / 2)
        assert np.abs(cam.astype(np.float32) - expected).max() < 0.02


def pd_read(path):
    return pd.read_csv(path, dtype={"image_id": str, "path": str, "patient_id": str})


def test_multilabel_cam_needs_a_label_name(tmp_path, cam_inputs, capsys):
    run = fake_run(tmp_path / "run", task="multilabel", names=("effusion", "nodule"), folds=1,
                   threshold={"effusion": 0.5, "nodule": 0.5})
    out = tmp_path / "p" / "preds.csv"
    assert predict_main(["--run", str(run), "--input", str(cam_inputs), "--out", str(out), "--cam", "--quiet"]) == 2
    assert "--cam-class" in capsys.readouterr().err
    assert predict_main(["--run", str(run), "--input", str(cam_inputs), "--out", str(out), "--cam",
                         "--cam-class", "nodule", "--quiet"]) == 0
    meta = json.loads((out.parent / "preds.meta.json").read_text())
    assert meta["cams"]["target"] == "nodule" and meta["cams"]["written"] == 2
    table = pd_read(out)
    assert {"score_effusion", "score_nodule", "score_std_effusion", "pred_nodule"} <= set(table.columns)
