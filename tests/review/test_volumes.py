"""medrec.review.cases on a CT volume run: a case is one slice of a volume, read as that slice."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medrec.review import cases as C
from medrec.review import display as D
from medrec.review import paths as P

from .conftest import build_volume_run, ct_volume


def _slice_truth(path: Path, k: int) -> np.ndarray:
    """nibabel's slice k, transposed as medrec.io.images.read_nifti returns it (rows = second voxel axis)."""
    return np.asarray(nib.load(str(path)).dataobj[:, :, k], dtype=np.float32).T


def test_slices_of_one_volume_are_separate_cases_showing_their_own_pixels(volume_run: Path):
    run = C.load_run(volume_run)
    cases = C.view(run, "bleed")
    assert cases["image_id"].tolist() == ["head-s1", "head-s3", "head"]
    assert cases["path"].nunique() == 1  # one file, three cases
    shown = {}
    for _, row in cases.iterrows():
        k = D.case_slice(run, row["slice"])
        img = D.prepare_display(P.case_path(run, row["path"]), slice_index=k, frame=D.case_frame(run))
        shown[row["image_id"]] = img
        assert img.meta["slice_index"] == (2 if k is None else k)  # no slice: the middle one
    path = P.case_path(run, cases["path"].iloc[0])
    for image_id, k in (("head-s1", 1), ("head-s3", 3), ("head", 2)):
        np.testing.assert_array_equal(shown[image_id].pixels, _slice_truth(path, k))
        np.testing.assert_array_equal(shown[image_id].pixels, ct_volume()[:, :, k].T)  # HU, no window
    assert not np.array_equal(shown["head-s1"].pixels, shown["head-s3"].pixels)
    assert D.slice_caption(shown["head-s3"].meta, 3) == "slice 3 of volume (0–4)"


def test_without_image_ids_the_slice_keeps_cases_apart(tmp_path: Path):
    run = C.load_run(build_volume_run(tmp_path, image_ids=False))
    assert run.cases["image_id"].tolist() == ["head.nii.gz-s1", "head.nii.gz-s3", "head.nii.gz"]
    assert run.cases["slice"].tolist()[:2] == [1, 3] and pd.isna(run.cases["slice"].iloc[2])


def test_ct_run_windows_come_from_data_channels_in_order(volume_run: Path):
    run = C.load_run(volume_run)
    assert run.data_cfg is not None and run.data_cfg.modality == "ct"
    assert list(D.run_windows(run).items()) == [
        ("brain (40/80)", (40.0, 80.0)),
        ("subdural (80/200)", (80.0, 200.0)),
        ("bone (400/1800)", (400.0, 1800.0)),
    ]


def test_fixed_slice_of_the_config_applies_to_rows_without_one(volume_run: Path, run_dir: Path):
    run = C.load_run(volume_run)
    fixed = dataclasses.replace(run, data_cfg=run.data_cfg.model_copy(update={"slice": 4}))
    assert D.case_slice(fixed, np.nan) == 4 and D.case_slice(fixed, -1) == 4 and D.case_slice(fixed, 1) == 1
    assert D.case_slice(run, np.nan) is None  # slice: all, no slice in the row: the middle one
    cxr = C.load_run(run_dir)  # a radiograph run: no CT windows, no slice caption for a PNG
    assert D.run_windows(cxr) == {}
    png = D.prepare_display(P.case_path(cxr, cxr.cases["path"].iloc[0]))
    assert D.slice_caption(png.meta, None) is None


@pytest.mark.parametrize("broken", ["missing", "invalid"])
def test_review_works_without_a_readable_config(volume_run: Path, broken: str):
    cfg = volume_run / "config.yaml"
    if broken == "missing":
        cfg.unlink()
    else:
        cfg.write_text("data: {modality: pet}\n")
    run = C.load_run(volume_run)
    assert run.data_cfg is None and D.run_windows(run) == {}
    assert len(run.cases) == 3
