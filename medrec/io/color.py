"""Grey images however they were saved: alpha, palettes and grey-as-RGB, measured and counted.

Public collections ship grey radiographs as RGB JPEG (chroma noise of lossy coding), RGBA PNG,
palette PNG and 16-bit PNG. `pillow_to_grey` turns any of them into one grey array and says how
(`Conversion`); a truly coloured image (a figure with coloured arrows, a photograph of a screen)
is refused with `ColourImageError` giving the measure, unless `data.color: convert`.

The measure of an RGB image, per pixel: the channel spread max(R,G,B) - min(R,G,B) in 8-bit levels.
  mean_spread   its mean over the image;
  chroma_share  the share of pixels whose spread is above CHROMA_LEVELS.
An image is near-grey when mean_spread <= MAX_MEAN_SPREAD and chroma_share <= MAX_CHROMA_SHARE.
The thresholds come from `benchmarks/color_tolerance.py` (README "Reading images"): grey
radiograph-like images saved as RGB JPEG at qualities 70-95 (with and without a faint per-channel
scanner noise) stay far below them, while a grey image with one small coloured arrow (0.05% of
the pixels) or a faint colour cast is above.

data.color:  auto (default) near-grey -> grey (BT.601 luma: for equal channels, their value), colour -> refused;
             convert  colour -> luma (ITU-R BT.601: 0.299 R + 0.587 G + 0.114 B);
             strict   anything not stored grey (L, I;16, I, F, 1; alpha allowed) -> refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from medrec.errors import ColourImageError, ConfigError
from medrec.names import COLOR_MODES

__all__ = ["Conversion", "ColourMeasure", "measure_colour", "pillow_to_grey", "CHROMA_LEVELS",
           "MAX_MEAN_SPREAD", "MAX_CHROMA_SHARE", "BT601"]

CHROMA_LEVELS = 12  # a pixel is coloured when its channels spread by more than this (8-bit levels)
MAX_MEAN_SPREAD = 3.0  # mean channel spread of a near-grey image, 8-bit levels
MAX_CHROMA_SHARE = 1e-4  # share of coloured pixels a near-grey image may have (0.01%)
BT601 = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class ColourMeasure:
    """How far an RGB image is from grey (module docstring)."""

    mean_spread: float
    chroma_share: float
    max_spread: int

    @property
    def near_grey(self) -> bool:
        return self.mean_spread <= MAX_MEAN_SPREAD and self.chroma_share <= MAX_CHROMA_SHARE

    def describe(self) -> str:
        return (f"mean channel difference {self.mean_spread:.2f} grey levels (near-grey <= {MAX_MEAN_SPREAD:g}), "
                f"{100 * self.chroma_share:.3f}% of pixels differ by more than {CHROMA_LEVELS} levels "
                f"(near-grey <= {100 * MAX_CHROMA_SHARE:g}%), largest difference {self.max_spread}")


@dataclass(frozen=True)
class Conversion:
    """How one image became grey: `kind` is one of
    grey (stored grey), rgb_identical, rgb_near_grey, rgb_luma (data.color: convert), palette;
    `alpha` is "none", "opaque" or "not_opaque" (an alpha channel that is not uniformly opaque)."""

    kind: str = "grey"
    alpha: str = "none"
    measure: ColourMeasure | None = None


def measure_colour(rgb: np.ndarray) -> ColourMeasure:
    """The colour measure of an (H, W, 3) uint8 array (module docstring)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    # element-wise across three planes: numpy's max(axis=2) over a 3-long axis is ~50x slower
    spread = np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)  # uint8, max >= min
    n = spread.size or 1
    return ColourMeasure(
        mean_spread=float(spread.mean(dtype=np.float64)),
        chroma_share=float(np.count_nonzero(spread > CHROMA_LEVELS)) / n,
        max_spread=int(spread.max()) if spread.size else 0,
    )


def check_color_mode(color: str) -> None:
    if color not in COLOR_MODES:
        raise ConfigError(f"data.color '{color}' unknown; valid: {', '.join(COLOR_MODES)}")


def pillow_to_grey(im: Any, path: Any, color: str = "auto") -> tuple[np.ndarray, float, Conversion]:
    """A loaded Pillow image -> (grey array, maximum of its bit depth, how it was converted).

    The array is uint8/uint16/int32/float32 as stored (not yet scaled); the bit-depth maximum is
    255 for 8-bit data, 65535 for 16-bit, 1 for bilevel, and the data maximum for I/F images.

    Raises:
        ColourImageError: a colour image under data.color auto, anything not stored grey under strict.
    """
    check_color_mode(color)
    mode = im.mode
    has_alpha = "A" in im.getbands() or (mode == "P" and "transparency" in im.info)
    alpha = _alpha_state(im) if has_alpha else "none"
    if mode in ("1", "L", "LA", "La", "I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        grey, top = _stored_grey(im)
        return grey, top, Conversion("grey", alpha)
    if color == "strict":
        raise ColourImageError(f"{path}: stored as {mode}, not grey, and data.color is strict; "
                               "use data.color: auto to read grey images saved in colour")
    kind = "palette" if mode in ("P", "PA") else None
    rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    m = measure_colour(rgb)
    if m.max_spread == 0:
        return rgb[..., 0].copy(), 255.0, Conversion(kind or "rgb_identical", alpha, m)
    if m.near_grey or color == "convert":
        grey = _luma(rgb)
        return grey, 255.0, Conversion(kind or "rgb_near_grey" if m.near_grey else "rgb_luma", alpha, m)
    raise ColourImageError(f"{path}: colour image ({mode}): {m.describe()}; set data.color: convert to read "
                           "it as luma (ITU-R BT.601), or leave it out")


def _luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of an (H, W, 3) uint8 array, float32."""
    wr, wg, wb = (np.float32(w) for w in BT601)
    return rgb[..., 0] * wr + rgb[..., 1] * wg + rgb[..., 2] * wb


def _stored_grey(im: Any) -> tuple[np.ndarray, float]:
    mode = im.mode
    if mode == "1":
        return np.asarray(im, dtype=np.uint8), 1.0
    if mode in ("L", "LA", "La"):
        return np.asarray(im.getchannel(0)), 255.0
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16, copy=False), 65535.0
    arr = np.asarray(im)
    if mode == "I" and im.format == "PNG":
        return arr, 65535.0  # PNG grey is at most 16 bits; Pillow may open it as 32-bit "I"
    top = float(arr.max()) if arr.size else 1.0
    return arr, top if top > 0 else 1.0  # 32-bit int / float TIFF: no bit depth to go by


def _alpha_state(im: Any) -> str:
    """'opaque' when the alpha channel is uniformly opaque, else 'not_opaque'."""
    if "A" not in im.getbands():
        im = im.convert("RGBA")  # palette transparency
    low, high = im.getchannel("A").getextrema()
    return "opaque" if low == high == 255 else "not_opaque"
