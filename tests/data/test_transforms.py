"""Modality preprocessing (cxr / ct / mri), CT window stacks, MRI scaling, slices and augmentation chains."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from pydicom.dataset import Dataset
from pydicom.pixels import apply_windowing

from medrec.config import validate_config
from medrec.data.datasets import manifest_items
from medrec.data.manifest import validate_manifest
from medrec.data.sources import expand_slices
from medrec.data.reading import ZSCORE_CLIP, read_item, scale_intensity, window_values
from medrec.data.transforms import (
    augment_transforms,
    eval_transforms,
    preprocess_transforms,
    train_transforms,
)
from medrec.errors import ImageError
from medrec.models.adapt import input_normalization  # normalisation belongs to the models
from medrec.io.dicom import WINDOW_PRESETS
from medrec.io.images import read_image
from tests.io.conftest import build_dataset

WINDOWS = ["brain", "subdural", "bone"]


def data_cfg(**data):
    return validate_config({"data": data}).data


def pydicom_window(hu: np.ndarray, center: float, width: float) -> np.ndarray:
    """pydicom's LINEAR VOI window of `hu`, rescaled to [0, 1] with two far-out sentinels."""
    ds = Dataset()
    ds.PhotometricInterpretation, ds.BitsStored, ds.PixelRepresentation = "MONOCHROME2", 16, 1
    ds.WindowCenter, ds.WindowWidth = center, width
    sentinels = np.array([center - 100 * width, center + 100 * width])
    out = apply_windowing(np.concatenate([hu.ravel(), sentinels]).astype(np.float64), ds)
    return ((out[:-2] - out[-2]) / (out[-1] - out[-2])).reshape(hu.shape)


@pytest.fixture
def ct_file(tmp_path):
    """A 48x48 CT slice in HU (stored unsigned with intercept -1024) covering air to dense bone."""
    rng = np.random.default_rng(0)
    hu = rng.integers(-1024, 2000, size=(48, 48)).astype(np.int32)
    hu[:8] = np.arange(48)[None, :] * 3 + 20  # a band of brain-range values, so narrow windows get detail
    ds = build_dataset((hu + 1024).astype(np.uint16), RescaleSlope=1, RescaleIntercept=-1024)
    path = tmp_path / "ct.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path, hu


def test_ct_window_stack_equals_the_single_windows_applied_one_by_one(ct_file):
    path, hu = ct_file
    cfg = data_cfg(modality="ct", channels=WINDOWS, image_size=48, augment="none", skip_bad_images=False)
    pre = preprocess_transforms(cfg)({"image": str(path)})
    stack = eval_transforms(cfg, [0.0] * 3, [1.0] * 3, 3)({"image": pre["image"]})["image"].numpy()
    assert stack.shape == (3, 48, 48)
    for k, name in enumerate(WINDOWS):
        single, _ = read_image(path, window=name)  # medrec's one-window path (read_dicom)
        np.testing.assert_allclose(stack[k], single, atol=1e-6)
        np.testing.assert_allclose(stack[k], pydicom_window(hu, *WINDOW_PRESETS[name]), atol=1e-5)
    # and the three really differ: each window shows something the others clip
    assert min(np.abs(stack[i] - stack[j]).max() for i in range(3) for j in range(i + 1, 3)) > 0.3


def test_ct_stack_after_resizing_windows_the_resized_hounsfield_units(ct_file):
    path, _ = ct_file
    cfg = data_cfg(modality="ct", channels=["brain", [300, 1500]], image_size=24, augment="none")
    pre = preprocess_transforms(cfg)({"image": str(path)})
    hu = np.asarray(pre["image"], dtype=np.float64)[0]
    assert hu.min() < -500 and hu.max() > 1000  # the cache holds HU, not a window
    stack = eval_transforms(cfg, [0.0] * 2, [1.0] * 2, 2)({"image": pre["image"]})["image"].numpy()
    for k, (c, w) in enumerate(window_values(cfg.channels)):
        np.testing.assert_allclose(stack[k], pydicom_window(hu, c, w), atol=1e-5)


