"""Reduce resolution as early as the target size allows: one decode, then small arrays.

A cache that stores 224-pixel images need not handle 16-megapixel arrays after the decoder.
`reduction_factor` picks an integer factor that keeps the longest side at least twice the target
(so the final area resize still averages two or more pixels into each output pixel); JPEG gets it
from the decoder itself (`jpeg_draft`: DCT scaling by 1/2, 1/4, 1/8), everything else from a box
average (`box_reduce`, Pillow's C `reduce`) right after decoding. The statistics that follow (colour
measure, percentile windows) are computed on the reduced image; `benchmarks/data_speed.py
--real-size` states how close the result is to the full-resolution path.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["reduction_factor", "jpeg_draft", "box_reduce", "PILLOW_REDUCE_MODES"]

# Pillow modes whose `reduce` keeps the values exact enough (8-bit bands, 32-bit float).
PILLOW_REDUCE_MODES = ("L", "LA", "RGB", "RGBA", "RGBX", "F")


def reduction_factor(rows: int, columns: int, target: int | None) -> int:
    """Largest integer k with max(rows, columns) / k >= 2 * target; 1 when no reduction applies."""
    if not target:
        return 1
    k = max(int(rows), int(columns)) // (2 * int(target))
    return k if k >= 2 else 1


def jpeg_draft(im: Any, k: int) -> int:
    """Ask Pillow's JPEG decoder to decode at 1/2, 1/4 or 1/8 scale, at most 1/k; return the scale used.

    Must be called before `load()`. Other formats are left alone (scale 1).
    """
    if k < 2 or im.format != "JPEG" or im.mode not in ("L", "RGB"):
        return 1
    width, height = im.size
    # draft picks the largest reduction whose result is still >= the requested size
    im.draft(im.mode, (-(-width // k), -(-height // k)))
    return max(1, round(width / im.size[0]))


def box_reduce(arr: np.ndarray, k: int) -> np.ndarray:
    """Box-average a 2-D array by an integer factor k (edge boxes average what they hold), float32."""
    if k < 2:
        return arr
    from PIL import Image

    arr = np.asarray(arr)
    if arr.dtype in (np.uint8, np.uint16) and arr.flags.c_contiguous:
        # zero-copy view for Pillow, converted to float and averaged in C
        mode = "L" if arr.dtype == np.uint8 else "I;16"
        im = Image.frombuffer(mode, arr.shape[::-1], arr, "raw", mode, 0, 1)
        return np.asarray(im.convert("F").reduce(k))
    return _numpy_box(np.asarray(arr, dtype=np.float32), k)


def _numpy_box(a: np.ndarray, k: int) -> np.ndarray:
    """The same boxes in numpy (float input, where Pillow would need a slow copy to take the array)."""
    h, w = a.shape
    rows, cols = h // k, w // k
    out = np.empty((-(-h // k), -(-w // k)), np.float32)
    out[:rows, :cols] = a[: rows * k, : cols * k].reshape(rows, k, cols, k).sum(axis=3).sum(axis=1) / (k * k)
    if cols * k < w:
        out[:rows, cols] = a[: rows * k, cols * k:].reshape(rows, k, -1).mean(axis=(1, 2))
    if rows * k < h:
        out[rows, :cols] = a[rows * k:, : cols * k].reshape(h - rows * k, cols, k).mean(axis=(0, 2))
    if rows * k < h and cols * k < w:
        out[rows, cols] = a[rows * k:, cols * k:].mean()
    return out
