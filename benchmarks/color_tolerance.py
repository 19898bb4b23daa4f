"""Measure the colour measure of grey radiographs saved as RGB JPEG, and of coloured figures.

Justifies the near-grey thresholds of `medrec.io.color` (CHROMA_LEVELS, MAX_MEAN_SPREAD,
MAX_CHROMA_SHARE). For each generated grey radiograph-like image (smooth anatomy, ribs, noise,
burnt-in text; 1024 x 1024) and each JPEG quality 70..95, the image is saved as an RGB JPEG (Pillow
default 4:2:0 chroma subsampling, and 4:4:4) once as it is and once with a faint independent noise
per channel (sigma 0.7 and 1.5 levels: what a scanner or a colour-managed export adds), read back, and
measured. Coloured figures for contrast: the same images with one small red arrow (0.05% of the
pixels), with a faint warm cast (R +3, B -3), and a photograph-like colour image.

    python benchmarks/color_tolerance.py            # prints a table; --json out.json
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medrec.io.color import CHROMA_LEVELS, MAX_CHROMA_SHARE, MAX_MEAN_SPREAD, measure_colour  # noqa: E402

QUALITIES = (70, 75, 80, 85, 90, 95)


def radiograph(seed: int, size: int = 1024) -> np.ndarray:
    """A grey radiograph-like uint8 image: body, lungs, ribs, noise, a burnt-in label."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    body = 60 + 120 * np.exp(-((x - 0.5) ** 2 / 0.12 + (y - 0.55) ** 2 / 0.2))
    lungs = 70 * (np.exp(-((x - 0.32) ** 2 / 0.01 + (y - 0.5) ** 2 / 0.05))
                  + np.exp(-((x - 0.68) ** 2 / 0.01 + (y - 0.5) ** 2 / 0.05)))
    ribs = 25 * (np.sin(2 * np.pi * (y * 9 + 0.3 * np.abs(x - 0.5) + rng.uniform())) > 0.7)
    img = body - lungs + ribs + rng.normal(0, 4, (size, size))
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "L")
    ImageDraw.Draw(im).text((20, 20), "R  PA 12cm", fill=250)
    return np.asarray(im)


def jpeg_rgb(rgb: np.ndarray, quality: int, subsampling: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, "JPEG", quality=quality, subsampling=subsampling)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def grey_cases(seeds: range) -> list[dict]:
    rows = []
    for seed in seeds:
        grey = radiograph(seed)
        rng = np.random.default_rng(100 + seed)
        variants = [("grey", np.repeat(grey[..., None], 3, 2))]
        for sigma in (0.7, 1.5):
            noise = rng.normal(0, sigma, grey.shape + (3,))
            variants.append((f"noise {sigma}", np.clip(grey[..., None] + noise, 0, 255).astype(np.uint8)))
        for q in QUALITIES:
            for sub, sub_name in ((2, "4:2:0"), (0, "4:4:4")):
                for name, rgb in variants:
                    back = jpeg_rgb(rgb, q, sub)
                    m = measure_colour(back)
                    err = np.abs(back.mean(axis=2) - grey).mean()
                    rows.append({"case": name, "quality": q, "subsampling": sub_name, "seed": seed,
                                 "mean_spread": m.mean_spread, "chroma_share": m.chroma_share,
                                 "max_spread": m.max_spread, "near_grey": m.near_grey,
                                 "mean_abs_error_vs_grey": float(err)})
    return rows


def colour_cases(seeds: range) -> list[dict]:
    rows = []
    for seed in seeds:
        grey = radiograph(seed)
        arrow = Image.fromarray(np.repeat(grey[..., None], 3, 2), "RGB")
        ImageDraw.Draw(arrow).polygon([(500, 500), (540, 515), (500, 530)], fill=(230, 30, 30))  # ~600 px
        cast = np.clip(np.stack([grey + 3.0, grey, grey - 3.0], axis=2), 0, 255).astype(np.uint8)
        rng = np.random.default_rng(seed)
        photo = np.clip(rng.normal(128, 40, (64, 64, 3)), 0, 255).astype(np.uint8)
        photo = np.asarray(Image.fromarray(photo, "RGB").resize((1024, 1024), Image.BICUBIC))
        for name, rgb in (("red arrow", np.asarray(arrow)), ("warm cast", cast), ("photo", photo)):
            for q in (75, 95):
                m = measure_colour(jpeg_rgb(rgb, q, 2))
                rows.append({"case": name, "quality": q, "subsampling": "4:2:0", "seed": seed,
                             "mean_spread": m.mean_spread, "chroma_share": m.chroma_share,
                             "max_spread": m.max_spread, "near_grey": m.near_grey})
    return rows


def summarise(rows: list[dict]) -> list[str]:
    lines = [f"thresholds: spread > {CHROMA_LEVELS} levels is a coloured pixel; near-grey: mean spread <= "
             f"{MAX_MEAN_SPREAD}, coloured share <= {100 * MAX_CHROMA_SHARE:g}%",
             f"{'case':<12} {'q':>3} {'sub':>5}  {'mean spread':>11} {'max share %':>11} {'max spread':>10} "
             f"{'near-grey':>9} {'|err| vs grey':>13}"]
    keys = sorted({(r["case"], r["quality"], r["subsampling"]) for r in rows},
                  key=lambda k: (k[0].startswith(("red", "warm", "photo")), k))
    for case, q, sub in keys:
        sel = [r for r in rows if (r["case"], r["quality"], r["subsampling"]) == (case, q, sub)]
        err = max((r.get("mean_abs_error_vs_grey", float("nan")) for r in sel))
        lines.append(f"{case:<12} {q:>3} {sub:>5}  {max(r['mean_spread'] for r in sel):>11.3f} "
                     f"{100 * max(r['chroma_share'] for r in sel):>11.4f} {max(r['max_spread'] for r in sel):>10} "
                     f"{sum(r['near_grey'] for r in sel)}/{len(sel):<7} {err:>13.3f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    rows = grey_cases(range(args.seeds)) + colour_cases(range(args.seeds))
    print("\n".join(summarise(rows)))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
