"""Read one image the way `data.modality` wants it, without MONAI or torch.

`read_item` is the first step of the training chain (`medrec.data.transforms.LoadItemd`);
`display_image` is the same read as one [0, 1] channel for people (report thumbnails, Grad-CAM
overlays). Kept free of MONAI and torch so that a report can be rebuilt on any machine.
"""

from __future__ import annotations

import numpy as np

from medrec.config import DataConfig
from medrec.data.manifest import NPZ_SEP
from medrec.errors import ImageError

# z-scores beyond this are clipped: a few extreme voxels (vessels, fat) must not set the scale.
ZSCORE_CLIP = 5.0


def read_item(path: str, cfg: DataConfig, slice_index: int | None = None) -> np.ndarray:
    """Read one image as float32 (H, W) as `data.modality` wants it (module docstring).

    Args:
        slice_index: the slice of a volume (NIfTI third axis, multi-frame DICOM frame); default
            `data.slice` when it is a number, else the middle one.

    Raises:
        MedrecError: the file cannot be read, or does not carry the units the modality needs.
    """
    if NPZ_SEP in path:
        from medrec.data.sources import read_npz_item

        image = read_npz_item(path)
        return scale_intensity(image, cfg.intensity) if cfg.modality == "mri" else image
    from medrec.io.images import read_image

    if slice_index is None and isinstance(cfg.slice, int):
        slice_index = cfg.slice
    if cfg.modality == "cxr":
        window = tuple(cfg.window) if isinstance(cfg.window, (list, tuple)) else cfg.window
        array, _ = read_image(path, frame=cfg.frame, window=window, slice_index=slice_index)
        return np.asarray(array, dtype=np.float32)
    array, meta = read_image(path, frame=cfg.frame, window=None, slice_index=slice_index)
    if cfg.modality == "ct":
        if meta.get("format") in ("png", "jpeg", "jpg"):
            raise ImageError(f"{path}: data.modality ct needs Hounsfield units, but this is a {meta['format']} "
                             "image; use DICOM or NIfTI CT files, or data.modality cxr for exported pictures")
        return np.asarray(array, dtype=np.float32)
    return scale_intensity(array, cfg.intensity)


def scale_intensity(image: np.ndarray, how: str) -> np.ndarray:
    """MRI: z-score over the head (foreground) or 0.5-99.5 percentile scaling to [0, 1].

    The foreground is every pixel above 10% of the 0.5-99.5 percentile range, which leaves
    out the air around the head (whose Rician noise is never exactly zero); z-scores are
    clipped to +-ZSCORE_CLIP.
    """
    from medrec.io.windows import scale_percentile

    x = np.asarray(image, dtype=np.float64)
    if how == "percentile":
        return scale_percentile(x)
    lo, hi = np.percentile(x, [0.5, 99.5])
    fg = x > lo + 0.1 * (hi - lo)
    if fg.sum() < 2:
        fg = np.ones_like(x, dtype=bool)
    mean, std = float(x[fg].mean()), float(x[fg].std())
    z = (x - mean) / (std if std > 0 else 1.0)
    return np.clip(z, -ZSCORE_CLIP, ZSCORE_CLIP).astype(np.float32)


def display_image(path: str, cfg: DataConfig, slice_index: int | None = None) -> np.ndarray:
    """The image as the network's preprocessing sees it, before resizing, as one (H, W) channel in
    [0, 1] for people to look at: cxr as windowed; ct through its first window of `data.channels`;
    mri z-scores from -3 to +3 SD (or its percentile scaling)."""
    image = read_item(path, cfg, slice_index)
    if cfg.modality == "ct":
        from medrec.io.windows import apply_window

        c, w = window_values(cfg.channels)[0]
        return apply_window(image, c, max(w, 1.0))
    if cfg.modality == "mri" and cfg.intensity == "zscore":
        return np.clip((image + 3.0) / 6.0, 0.0, 1.0).astype(np.float32)
    return image


def window_values(channels: tuple) -> list[tuple[float, float]]:
    """(center, width) of each entry of `data.channels` (preset names or [center, width])."""
    from medrec.io.windows import named_windows

    return [(c, w) for _, c, w in named_windows(channels)]
