"""MONAI transform chains built from the data config.

The chain is split where randomness starts: `preprocess_transforms` (read, window, resize,
cast to float16) is deterministic and cacheable; `augment_transforms` is random and runs
every epoch; `finish_transforms` (normalise with the weights' statistics, float32 tensor)
closes both the training and the evaluation chain.
"""

from __future__ import annotations

import hashlib
import json
import logging

import numpy as np
from monai.transforms import (
    CastToTyped,
    Compose,
    EnsureTyped,
    MapTransform,
    NormalizeIntensityd,
    RandAdjustContrastd,
    RandGaussianNoised,
    RepeatChanneld,
    Resized,
    SpatialPadd,
)

from medrec.config import DataConfig
from medrec.data.manifest import NPZ_SEP
from medrec.errors import MedrecError

log = logging.getLogger(__name__)

ERROR_KEY = "load_error"


def read_item(path: str, cfg: DataConfig) -> np.ndarray:
    """Read one image as float32 (H, W) in [0, 1], whatever its format."""
    if NPZ_SEP in path:
        from medrec.data.sources import read_npz_item

        return read_npz_item(path)
    from medrec.io.images import read_image

    window = tuple(cfg.window) if isinstance(cfg.window, (list, tuple)) else cfg.window
    array, _ = read_image(path, frame=cfg.frame, window=window)
    return np.asarray(array, dtype=np.float32)


class LoadItemd(MapTransform):
    """Replace the path under `key` by a (1, H, W) float32 image in [0, 1].

    With `skip_bad`, a file that cannot be read becomes a 1x1 placeholder and the reason is
    kept under `load_error`, so one bad image in ten thousand does not end a long job: the
    caller drops such items before splitting and lists them in the run's errors.csv.
    """

    def __init__(self, key: str, cfg: DataConfig):
        super().__init__([key])
        self.cfg = cfg

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        key = self.keys[0]
        try:
            d[key] = read_item(str(d[key]), self.cfg)[None]
        except MedrecError as exc:
            if not self.cfg.skip_bad_images:
                raise
            d[key], d[ERROR_KEY] = np.zeros((1, 1, 1), np.float32), str(exc)
        return d


def preprocess_transforms(cfg: DataConfig) -> Compose:
    """Deterministic part of the chain: what the cache stores (float16 at the target size)."""
    size = cfg.image_size
    return Compose([
        LoadItemd("image", cfg),
        # Keep the aspect ratio: fit the longest side, then pad, so anatomy is not stretched.
        Resized("image", spatial_size=size, size_mode="longest", mode="area"),
        SpatialPadd("image", spatial_size=(size, size)),
        CastToTyped("image", dtype=np.float16),
    ])


def augment_transforms(cfg: DataConfig) -> list:
    """Per-image random intensity augmentations ("standard"); no flips (left-right anatomy matters
    on chest films). The random affine of "light" and "standard" runs per batch:
    `medrec.data.augment.BatchAffine`, the training loader's collate step."""
    if cfg.augment != "standard":
        return []
    return [RandAdjustContrastd("image", prob=0.3, gamma=(0.8, 1.25)),
            RandGaussianNoised("image", prob=0.2, std=0.02)]


def finish_transforms(mean: list[float], std: list[float], in_channels: int) -> list:
    """Float32, replicate channels if the model takes k > 1, normalise with the weights' statistics."""
    chain: list = [CastToTyped("image", dtype=np.float32)]
    if in_channels > 1:
        chain.append(RepeatChanneld("image", repeats=in_channels))
    chain += [
        NormalizeIntensityd("image", subtrahend=np.asarray(mean, np.float32), divisor=np.asarray(std, np.float32),
                            channel_wise=True),
        EnsureTyped("image", track_meta=False),
    ]
    return chain


def train_transforms(cfg: DataConfig, mean: list[float], std: list[float], in_channels: int) -> Compose:
    return Compose(augment_transforms(cfg) + finish_transforms(mean, std, in_channels))


def eval_transforms(mean: list[float], std: list[float], in_channels: int) -> Compose:
    return Compose(finish_transforms(mean, std, in_channels))


def preprocess_hash(cfg: DataConfig) -> str:
    """Hash of every setting that changes cached pixels, so a stale cache is never reused."""
    keys = ("image_size", "window", "frame", "source")
    blob = json.dumps({k: getattr(cfg, k) for k in keys} | {"version": 1}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
