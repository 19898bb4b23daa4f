"""Cached datasets: preprocess every image once per run, then serve folds from the cache.

The deterministic preprocessing (read, window, resize, float16) runs once for the whole
manifest, not once per fold: `medrec.data.cachefill` keeps it in memory (filled by
`data.num_workers` processes), PersistentDataset on disk (under a folder keyed by the
preprocessing hash), and `cache: none` recomputes it on every access. Folds are index views over that one base dataset with their own random chain.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from monai.data import Dataset, PersistentDataset

from medrec.config import DataConfig
from medrec.data.manifest import Manifest, table_slices
from medrec.data.reading import ReadCounts, ReadInfo
from medrec.data.transforms import ERROR_KEY, READ_KEY, preprocess_hash, preprocess_transforms

log = logging.getLogger(__name__)


def manifest_items(manifest: Manifest, cfg: DataConfig | None = None) -> list[dict]:
    """One dict per row: the image path, its row index, its label(s) as arrays and its slice (-1: default).

    With `cfg.context_slices` > 0, `context` lists the 2k+1 [path, slice] the item is stacked from
    (`medrec.data.context`).
    """
    labels, table = manifest.labels, manifest.table
    slices = table_slices(table)
    items = [{"image": p, "index": i, "label": labels[i], "slice": -1 if k is None else k}
             for i, (p, k) in enumerate(zip(table["path"], slices))]
    if cfg is not None and cfg.context_slices > 0:
        from medrec.data.context import context_refs

        for item, refs in zip(items, context_refs(table, cfg.context_slices, cfg.slice)):
            item["context"] = [[p, -1 if k is None else k] for p, k in refs]
    return items


def build_base_dataset(manifest: Manifest, cfg: DataConfig, cache_root: Path, *, progress: bool = True):
    """The preprocessed dataset over the whole manifest, and the list of (row, reason) read errors."""
    items = manifest_items(manifest, cfg)
    pre = preprocess_transforms(cfg, reduce=True)  # large images reduced as early as image_size allows
    if cfg.cache == "memory":
        from medrec.data.cachefill import fill_cache  # data.num_workers processes, not threads

        base = Dataset(fill_cache(items, pre, cfg.num_workers), transform=None)
    elif cfg.cache == "disk":
        cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else cache_root
        cache_dir = cache_dir / preprocess_hash(cfg)
        cache_dir.mkdir(parents=True, exist_ok=True)
        base = PersistentDataset(items, pre, cache_dir=cache_dir)
    else:
        base = Dataset(items, pre)
    # how the images were read: counts for run.json, (row, conversion) of those not stored grey
    errors, base.read_counts, base.read_conversions = _scan(base)
    return base, errors


def _scan(base) -> tuple[list[tuple[int, str]], ReadCounts, list[tuple[int, str]]]:
    """Read errors, read counts and conversions, filling disk caches on the way."""
    errors, counts, conversions = [], ReadCounts(), []
    for i in range(len(base)):
        item = base[i]
        if ERROR_KEY in item:
            errors.append((i, item[ERROR_KEY]))
            counts.add(error=item[ERROR_KEY])
            continue
        counts.add(ReadInfo(item.get(READ_KEY, "grey")))
        if item.get(READ_KEY, "grey") != "grey":
            conversions.append((i, item[READ_KEY]))
    return errors, counts, conversions


class FoldDataset(torch.utils.data.Dataset):
    """Rows `indices` of the base dataset, passed through `transform` (random for training)."""

    def __init__(self, base, indices: np.ndarray, transform):
        self.base = base
        self.indices = np.asarray(indices)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> dict:
        item = dict(self.base[int(self.indices[j])])
        out = self.transform({"image": item["image"]})
        return {"image": out["image"], "label": torch.tensor(np.array(item["label"])), "index": item["index"]}
