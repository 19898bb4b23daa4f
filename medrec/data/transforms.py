"""MONAI transform chains built from the data config, per modality.

The chain is split where randomness starts:

- `preprocess_transforms` (read, scale, resize, pad, float16) is deterministic and cacheable.
  What it yields depends on `data.modality`: cxr, one channel in [0, 1] through `data.window`;
  ct, Hounsfield units (the windows come later, so that they can jitter); mri, the image
  scaled per image by `data.intensity` (z-score of the head, or percentiles to [0, 1]).
- `augment_transforms` (training only) are the random per-image items of `data.augment`, in
  the fixed order of `medrec.config.AUGMENT_ORDER`; rotate / zoom / affine run per batch in
  the loader's collate step (`medrec.data.augment.BatchAffine`).
- `window_transforms` turns CT's HU into one [0, 1] channel per window of `data.channels`
  (with the random jitter of `augment.window_jitter` during training).
- `finish_transforms` (float32, channels repeated to the model's `in_channels` if the data
  has one, normalised with the network's statistics) closes both chains.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import numpy as np
from monai.transforms import (
    CastToTyped,
    Compose,
    EnsureTyped,
    MapTransform,
    NormalizeIntensityd,
    RandAdjustContrastd,
    RandBiasFieldd,
    RandCoarseDropoutd,
    Randomizable,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RepeatChanneld,
    Resized,
    SpatialPadd,
)

from medrec.config import DataConfig
from medrec.data.manifest import slice_of
from medrec.data.reading import read_item, read_item_info, window_values
from medrec.errors import MedrecError

log = logging.getLogger(__name__)

ERROR_KEY = "load_error"
READ_KEY = "read_conversion"  # medrec.data.reading.ReadInfo.conversion of the image
SLICE_KEY = "slice"
CONTEXT_KEY = "context"  # [[path, slice], ...]: the 2k+1 slices an item is stacked from


# ----------------------------------------------------------------------------- loading


class LoadItemd(MapTransform):
    """Replace the path under `key` by a (1, H, W) float32 image (`read_item`).

    With `skip_bad`, a file that cannot be read becomes a 1x1 placeholder and the reason is
    kept under `load_error`, so one bad image in ten thousand does not end a long job: the
    caller drops such items before splitting and lists them in the run's errors.csv.
    A `slice` entry in the item picks the slice of a volume.
    """

    def __init__(self, key: str, cfg: DataConfig, reduce: bool = False):
        super().__init__([key])
        self.cfg, self.reduce = cfg, reduce  # reduce: early resolution reduction (medrec.io.reduce)

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        key = self.keys[0]
        try:
            refs = d.pop(CONTEXT_KEY, None)
            if refs:  # data.context_slices: the slice and its neighbours, lowest first (medrec.data.context)
                from medrec.data.context import stack_slices

                refs = [(str(p), slice_of(k)) for p, k in refs]
                d[key] = stack_slices([read_item(p, self.cfg, k, reduce=self.reduce) for p, k in refs], refs)
            else:
                image, info = read_item_info(str(d[key]), self.cfg, slice_of(d.get(SLICE_KEY)), reduce=self.reduce)
                d[key], d[READ_KEY] = image[None], info.conversion  # how it was read (run.json counts)
        except MedrecError as exc:
            if not self.cfg.skip_bad_images:
                raise
            d[key], d[ERROR_KEY] = np.zeros((1, 1, 1), np.float32), str(exc)
        return d


class _PadOffsetd(MapTransform):
    """Subtract (`restore=False`) or add back the image's minimum, so that the zero padding that
    follows fills with the darkest value of the image (air in HU, the background of a z-scored
    MRI) rather than with 0 (water in HU, the mean of the head in z-scores)."""

    def __init__(self, key: str, restore: bool):
        super().__init__([key])
        self.restore = restore

    def __call__(self, data: dict) -> dict:
        d, key = dict(data), self.keys[0]
        if self.restore:
            d[key] = d[key] + d.pop("pad_offset")
        else:
            d["pad_offset"] = float(d[key].min())
            d[key] = d[key] - d["pad_offset"]
        return d


def preprocess_transforms(cfg: DataConfig, *, reduce: bool = False) -> Compose:
    """Deterministic part of the chain: what the cache stores (float16 at the target size).

    `reduce` lets the reader reduce large images early (the cache fill; medrec.io.reduce); predict keeps
    it off so that Grad-CAM maps back onto the file's own grid."""
    size = cfg.image_size
    # Keep the aspect ratio: fit the longest side, then pad, so anatomy is not stretched.
    geometry = [Resized("image", spatial_size=size, size_mode="longest", mode="area"),
                SpatialPadd("image", spatial_size=(size, size))]
    if cfg.modality != "cxr":
        geometry = [_PadOffsetd("image", restore=False), *geometry, _PadOffsetd("image", restore=True)]
    # float16 keeps integer HU exactly up to 2048 and to 2 HU up to 4096, ample for any window.
    return Compose([LoadItemd("image", cfg, reduce), *geometry, CastToTyped("image", dtype=np.float16)])


