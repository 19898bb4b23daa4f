"""medrec.data.cachefill: the cache filled by worker processes equals the one filled in this process."""

from __future__ import annotations

import numpy as np
from PIL import Image

from medrec.config import DataConfig
from medrec.data.cachefill import fill_cache
from medrec.data.transforms import ERROR_KEY, preprocess_transforms


def test_worker_processes_fill_the_same_cache_in_order(tmp_path):
    rng = np.random.default_rng(0)
    items = []
    for i in range(9):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (40 + 3 * i, 50), dtype=np.uint8)).save(path)
        items.append({"image": str(path), "index": i, "label": np.array([i % 2]), "slice": -1})
    (tmp_path / "bad.png").write_bytes(b"not a png")
    items.append({"image": str(tmp_path / "bad.png"), "index": 9, "label": np.array([0]), "slice": -1})
    pre = preprocess_transforms(DataConfig(image_size=32), reduce=True)
    here, workers = fill_cache(items, pre, 0), fill_cache(items, pre, 2)
    assert [d["index"] for d in workers] == list(range(10))
    for a, b in zip(here, workers):
        np.testing.assert_array_equal(np.asarray(a["image"]), np.asarray(b["image"]))
        assert a.get(ERROR_KEY) == b.get(ERROR_KEY)
    assert "bad.png" in workers[9][ERROR_KEY] and ERROR_KEY not in workers[0]
