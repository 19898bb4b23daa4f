"""Read one image the way `data.modality` wants it, without MONAI or torch.

`read_item` is the first step of the training chain (`medrec.data.transforms.LoadItemd`);
`display_image` is the same read as one [0, 1] channel for people (report thumbnails, Grad-CAM
overlays). Kept free of MONAI and torch so that a report can be rebuilt on any machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from medrec.config import DataConfig
from medrec.data.manifest import NPZ_SEP
from medrec.errors import ImageError

# z-scores beyond this are clipped: a few extreme voxels (vessels, fat) must not set the scale.
ZSCORE_CLIP = 5.0


@dataclass(frozen=True)
class ReadInfo:
    """How one image was read: `conversion` is medrec.io.color.Conversion.kind (grey, rgb_identical,
    rgb_near_grey, rgb_luma, palette); `alpha` none | opaque | not_opaque."""

    conversion: str = "grey"
    alpha: str = "none"


def read_item(path: str, cfg: DataConfig, slice_index: int | None = None, *, reduce: bool = False) -> np.ndarray:
    """Read one image as float32 (H, W) as `data.modality` wants it (`read_item_info`, without the info)."""
    return read_item_info(path, cfg, slice_index, reduce=reduce)[0]


def read_item_info(
    path: str, cfg: DataConfig, slice_index: int | None = None, *, reduce: bool = False
) -> tuple[np.ndarray, ReadInfo]:
    """Read one image as float32 (H, W) as `data.modality` wants it, and say how it was read.

    Args:
        slice_index: the slice of a volume (NIfTI third axis, multi-frame DICOM frame); default
            `data.slice` when it is a number, else the middle one.
        reduce: let the reader reduce resolution early towards `data.image_size` (the cache fill,
            which resizes to it next; `medrec.io.reduce`). Off for predict's Grad-CAM geometry and display.

    Raises:
        MedrecError: the file cannot be read, or does not carry the units the modality needs
            (an ImageError subclass says why: `refusal_reason`).
    """
    if NPZ_SEP in path:
        from medrec.data.sources import read_npz_item

        image = read_npz_item(path)
        return (scale_intensity(image, cfg.intensity) if cfg.modality == "mri" else image), ReadInfo()
    from medrec.io.images import read_image

    if slice_index is None and isinstance(cfg.slice, int):
        slice_index = cfg.slice
    color = getattr(cfg, "color", "auto")
    window = None
    if cfg.modality == "cxr":
        window = tuple(cfg.window) if isinstance(cfg.window, (list, tuple)) else cfg.window
    array, meta = read_image(path, frame=cfg.frame, window=window, slice_index=slice_index, color=color,
                             reduce_to=cfg.image_size if reduce else None)
    info = ReadInfo(meta.get("conversion", "grey"), meta.get("alpha", "none"))
    if cfg.modality == "cxr":
        return np.asarray(array, dtype=np.float32), info
    if cfg.modality == "ct":
        if meta.get("format") not in ("dicom", "nifti"):
            raise ImageError(f"{path}: data.modality ct needs Hounsfield units, but this is a {meta['format']} "
                             "image; use DICOM or NIfTI CT files, or data.modality cxr for exported pictures")
        return np.asarray(array, dtype=np.float32), info
    return scale_intensity(array, cfg.intensity), info


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


# --------------------------------------------------------------------------- counting outcomes

REFUSAL_REASONS = ("colour", "too_large", "unreadable")
# How a conversion is said in a summary line; "grey" (stored grey) is not a conversion.
_CONVERSION_WORDS = {"rgb_identical": "RGB with equal channels read as grey",
                     "rgb_near_grey": "near-grey RGB read as grey", "rgb_luma": "colour converted to luma",
                     "palette": "palette images read through the palette"}


def refusal_reason(error: BaseException | str) -> str:
    """colour | too_large | unreadable for an exception, or for its message as kept in a cache item."""
    from medrec.errors import ColourImageError, ImageTooLargeError

    if isinstance(error, ColourImageError):
        return "colour"
    if isinstance(error, ImageTooLargeError):
        return "too_large"
    text = str(error)
    if isinstance(error, str) and ": colour image (" in text:
        return "colour"
    if isinstance(error, str) and ("io.max_pixels" in text or "io.max_bytes" in text):
        return "too_large"
    return "unreadable"


@dataclass
class ReadCounts:
    """The flow of images of a run: listed -> read (and how) -> refused (by reason).

    `add` one outcome per listed image; `to_dict` goes into run.json, `summary` into the report.
    """

    listed: int = 0
    read: int = 0
    conversions: dict[str, int] = field(default_factory=dict)
    alpha_not_opaque: int = 0
    refused: dict[str, int] = field(default_factory=dict)

    def add(self, info: ReadInfo | None = None, error: BaseException | str | None = None) -> None:
        """Count one image: read with `info`, or refused with `error` (exception or its message)."""
        self.listed += 1
        if error is not None:
            reason = refusal_reason(error)
            self.refused[reason] = self.refused.get(reason, 0) + 1
            return
        self.read += 1
        info = info or ReadInfo()
        if info.conversion != "grey":
            self.conversions[info.conversion] = self.conversions.get(info.conversion, 0) + 1
        self.alpha_not_opaque += info.alpha == "not_opaque"

    def to_dict(self) -> dict:
        return {"listed": self.listed, "read": self.read, "converted": dict(sorted(self.conversions.items())),
                "alpha_not_opaque": self.alpha_not_opaque, "refused": dict(sorted(self.refused.items()))}

    def summary(self) -> str:
        """e.g. '527 images listed, 385 read (131 near-grey RGB read as grey), 142 refused (11 colour, 131
        unreadable)'."""
        how = ", ".join(f"{n} {_CONVERSION_WORDS.get(k, k)}" for k, n in sorted(self.conversions.items()))
        refused = sum(self.refused.values())
        why = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(self.refused.items()))
        return (f"{self.listed} images listed, {self.read} read" + (f" ({how})" if how else "")
                + f", {refused} refused" + (f" ({why})" if why else ""))