# ----------------------------------------------------------------------------- CT windows


class WindowStackd(Randomizable, MapTransform):
    """(S, H, W) Hounsfield units -> (C, H, W) in [0, 1], one DICOM LINEAR window per channel.

    S is 1, or 2k+1 slices with `data.context_slices: k`; then C = windows x slices, window-major
    (all slices of the first window, then of the second, ...).

    With `jitter` (training), each window's center moves by up to +-jitter.center HU and its
    width by up to +-jitter.width relative, independently per channel, with probability
    jitter.prob per image: the HU are still there, so the jitter is exact, not an
    approximation on an already clipped image.
    """

    def __init__(self, key: str, windows: list[tuple[float, float]], jitter: Any = None):
        MapTransform.__init__(self, [key])
        self.windows, self.jitter = list(windows), jitter
        self._draw: list[tuple[float, float]] = self.windows

    def randomize(self, data: Any = None) -> None:
        j = self.jitter
        if j is None or self.R.random_sample() >= j.prob:
            self._draw = self.windows
            return
        self._draw = [(c + self.R.uniform(-j.center, j.center), w * (1 + self.R.uniform(-j.width, j.width)))
                      for c, w in self.windows]

    def __call__(self, data: dict) -> dict:
        from medrec.io.dicom import apply_window

        d, key = dict(data), self.keys[0]
        self.randomize()
        hu = np.asarray(d[key], dtype=np.float32)  # (S, H, W)
        centers = np.array([c for c, _ in self._draw], np.float32)[:, None, None, None]
        widths = np.array([w for _, w in self._draw], np.float32)[:, None, None, None]
        if (widths > 1).all():  # DICOM LINEAR (apply_window), all windows in one float32 pass
            out = np.clip((hu[None] - (centers - 0.5)) / (widths - 1) + 0.5, 0.0, 1.0)
        else:  # a width of 1 is a threshold: apply_window's special case
            out = np.stack([apply_window(hu, c, max(w, 1.0)) for c, w in self._draw])
        d[key] = out.reshape(-1, *hu.shape[1:])  # (windows x slices, H, W), window-major
        return d


def window_transforms(cfg: DataConfig, *, train: bool) -> list:
    """CT: the window stack (jittered when training and `augment.window_jitter` is on); else nothing."""
    if cfg.modality != "ct":
        return []
    jitter = cfg.augment.resolved(cfg.modality).get("window_jitter") if train else None
    return [WindowStackd("image", window_values(cfg.channels), jitter)]


# ----------------------------------------------------------------------------- augmentation


