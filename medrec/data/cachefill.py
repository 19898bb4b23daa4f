"""Fill the in-memory cache in several processes: the deterministic preprocessing of every image.

Decoding is CPU-bound Python/C work that holds the GIL in places (Pillow, pydicom, numpy glue), so
threads (MONAI CacheDataset's `num_workers`) do not scale; processes do. `fill_cache` runs the
preprocessing chain over the items in `data.num_workers` DataLoader worker processes, in order, and
returns the preprocessed items. Images cross the process boundary as numpy arrays (pickled with the
item), not as shared-memory tensors, which would keep one file descriptor open per cached image.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

__all__ = ["fill_cache"]


class _Preprocessed(torch.utils.data.Dataset):
    def __init__(self, items: Sequence[dict], transform: Callable[[dict], dict]):
        self.items, self.transform = items, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        out = dict(self.transform(self.items[i]))
        out["image"] = np.asarray(out["image"])  # plain array: pickled through the queue
        return out


def _as_is(item: Any) -> Any:
    return item


def fill_cache(items: Sequence[dict], transform: Callable[[dict], dict], workers: int) -> list[dict]:
    """`transform(item)` for every item, in order, in `workers` processes (0: in this process), as
    `data.num_workers` means for a DataLoader.

    Returns the items with "image" as a MetaTensor, as MONAI's chain returns it (from the workers
    without the record of the deterministic steps, which nothing downstream of the cache inverts).
    """
    from monai.data import MetaTensor

    start = time.perf_counter()
    if workers <= 0 or len(items) < 2 * workers:
        # One thread for torch while filling, as DataLoader workers have: the tensors here are small
        # (one image at the target size), and a thread pool on a busy machine costs more than it gives.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            out = [transform(item) for item in items]
        finally:
            torch.set_num_threads(threads)
    else:
        loader = torch.utils.data.DataLoader(_Preprocessed(items, transform), batch_size=None, shuffle=False,
                                             num_workers=workers, collate_fn=_as_is, prefetch_factor=8)
        out = []
        for item in loader:
            item["image"] = MetaTensor(torch.from_numpy(item["image"]))
            out.append(item)
    seconds = time.perf_counter() - start
    log.info("cache filled: %d images in %.1f s (%.1f images/s, %d worker process(es), 0: this one)", len(out), seconds,
             len(out) / seconds if seconds > 0 else float("nan"), workers)
    return out
