"""medrec.data.reading: how each image was read, and the counts a run reports.

Truths: the files the test writes (grey, grey saved as RGB, a coloured figure, a 144-pixel limit),
counted by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medrec.config import DataConfig
from medrec.data.reading import ReadCounts, ReadInfo, read_item_info, refusal_reason
from medrec.errors import ColourImageError, ImageError, ImageTooLargeError
from medrec.io.limits import Limits, use_limits


@pytest.fixture()
def folder(tmp_path):
    grey = np.random.default_rng(0).integers(0, 256, (12, 12), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    Image.fromarray(grey).convert("RGB").save(tmp_path / "rgb.png")
    colour = np.dstack([grey, grey // 2, 255 - grey])
    Image.fromarray(colour, "RGB").save(tmp_path / "colour.png")
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "big.png")
    (tmp_path / "broken.png").write_bytes(b"no")
    return tmp_path


def count(folder, cfg: DataConfig) -> ReadCounts:
    counts = ReadCounts()
    with use_limits(Limits(max_pixels=144)):
        for name in ("grey.png", "rgb.png", "colour.png", "big.png", "broken.png"):
            try:
                counts.add(read_item_info(str(folder / name), cfg)[1])
            except ImageError as exc:
                counts.add(error=exc)
    return counts


def test_counts_of_a_mixed_folder(folder):
    auto = count(folder, DataConfig())
    assert auto.to_dict() == {"listed": 5, "read": 2, "converted": {"rgb_identical": 1}, "alpha_not_opaque": 0,
                              "refused": {"colour": 1, "too_large": 1, "unreadable": 1}}
    assert auto.summary() == ("5 images listed, 2 read (1 RGB with equal channels read as grey), "
                              "3 refused (1 colour, 1 too large, 1 unreadable)")
    convert = count(folder, DataConfig(color="convert"))
    assert convert.conversions == {"rgb_identical": 1, "rgb_luma": 1} and convert.refused == {"too_large": 1,
                                                                                             "unreadable": 1}
    strict = count(folder, DataConfig(color="strict"))
    assert strict.read == 1 and strict.refused == {"colour": 2, "too_large": 1, "unreadable": 1}


def test_refusal_reason_from_exceptions_and_cached_messages(folder):
    with pytest.raises(ColourImageError) as colour:
        read_item_info(str(folder / "colour.png"), DataConfig())
    with use_limits(Limits(max_pixels=10)), pytest.raises(ImageTooLargeError) as big:
        read_item_info(str(folder / "big.png"), DataConfig())
    assert refusal_reason(colour.value) == refusal_reason(str(colour.value)) == "colour"
    assert refusal_reason(big.value) == refusal_reason(str(big.value)) == "too_large"
    assert refusal_reason("x.dcm: cannot read pixel data") == "unreadable"
    assert read_item_info(str(folder / "grey.png"), DataConfig())[1] == ReadInfo("grey", "none")


def test_a_training_run_records_how_its_images_were_read(samples_run, samples_manifest):
    import json

    import pandas as pd

    run, _ = samples_run
    n = len(pd.read_csv(samples_manifest))
    images = json.loads((run / "run.json").read_text())["images"]
    assert images == {"listed": n, "read": n, "converted": {}, "alpha_not_opaque": 0, "refused": {}}
    assert pd.read_csv(run / "conversions.csv").empty  # DICOM samples: all stored grey
