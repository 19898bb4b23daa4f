"""Drawing the preview grid: each training image after preprocessing and after one augmentation draw.

The data-layer half of `python -m medrec.preview` (which stays the CLI) so that training can write
`preview.png` into its run folder without importing a CLI module.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from medrec.config import ExperimentConfig

log = logging.getLogger(__name__)

# z-scored MRI is drawn over this range (in standard deviations of the head).
ZSCORE_RANGE = (-3.0, 3.0)


def pick_rows(labels: np.ndarray, rows: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Up to `n` of `rows`, taken in turn from each value of the first label (so positives show), seeded."""
    rng = np.random.default_rng(seed)
    rows = np.asarray(rows, dtype=int)
    first = np.nan_to_num(np.asarray(labels, dtype=float).reshape(len(labels), -1)[:, 0], nan=-1)
    groups = [list(rng.permutation(rows[first[rows] == v])) for v in np.unique(first[rows])]
    picked: list[int] = []
    while len(picked) < min(n, len(rows)):
        for g in groups:
            if g and len(picked) < n:
                picked.append(int(g.pop(0)))
    return np.array(picked, dtype=int)


def render(cfg: ExperimentConfig, items: list[dict], names: list[str], out: Path, *, seed: int = 0,
           mean: list[float] | None = None, std: list[float] | None = None) -> Path:
    """Draw the preprocessed and the augmented view of each preprocessed `item` into `out` (PNG).

    Args:
        items: preprocessed dataset items ({"image": (1, H, W), "label": ...}), as the cache holds them.
        names: a caption per item (image id and label).
    """
    import torch

    from medrec.data.augment import batch_augment
    from medrec.data.transforms import eval_transforms, train_transforms
    from medrec.models.adapt import input_normalization

    if mean is None or std is None:
        mean, std = input_normalization(cfg)
    k = cfg.model.in_channels
    plain = eval_transforms(cfg.data, mean, std, k)
    train = train_transforms(cfg.data, mean, std, k)
    train.set_random_state(seed=seed)
    before = torch.stack([plain({"image": it["image"]})["image"] for it in items])
    after = torch.stack([train({"image": it["image"]})["image"] for it in items])
    geo = batch_augment(cfg.data, seed)
    if geo is not None:
        after = geo.apply(after)
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    # Undo the network normalisation: show the images in the units the preprocessing produced.
    before, after = (before * s + m).numpy(), (after * s + m).numpy()
    _draw(cfg, before, after, names, out)
    return out


def _display(img: np.ndarray, cfg: ExperimentConfig) -> tuple[np.ndarray, dict[str, Any]]:
    """(C, H, W) -> an array imshow can draw, with its keyword arguments.

    With context slices (channels = windows x slices, window-major) the slice itself is drawn:
    its window(s), as for a single slice.
    """
    k = cfg.data.context_slices
    img = img[k::2 * k + 1]  # the middle slice of each window
    if len(img) == 3:
        return np.clip(np.transpose(img[:3], (1, 2, 0)), 0, 1), {}
    lo, hi = ZSCORE_RANGE if (cfg.data.modality == "mri" and cfg.data.intensity == "zscore") else (0.0, 1.0)
    return img[0], {"cmap": "gray", "vmin": lo, "vmax": hi}


def _neighbours(img: np.ndarray, cfg: ExperimentConfig) -> np.ndarray:
    """RGB of the first window's lowest, middle and highest context slice: grey where they agree."""
    k = cfg.data.context_slices
    return np.clip(np.transpose(img[[0, k, 2 * k]], (1, 2, 0)), 0, 1)


def _legend(cfg: ExperimentConfig) -> str:
    d = cfg.data
    text = _window_legend(cfg)
    if d.context_slices:
        text += (f"; context: {d.context_slices} slice(s) either side (channels = windows x slices); third panel: "
                 f"slice -{d.context_slices} / itself / +{d.context_slices} of the first window as R / G / B")
    return text


def _window_legend(cfg: ExperimentConfig) -> str:
    from medrec.io.dicom import named_windows

    d = cfg.data
    if d.modality == "ct":
        wins = [f"{name} (C {c:g} / W {width:g})" for name, c, width in named_windows(d.channels)]
        if len(wins) == 3:
            return "CT windows as colours: " + ", ".join(f"{col} = {w}" for col, w in zip(("R", "G", "B"), wins))
        return "CT window shown: " + wins[0] + (f" (of {len(wins)} channels)" if len(wins) > 1 else "")
    if d.modality == "mri":
        return (f"MRI, per-image {d.intensity}" + (f"; gray range {ZSCORE_RANGE[0]:g} to {ZSCORE_RANGE[1]:g} SD"
                                                   if d.intensity == "zscore" else " to [0, 1]"))
    return f"window: {d.window if isinstance(d.window, str) else list(d.window)}; gray range 0 to 1"


def _draw(cfg: ExperimentConfig, before: np.ndarray, after: np.ndarray, names: list[str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import textwrap

    n = len(names)
    per = 3 if cfg.data.context_slices else 2  # panels per image: preprocessed, augmented (, neighbours)
    cols = 4 if n > 4 else n  # images per row
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, per * cols, figsize=(2.2 * per * cols, 2.5 * rows + 1.1), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        r, c = divmod(i, cols)
        views = [(before[i], "preprocessed"), (after[i], "augmented"), (before[i], "neighbours")][:per]
        for j, (img, tag) in enumerate(views):
            ax = axes[r, per * c + j]
            arr, kw = _display(img, cfg) if j < 2 else (_neighbours(img, cfg), {})
            ax.imshow(arr, **kw)
            ax.set_title(f"{names[i]}\n{tag}" if j == 0 else f"\n{tag}", fontsize=7)
    head = f"{cfg.name}: {cfg.data.modality}, {cfg.data.image_size} px, {cfg.model.in_channels} channel(s) — " \
           + _legend(cfg)
    augment = textwrap.wrap("augment " + cfg.data.augment.summary(cfg.data.modality), 170)
    fig.suptitle("\n".join([head, *augment]), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    from medrec.fileio import atomic_write_bytes

    try:
        atomic_write_bytes(out, lambda f: fig.savefig(f, format="png", dpi=110))
    finally:
        plt.close(fig)


def caption(manifest, row: int) -> str:
    """Image id and label(s) of a manifest row, for a panel title (no identifiers)."""
    t = manifest.table
    labels = manifest.labels[row]
    if manifest.task == "multiclass":
        lab = manifest.class_names[int(labels)]
    else:
        vals = np.atleast_1d(labels)
        lab = ", ".join(f"{c}={'?' if np.isnan(v) else int(v)}" for c, v in zip(manifest.label_columns, vals))
    return f"{t['image_id'].iat[row]} · {lab}"


def preview_from_base(cfg: ExperimentConfig, manifest, base, rows: np.ndarray, out: Path, *, n: int = 16,
                      seed: int = 0, mean=None, std=None) -> Path:
    """The preview of `n` of `rows` of an already preprocessed (cached) base dataset."""
    chosen = pick_rows(manifest.labels, np.asarray(rows), n, seed)
    items = [base[int(i)] for i in chosen]
    return render(cfg, items, [caption(manifest, int(i)) for i in chosen], out, seed=seed, mean=mean, std=std)