def test_ct_window_jitter_moves_the_windows_only_within_bounds_and_only_when_training(ct_file):
    path, _ = ct_file
    cfg = data_cfg(modality="ct", channels=["brain"], image_size=48,
                   augment={"preset": "none", "window_jitter": {"prob": 1.0, "center": 15, "width": 0.2}})
    pre = preprocess_transforms(cfg)({"image": str(path)})
    hu = np.asarray(pre["image"], dtype=np.float64)[0]
    plain = eval_transforms(cfg, [0.0], [1.0], 1)({"image": pre["image"]})["image"].numpy()[0]
    np.testing.assert_allclose(plain, pydicom_window(hu, 40, 80), atol=1e-5)
    chain = train_transforms(cfg, [0.0], [1.0], 1)
    chain.set_random_state(seed=1)
    outs = [chain({"image": pre["image"]})["image"].numpy()[0] for _ in range(20)]
    assert all(not np.allclose(o, plain) for o in outs)
    band = hu[:8].ravel()  # 20..161 HU: the brain window's ramp, where a moved window shows
    drawn = []
    for o in outs:
        y = o[:8].ravel()
        inside = (y > 0.01) & (y < 0.99)
        slope, icpt = np.polyfit(band[inside], y[inside], 1)  # LINEAR: y = (x - c + 0.5) / (w - 1) + 0.5
        w = 1 / slope + 1
        c = 0.5 - (icpt - 0.5) * (w - 1)
        np.testing.assert_allclose(y, pydicom_window(band, c, w), atol=1e-4)  # still exactly a LINEAR window
        drawn.append((c, w))
    c, w = np.array(drawn).T
    assert np.all(np.abs(c - 40) <= 15 + 1e-3) and np.all(np.abs(w / 80 - 1) <= 0.2 + 1e-4)
    assert np.ptp(c) > 10 and np.ptp(w) > 15  # and the draws spread over the range


def test_modality_ct_refuses_pictures_without_hounsfield_units(tmp_path):
    from PIL import Image

    png = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(png)
    with pytest.raises(ImageError, match="Hounsfield"):
        read_item(str(png), data_cfg(modality="ct", channels=["brain"]))


def write_nifti(path, volume, slope=None):
    img = nib.Nifti1Image(volume, np.diag([2.0, 2.0, 4.0, 1.0]))
    if slope is not None:
        img.header.set_slope_inter(slope, 0)
    nib.save(img, str(path))
    return path


def head_volume(seed=0, shape=(40, 40, 5)):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    head = ((yy - 20) ** 2 + (xx - 20) ** 2) < 15 ** 2
    vol = np.abs(rng.normal(0, 3, shape))  # background noise (Rician-like, never exactly 0)
    for k in range(shape[2]):
        vol[..., k] += head * (100 + 10 * k + rng.normal(0, 8, shape[:2]))
    return vol.astype(np.float32)


def test_mri_zscore_ignores_the_scanner_scale_and_normalises_the_head(tmp_path):
    vol = head_volume()
    a = write_nifti(tmp_path / "a.nii.gz", vol)
    b = write_nifti(tmp_path / "b.nii.gz", vol * 37.0 + 500.0)  # another scanner's units
    cfg = data_cfg(modality="mri", intensity="zscore")
    za, zb = read_item(str(a), cfg), read_item(str(b), cfg)
    np.testing.assert_allclose(za, zb, atol=1e-4)
    head = read_image(a, window=None)[0] > 50
    assert abs(za[head].mean()) < 0.05 and abs(za[head].std() - 1) < 0.05
    assert za[~head].mean() < -3 and za.min() >= -ZSCORE_CLIP
    assert input_normalization(validate_config({"data": {"modality": "mri"}})) == ([0.0], [1.0])


def test_mri_percentile_scaling_is_scale_free_and_in_unit_range(tmp_path):
    vol = head_volume(1)
    a = write_nifti(tmp_path / "a.nii", vol)
    b = write_nifti(tmp_path / "b.nii", vol * 0.01)
    cfg = data_cfg(modality="mri", intensity="percentile")
    pa, pb = read_item(str(a), cfg), read_item(str(b), cfg)
    np.testing.assert_allclose(pa, pb, atol=1e-5)
    assert pa.min() == 0 and pa.max() == 1
    # percentile-scaled images use the network's statistics, not (0, 1)
    assert input_normalization(validate_config({"data": {"modality": "mri", "intensity": "percentile"}}))[0] != [0.0]


def test_slice_all_makes_one_sample_per_slice_of_each_volume_with_its_patient(tmp_path):
    write_nifti(tmp_path / "v1.nii.gz", head_volume(0, (40, 40, 5)))
    write_nifti(tmp_path / "v2.nii.gz", head_volume(1, (40, 40, 3)))
    table = pd.DataFrame({"path": [str(tmp_path / "v1.nii.gz"), str(tmp_path / "v2.nii.gz")],
                          "patient_id": ["A", "B"], "label": [1, 0]})
    expanded = expand_slices(table)
    m = validate_manifest(expanded, task="binary", label_columns=("label",), source="t", data_root=str(tmp_path))
    t = m.table
    assert len(t) == 8 and t["slice"].tolist() == [0, 1, 2, 3, 4, 0, 1, 2]
    assert t["patient_id"].tolist() == ["A"] * 5 + ["B"] * 3 and t["label"].tolist() == [1] * 5 + [0] * 3
    assert t["image_id"].is_unique
    cfg = data_cfg(modality="mri", slice="all", image_size=40, augment="none")
    pre = preprocess_transforms(cfg)
    for item, (path, k) in zip(manifest_items(m), zip(t["path"], t["slice"])):
        got = np.asarray(pre(item)["image"], dtype=np.float32)[0]
        raw = np.asarray(nib.load(path).dataobj[:, :, int(k)], dtype=np.float64).T
        np.testing.assert_allclose(got, scale_intensity(raw, "zscore"), atol=5e-3)  # float16 cache


