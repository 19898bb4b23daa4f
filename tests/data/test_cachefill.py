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


def test_base_dataset_counts_how_images_were_read(tmp_path):
    from medrec.data.datasets import build_base_dataset
    from medrec.data.sources import load_source

    grey = np.random.default_rng(1).integers(0, 256, (20, 20), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    Image.fromarray(grey).convert("RGB").save(tmp_path / "rgb.png")
    Image.fromarray(np.dstack([grey, 255 - grey, grey]), "RGB").save(tmp_path / "colour.png")
    (tmp_path / "m.csv").write_text("path,patient_id,label\ng.png,p1,0\nrgb.png,p2,1\ncolour.png,p3,0\n")
    cfg = DataConfig(manifest=str(tmp_path / "m.csv"), image_size=16, num_workers=0)
    base, errors = build_base_dataset(load_source(cfg, tmp_path), cfg, tmp_path / "cache")
    assert [i for i, _ in errors] == [2] and "colour image" in errors[0][1]
    assert base.read_counts.to_dict() == {"listed": 3, "read": 2, "converted": {"rgb_identical": 1},
                                          "alpha_not_opaque": 0, "refused": {"colour": 1}}
    assert base.read_conversions == [(1, "rgb_identical")]


def test_disk_cache_key_follows_colour_mode_and_size_limits():
    from medrec.data.transforms import preprocess_hash
    from medrec.io.limits import Limits, use_limits

    base = preprocess_hash(DataConfig())
    assert preprocess_hash(DataConfig(color="convert")) != base  # colour images: refused vs converted
    with use_limits(Limits(max_pixels=1000)):
        assert preprocess_hash(DataConfig()) != base  # which files are cached as refused
    assert preprocess_hash(DataConfig()) == base
