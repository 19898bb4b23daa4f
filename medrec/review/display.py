"""What the review app draws: display images in modality units, windows, CAM maps, metadata.

Images are read through medrec.io in modality units and only windowed for display; the CAM
overlay is medrec.explain.overlay, the same picture `medrec.predict --cam` saves.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medrec.data.manifest import slice_of
from medrec.errors import ImageError
from medrec.io.dicom import named_windows
from medrec.io.images import WINDOW_PRESETS, apply_window, read_image
from medrec.review.paths import cam_file

if TYPE_CHECKING:
    from medrec.review.cases import Run

DEFAULT_MAX_SIDE = 1024
# A CAM file larger than this many values is refused before it is read (a crafted .npy can
# declare any shape; np.load would try to allocate it). 3 maps of 8192 x 8192 fit.
MAX_CAM_VALUES = 3 * 8192 * 8192

# Keys of the reader's (already de-identified) metadata that may be shown; anything that
# could identify a patient stays out even if a reader ever returned it.
_DENY = re.compile(
    r"patient|birth|sex|(^|_)age$|uid|accession|address|phone|institution|station|physician|operator|"
    r"referring|person|(^|_)name$|date|study_time|series_time|acquisition_time|content_time|(^|_)id$",
    re.IGNORECASE,
)
_ALLOW = {"manufacturer_model_name", "transfer_syntax_name"}


class CamError(ImageError):
    """A CAM map file that cannot be shown (bad header, huge declared shape, wrong type)."""


@dataclass(frozen=True)
class DisplayImage:
    """An image in modality units, downsampled for display, with its de-identified metadata."""

    pixels: np.ndarray  # float32, 2-D, modality units
    meta: dict[str, Any]
    native_shape: tuple[int, int]

    @property
    def scale(self) -> float:
        return self.pixels.shape[0] / self.native_shape[0]


def prepare_display(
    path: str | Path, max_side: int = DEFAULT_MAX_SIDE, *, slice_index: int | None = None, frame: int | None = None
) -> DisplayImage:
    """Read an image in modality units (medrec.io, window=None) and downsample it so its longer
    side is at most `max_side`, averaging pixel areas so that values stay in modality units.

    Args:
        slice_index: the slice of a volume (NIfTI third axis, multi-frame DICOM frame); default
            the middle one. Use `case_slice` for a case's slice.
        frame: the volume of a 4-D NIfTI file (the run's data.frame); default the middle one.
    """
    # color="convert": a reviewer sees any image, colour ones as luma (the run's data.color decided training)
    arr, meta = read_image(Path(path), window=None, slice_index=slice_index, frame=frame, color="convert")
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):  # colour PNG/JPEG: review on luminance
        arr = arr[..., :3].mean(axis=-1)
    if arr.ndim != 2 or min(arr.shape) < 1:
        raise ImageError(f"{Path(path).name}: expected a 2-D image for display, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
    native = (int(arr.shape[0]), int(arr.shape[1]))
    return DisplayImage(pixels=downsample(arr, max_side), meta=dict(meta or {}), native_shape=native)


def downsample(arr: np.ndarray, max_side: int) -> np.ndarray:
    """Area-average `arr` so its longer side is at most `max_side` (unchanged if already small)."""
    h, w = arr.shape
    if max(h, w) <= max_side:
        return arr
    from PIL import Image

    s = max_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.asarray(
        Image.fromarray(arr.astype(np.float32), mode="F").resize(size, Image.Resampling.BOX), dtype=np.float32
    )


def case_slice(run: Run, value: Any) -> int | None:
    """The slice of a volume a case shows: its `slice` cell, else the run's data.slice when that
    is a number (the slice the network was trained on), else None (the middle slice)."""
    k = slice_of(pd.to_numeric(value, errors="coerce"))
    if k is not None:
        return k
    fixed = run.data_cfg.slice if run.data_cfg is not None else None
    return fixed if isinstance(fixed, int) and not isinstance(fixed, bool) else None


def case_frame(run: Run) -> int | None:
    """The run's data.frame (the volume of a 4-D NIfTI file), or None (the middle one)."""
    return run.data_cfg.frame if run.data_cfg is not None else None


def slice_caption(meta: Mapping[str, Any], slice_index: int | None) -> str | None:
    """'slice 3 of volume (0–4)' for a slice of a volume; None for a plain 2-D image."""
    if meta.get("number_of_slices") is not None:  # NIfTI
        k, n = meta.get("slice_index"), int(meta["number_of_slices"])
    else:  # DICOM: slices of a multi-frame file are its frames
        k, n = meta.get("frame"), int(meta.get("number_of_frames") or 1)
    if n <= 1 and slice_index is None:
        return None
    k = slice_index if k is None else k
    return f"slice {k} of volume (0–{n - 1})" if n > 1 else f"slice {k} of volume"


def window_presets() -> dict[str, tuple[float, float]]:
    """The named DICOM windows (center, width) that medrec.io knows."""
    return {str(k): (float(v[0]), float(v[1])) for k, v in WINDOW_PRESETS.items()}


def run_windows(run: Run) -> dict[str, tuple[float, float]]:
    """A CT run's windows of data.channels, named like 'brain (40/80)', in channel order (the
    first is the one medrec shows a CT image through); empty for other modalities."""
    cfg = run.data_cfg
    if cfg is None or cfg.modality != "ct" or not cfg.channels:
        return {}
    return {f"{name} ({c:g}/{width:g})": (c, width) for name, c, width in named_windows(cfg.channels)}


def file_window(meta: Mapping[str, Any]) -> tuple[float, float] | None:
    """The first WindowCenter/Width recorded in the file, if any."""
    c, w = meta.get("window_center"), meta.get("window_width")
    c = c[0] if isinstance(c, (list, tuple)) and c else c
    w = w[0] if isinstance(w, (list, tuple)) and w else w
    try:
        c, w = float(c), float(w)
    except (TypeError, ValueError):
        return None
    return (c, w) if w > 0 and math.isfinite(c) and math.isfinite(w) else None


def auto_window(pixels: np.ndarray, meta: Mapping[str, Any]) -> tuple[float, float]:
    """The file's window if it has one, else the 0.5-99.5 percentile range (as in medrec.io's
    window="auto"; a VOI LUT sequence is not expressible as center/width and is not used here)."""
    fw = file_window(meta)
    if fw:
        return fw
    lo, hi = np.percentile(pixels, [0.5, 99.5])
    if hi <= lo:
        lo, hi = float(pixels.min()), float(pixels.max())
    return float(lo + hi) / 2, max(float(hi - lo), 1e-3)


def to_gray8(pixels: np.ndarray, center: float, width: float) -> np.ndarray:
    """Window modality values with medrec.io's apply_window and quantise to uint8."""
    # DICOM's LINEAR window needs width >= 1; narrower windows (images in small units) use
    # LINEAR_EXACT, the same ramp without the half-pixel offsets.
    width = max(float(width), 1e-6)
    windowed = (
        apply_window(pixels, center, width) if width >= 1 else apply_window(pixels, center, width, "LINEAR_EXACT")
    )
    out = np.clip(np.nan_to_num(np.asarray(windowed, dtype=np.float32)), 0.0, 1.0)
    return np.round(out * 255).astype(np.uint8)


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a .npy header, read without touching the data."""
    with path.open("rb") as fh:
        try:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
        except (ValueError, OSError, SyntaxError) as exc:
            raise CamError(f"CAM file {path.name} has no valid .npy header ({exc})") from None
    return tuple(int(s) for s in shape), dtype


def load_cam(run: Run, image_id: str, target: str | None = None) -> np.ndarray | None:
    """The Grad-CAM map for an image (RUN/cams/<image_id>.npy or predictions/cams/), as float32
    in [0, 1], or None when there is none. A (labels, H, W) map is indexed by the target.

    Raises:
        CamError: the file's header declares a shape that is not (H, W) or (labels, H, W),
            more than MAX_CAM_VALUES values, or a non-numeric dtype (checked before loading).
        PathRefused: a crafted image id.
    """
    path = cam_file(run, image_id)
    if path is None:
        return None
    shape, dtype = _npy_header(path)
    n = math.prod(shape) if shape else 1
    if len(shape) not in (2, 3) or n > MAX_CAM_VALUES or min(shape) < 1 or dtype.kind not in "fiub":
        raise CamError(
            f"CAM file {path.name} declares shape {shape} of {dtype}; expected (H, W) or (labels, H, W) "
            f"numbers with at most {MAX_CAM_VALUES} values; recompute it with python -m medrec.explain"
        )
    cam = np.load(path, allow_pickle=False)
    if cam.ndim == 3:
        idx = run.targets.index(target) if target in run.targets and cam.shape[0] == len(run.targets) else 0
        cam = cam[idx]
    cam = np.nan_to_num(cam.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    top = float(cam.max()) if cam.size else 0.0
    return np.clip(cam / top, 0, 1) if top > 1 else np.clip(cam, 0, 1)


def compose(
    gray: np.ndarray,
    cam: np.ndarray | None = None,
    *,
    opacity: float = 0.5,
    zoom: float = 1.0,
    pan: tuple[float, float] = (0.5, 0.5),
) -> np.ndarray:
    """RGB uint8 view: the windowed image with the CAM blended in by medrec.explain.overlay
    (in proportion to its value, so cold regions stay untinted), then a crop of 1/zoom of each
    side centred at `pan` (fractions of height and width)."""
    from medrec.explain import overlay

    if cam is not None and opacity > 0:
        if cam.shape != gray.shape:
            from PIL import Image

            cam = np.asarray(
                Image.fromarray(cam.astype(np.float32), mode="F").resize(gray.shape[::-1], Image.Resampling.BILINEAR)
            )
        rgb = overlay(gray.astype(np.float32) / 255.0, cam, opacity=opacity)
    else:
        rgb = np.repeat(gray[..., None], 3, axis=-1).astype(np.uint8)
    if zoom > 1:
        h, w = gray.shape
        ch, cw = max(1, round(h / zoom)), max(1, round(w / zoom))
        top = int(np.clip(round(pan[0] * h - ch / 2), 0, h - ch))
        left = int(np.clip(round(pan[1] * w - cw / 2), 0, w - cw))
        rgb = rgb[top : top + ch, left : left + cw]
    return np.ascontiguousarray(rgb)


def safe_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Only the displayable, non-identifying metadata: no names, dates, UIDs or IDs, and only
    short scalar or small-list values."""
    out = {}
    for key, value in meta.items():
        if _DENY.search(str(key)) and str(key) not in _ALLOW:
            continue
        if isinstance(value, np.generic):
            value = value.item()
        if (
            isinstance(value, (list, tuple))
            and len(value) <= 4
            and all(isinstance(v, (int, float, str)) for v in value)
        ):
            value = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
        if isinstance(value, float):
            value = f"{value:g}"
        if isinstance(value, (str, int, bool)) and len(str(value)) <= 80:
            out[str(key)] = value
    return out