def test_a_manifest_slice_column_is_kept_and_duplicates_need_distinct_slices(tmp_path):
    path = str(write_nifti(tmp_path / "v.nii.gz", head_volume(0, (40, 40, 4))))
    table = pd.DataFrame({"path": [path, path], "patient_id": ["A", "A"], "label": [0, 1], "slice": [3, 1]})
    assert expand_slices(table)["slice"].tolist() == [3, 1]  # explicit slices are not expanded
    from medrec.errors import DataError

    with pytest.raises(DataError, match="listed twice"):
        validate_manifest(table.assign(slice=[2, 2]), task="binary", label_columns=("label",), source="t",
                          data_root=str(tmp_path))


@pytest.mark.parametrize("preset, flips", [("cxr", False), ("standard", False), ("light", False), ("ct", True),
                                           ("mri", True)])
def test_only_the_cross_sectional_presets_flip(preset, flips):
    modality = "ct" if preset == "ct" else "mri" if preset == "mri" else "cxr"
    extra = {"channels": ["brain"]} if modality == "ct" else {}
    cfg = data_cfg(modality=modality, augment=preset, **extra)
    spatial, _ = augment_transforms(cfg)
    names = [type(t).__name__ for t in spatial]
    assert ("RandFlipd" in names) == flips


def test_configured_intensity_items_become_monai_transforms_with_their_parameters():
    cfg = data_cfg(augment={"preset": "none", "noise": {"prob": 0.4, "std": 0.07},
                            "coarse_dropout": {"holes": 3, "size": 0.25}}, image_size=64)
    _, intensity = augment_transforms(cfg)
    noise, drop = intensity
    assert type(noise).__name__ == "RandGaussianNoised" and noise.prob == pytest.approx(0.4)
    assert noise.rand_gaussian_noise.std == pytest.approx(0.07)
    assert type(drop).__name__ == "RandCoarseDropoutd"
    drop.prob = 1.0
    drop.set_random_state(seed=0)
    holes = (drop({"image": torch.ones(1, 64, 64)})["image"] == 0).sum().item()
    assert 256 <= holes <= 3 * 256  # 3 holes of 16 x 16 px (25% of 64), possibly overlapping


def test_a_training_chain_is_reproducible_from_its_seed_and_changes_the_image():
    cfg = data_cfg(modality="mri", augment="mri")
    x = torch.rand(1, 32, 32)
    outs = []
    for seed in (3, 3, 4):
        chain = train_transforms(cfg, [0.0], [1.0], 1)
        chain.set_random_state(seed=seed)
        outs.append(torch.stack([chain({"image": x.clone()})["image"] for _ in range(6)]))
    assert torch.equal(outs[0], outs[1])
    assert not torch.equal(outs[0], outs[2])
    assert not all(torch.equal(o, x) for o in outs[0])


def test_slice_all_reads_every_frame_of_a_multiframe_dicom_as_its_own_sample(tmp_path):
    frames = np.stack([np.full((16, 16), 100 * (k + 1), np.uint16) for k in range(4)])
    frames[:, 0, 0] = 0  # so each frame has a range for the percentile scaling
    ds = build_dataset(frames, modality="MR", sop_class="1.2.840.10008.5.1.4.1.1.4.1")
    path = tmp_path / "enhanced.dcm"
    ds.save_as(path, enforce_file_format=True)
    table = expand_slices(pd.DataFrame({"path": [str(path)], "patient_id": ["A"], "label": [1]}))
    assert table["slice"].tolist() == [0, 1, 2, 3]
    cfg = data_cfg(modality="mri", intensity="zscore", slice="all")
    raw = [read_image(path, window=None, slice_index=k)[0] for k in range(4)]
    assert [float(r[5, 5]) for r in raw] == [100.0, 200.0, 300.0, 400.0]
    fixed = data_cfg(modality="mri", slice=2)
    np.testing.assert_allclose(read_item(str(path), fixed), scale_intensity(raw[2], "zscore"), atol=1e-6)
    np.testing.assert_allclose(read_item(str(path), cfg, 3), scale_intensity(raw[3], "zscore"), atol=1e-6)
