"""`python -m medrec.preview --config CONFIG [--n 16] --out preview.png`: what the network sees.

A grid of training images, each shown twice side by side: after the deterministic
preprocessing (read, scale or window, resize, pad) and after one draw of the training
augmentation (`data.augment`, the same code a fold trains with), with its label and
pseudonymous image id. One channel is drawn in gray; CT's window channels as an RGB
composite (the legend names the window of each colour). `medrec.finetune` writes the same
picture as `preview.png` into every run folder before training starts.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from medrec.config import ExperimentConfig, load_config
from medrec.errors import MedrecError
from medrec.exitcodes import handle_errors

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
    from medrec.data.transforms import eval_transforms, input_normalization, train_transforms

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
    """(C, H, W) -> an array imshow can draw, with its keyword arguments."""
    channels = cfg.data.num_channels
    if channels == 3:
        return np.clip(np.transpose(img[:3], (1, 2, 0)), 0, 1), {}
    lo, hi = ZSCORE_RANGE if (cfg.data.modality == "mri" and cfg.data.intensity == "zscore") else (0.0, 1.0)
    return img[0], {"cmap": "gray", "vmin": lo, "vmax": hi}


def _legend(cfg: ExperimentConfig) -> str:
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
    cols = 4 if n > 4 else n  # images per row; each takes two panels
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, 2 * cols, figsize=(2.2 * 2 * cols, 2.5 * rows + 1.1), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        r, c = divmod(i, cols)
        for j, (img, tag) in enumerate(((before[i], "preprocessed"), (after[i], "augmented"))):
            ax = axes[r, 2 * c + j]
            arr, kw = _display(img, cfg)
            ax.imshow(arr, **kw)
            ax.set_title(f"{names[i]}\n{tag}" if j == 0 else f"\n{tag}", fontsize=7)
    head = f"{cfg.name}: {cfg.data.modality}, {cfg.data.image_size} px, {cfg.model.in_channels} channel(s) — " \
           + _legend(cfg)
    augment = textwrap.wrap("augment " + cfg.data.augment.summary(cfg.data.modality), 170)
    fig.suptitle("\n".join([head, *augment]), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out)


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


def preview_config(cfg: ExperimentConfig, out: Path, *, n: int = 16, seed: int = 0, base_dir: Path = Path(".")) -> Path:
    """Read `n` images of the config's data (balanced over labels), preprocess them and draw the preview."""
    from medrec.data.datasets import manifest_items
    from medrec.data.sources import load_source
    from medrec.data.transforms import ERROR_KEY, preprocess_transforms

    manifest = load_source(cfg.data, base_dir)
    all_items = manifest_items(manifest, cfg.data)
    pre = preprocess_transforms(cfg.data.model_copy(update={"skip_bad_images": True}))
    items, names = [], []
    for i in pick_rows(manifest.labels, np.arange(len(all_items)), 4 * n, seed):
        item = pre(all_items[int(i)])
        if ERROR_KEY in item:
            log.warning("%s", item[ERROR_KEY])
            continue
        items.append(item)
        names.append(caption(manifest, int(i)))
    keep = pick_rows(np.array([it["label"] for it in items]), np.arange(len(items)), n, seed)
    if len(keep) == 0:
        raise MedrecError(f"no readable image in {manifest.source}; see the warnings above")
    return render(cfg, [items[i] for i in keep], [names[i] for i in keep], out, seed=seed)


@handle_errors
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m medrec.preview", description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, required=True, help="experiment YAML")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, as in medrec.finetune (repeatable)")
    p.add_argument("--n", type=int, default=16, help="number of images (default 16)")
    p.add_argument("--seed", type=int, default=0, help="which images and which augmentation draw")
    p.add_argument("--out", type=Path, default=Path("preview.png"), help="PNG to write (default preview.png)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    cfg = load_config(args.config, args.overrides)
    if args.n < 1:
        raise MedrecError("--n must be at least 1")
    out = preview_config(cfg, args.out, n=args.n, seed=args.seed, base_dir=args.config.parent)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
