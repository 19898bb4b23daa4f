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

import numpy as np

from medrec.config import ExperimentConfig, load_config
from medrec.errors import MedrecError
from medrec.exitcodes import handle_errors

log = logging.getLogger(__name__)

from medrec.data.preview_draw import (  # noqa: E402,F401  (the drawing lives in the data layer)
    ZSCORE_RANGE,
    caption,
    pick_rows,
    preview_from_base,
    render,
)


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
