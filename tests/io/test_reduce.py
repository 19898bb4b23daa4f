"""medrec.io.reduce through read_image and the cache's preprocessing: early reduction, measured closeness.

Truths: numpy block means computed here, Pillow's own draft scale, and the full-resolution path of
the same chain (`preprocess_transforms(cfg)` without `reduce`), which the reduced one must match
closely (the bound below is the one README states).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medrec.config import DataConfig
from medrec.io.images import read_image
from medrec.io.reduce import reduction_factor

sys.path.insert(0, str(Path(__file__).parent))
from test_color import radiograph  # noqa: E402


@pytest.mark.parametrize(("rows", "columns", "target", "k"), [
    (3000, 2000, 224, 6), (2000, 1700, 224, 4), (800, 600, 224, 1), (160, 160, 128, 1), (128, 128, 64, 1),
    (4000, 4000, None, 1),
])
def test_reduction_factor_keeps_twice_the_target(rows, columns, target, k):
    assert reduction_factor(rows, columns, target) == k
    if k > 1:
        assert max(rows, columns) / k >= 2 * target and max(rows, columns) / (k + 1) < 2 * target


def test_png_is_box_reduced_and_jpeg_drafted(tmp_path):
    grey = radiograph(0, 1800)[:, :1200]
    Image.fromarray(grey).save(tmp_path / "a.png")
    image, meta = read_image(tmp_path / "a.png", reduce_to=128)  # k = 1800 // 256 = 7
    assert meta["reduction"] == 7 and image.shape == (258, 172)  # ceil(1800 / 7), ceil(1200 / 7)
    blocks = grey[:1799, :1197].reshape(257, 7, 171, 7).astype(np.float64).mean(axis=(1, 3))
    np.testing.assert_allclose(image[:257, :171], blocks, atol=1.0)  # Pillow reduces L in whole levels
    Image.fromarray(grey).convert("RGB").save(tmp_path / "a.jpg", quality=90)
    image, meta = read_image(tmp_path / "a.jpg", reduce_to=128)
    with Image.open(tmp_path / "a.jpg") as im:
        im.draft("RGB", (1200 // 7 + 1, 1800 // 7 + 1))
        scale = 1200 // im.size[0]
    assert scale == 4 and meta["reduction"] == 4 and image.shape == (450, 300)
    assert meta["conversion"] == "rgb_identical"
    assert read_image(tmp_path / "a.png")[1]["reduction"] == 1  # not asked: full resolution


def test_reduced_preprocessing_is_close_to_full_resolution(tmp_path, write_dicom):
    from medrec.data.transforms import preprocess_transforms

    grey = radiograph(1, 2000)[:, :1700]
    Image.fromarray(grey).convert("RGB").save(tmp_path / "a.jpg", quality=90)
    Image.fromarray(grey).save(tmp_path / "a.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "b.png")
    write_dicom("c.dcm", grey.astype(np.uint16) * 16, modality="CR")  # no window: percentile scaling
    cfg = DataConfig(image_size=224)
    for name in ("a.jpg", "a.png", "b.png", "c.dcm"):
        item = {"image": str(tmp_path / name), "slice": -1}
        fast = np.asarray(preprocess_transforms(cfg, reduce=True)(item)["image"], np.float32)
        full = np.asarray(preprocess_transforms(cfg)(item)["image"], np.float32)
        diff = np.abs(fast - full)
        assert fast.shape == full.shape == (1, 224, 224)
        assert diff.mean() < 1.0 / 255 and diff.max() < 16 / 255, (name, diff.mean() * 255, diff.max() * 255)