def augment_transforms(cfg: DataConfig) -> tuple[list, list]:
    """The per-image random items of `data.augment`: (spatial, intensity) MONAI transforms.

    The CT windows go between the two; rotate / zoom / affine run per batch (BatchAffine).
    """
    items = cfg.augment.resolved(cfg.modality)
    size = cfg.image_size
    spatial = []
    if "flip" in items:
        f = items["flip"]
        # (C, H, W) images: spatial axis 0 runs top to bottom, axis 1 left to right.
        spatial += [RandFlipd("image", prob=f.prob, spatial_axis={"up_down": 0, "left_right": 1}[a]) for a in f.axes]
    makers = {
        "bias_field": lambda a: RandBiasFieldd("image", degree=a.degree, coeff_range=a.coeff, prob=a.prob),
        "contrast": lambda a: RandAdjustContrastd("image", gamma=a.gamma, prob=a.prob),
        "scale_intensity": lambda a: RandScaleIntensityd("image", factors=a.factor, prob=a.prob),
        "shift_intensity": lambda a: RandShiftIntensityd("image", offsets=a.offset, prob=a.prob),
        "smooth": lambda a: RandGaussianSmoothd("image", sigma_x=a.sigma, sigma_y=a.sigma, prob=a.prob),
        "noise": lambda a: RandGaussianNoised("image", std=a.std, prob=a.prob),
        "coarse_dropout": lambda a: RandCoarseDropoutd("image", holes=a.holes, prob=a.prob, fill_value=a.fill,
                                                       spatial_size=max(1, round(a.size * size))),
    }
    intensity = [makers[name](item) for name, item in items.items() if name in makers]  # in AUGMENT_ORDER
    # float32 first: gamma and noise on float16 lose precision.
    return [CastToTyped("image", dtype=np.float32), *spatial], intensity


def finish_transforms(mean: list[float], std: list[float], in_channels: int) -> list:
    """Float32, repeat a single channel if the model takes k > 1, normalise with the given statistics."""
    chain: list = [CastToTyped("image", dtype=np.float32)]
    if in_channels > 1:
        chain.append(_RepeatSingleChanneld("image", in_channels))
    chain += [
        NormalizeIntensityd("image", subtrahend=np.asarray(mean, np.float32), divisor=np.asarray(std, np.float32),
                            channel_wise=True),
        EnsureTyped("image", track_meta=False),
    ]
    return chain


class _RepeatSingleChanneld(MapTransform):
    """A 1-channel image repeated to the model's k channels; a k-channel image (CT windows) as is."""

    def __init__(self, key: str, k: int):
        super().__init__([key])
        self.k, self.repeat = k, RepeatChanneld(key, repeats=k)

    def __call__(self, data: dict) -> dict:
        return self.repeat(data) if data[self.keys[0]].shape[0] == 1 else dict(data)


def train_transforms(cfg: DataConfig, mean: list[float], std: list[float], in_channels: int) -> Compose:
    """Per-image training chain: spatial items, CT windows, intensity items, finish."""
    spatial, intensity = augment_transforms(cfg)
    return Compose(spatial + window_transforms(cfg, train=True) + intensity + finish_transforms(mean, std, in_channels))


def eval_transforms(cfg: DataConfig, mean: list[float], std: list[float], in_channels: int) -> Compose:
    """Evaluation chain: CT windows (no jitter) and finish."""
    return Compose(window_transforms(cfg, train=False) + finish_transforms(mean, std, in_channels))


def preprocess_hash(cfg: DataConfig) -> str:
    """Hash of every setting that changes cached pixels, so a stale cache is never reused."""
    from medrec.io.limits import current_limits

    keys = ("image_size", "window", "frame", "source", "modality", "intensity", "slice", "context_slices", "color")
    # version 3: early reduction of large images; the io limits decide which files are cached as refused
    limits = current_limits()
    blob = json.dumps({k: getattr(cfg, k) for k in keys} | {"version": 3, "io": [limits.max_pixels, limits.max_bytes]},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
