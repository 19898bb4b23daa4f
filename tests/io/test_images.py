"""medrec.io.images: PNG/JPEG/NIfTI readers, dispatch, and the MONAI transform.

Truths: the arrays the tests wrote (16-bit PNGs written by hand with zlib, not by
Pillow), nibabel's stored data with its scaling computed here, numpy formulas.
"""

from __future__ import annotations

import pickle
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medrec.errors import ColourImageError, ConfigError, DicomError, ImageError
from medrec.io.dicom import read_dicom
from medrec.io.images import WINDOW_PRESETS, apply_window, read_image

RNG = np.random.default_rng(0)


def write_png16(path: Path, arr: np.ndarray) -> Path:
    """A 16-bit grayscale PNG written from the spec (no Pillow): IHDR, IDAT, IEND."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    height, width = arr.shape
    header = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)  # 16-bit, gray
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in arr)  # filter 0
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
    png += chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    path.write_bytes(png)
    return path


# --------------------------------------------------------------------------- PNG / JPEG


def test_png_8bit_raw_and_auto(tmp_path):
    arr = RNG.integers(0, 256, (20, 30), dtype=np.uint8)
    path = tmp_path / "a.png"
    Image.fromarray(arr).save(path)
    image, meta = read_image(path)
    np.testing.assert_array_equal(image, arr)
    assert image.dtype == np.float32 and meta["bit_depth"] == 8
    np.testing.assert_allclose(read_image(path, window="auto")[0], arr / 255.0, atol=1e-7)


def test_png_16bit_raw_and_auto(tmp_path):
    arr = RNG.integers(0, 65536, (17, 23), dtype=np.uint16)
    arr[0, 0], arr[0, 1] = 0, 65535
    path = write_png16(tmp_path / "b.PNG", arr)
    image, meta = read_image(path)
    np.testing.assert_array_equal(image, arr)
    assert meta["bit_depth"] == 16
    auto, meta = read_image(path, window="auto")
    np.testing.assert_allclose(auto, arr / 65535.0, atol=1e-7)
    assert "65535" in meta["window"]


def test_png_12bit_content_in_16bit_file_minmax(tmp_path):
    arr = RNG.integers(100, 4096, (16, 16), dtype=np.uint16)
    path = write_png16(tmp_path / "c.png", arr)
    expected = (arr - arr.min()) / float(arr.max() - arr.min())
    np.testing.assert_allclose(read_image(path, window="minmax")[0], expected, atol=1e-6)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "P"])
def test_gray_stored_as_colour_is_accepted(tmp_path, mode):
    arr = RNG.integers(0, 256, (12, 9), dtype=np.uint8)
    path = tmp_path / "g.png"
    Image.fromarray(arr).convert(mode).save(path)
    assert Image.open(path).mode == mode
    np.testing.assert_array_equal(read_image(path)[0], arr)


def test_colour_png_is_rejected(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 1] = 50
    path = tmp_path / "c.png"
    Image.fromarray(rgb).save(path)
    with pytest.raises(ColourImageError, match=r"colour image \(RGB\): mean channel difference 50\.00") as e:
        read_image(path)
    assert str(path) in str(e.value) and "data.color: convert" in str(e.value)


def test_jpeg_gray_and_rgb_gray(tmp_path):
    arr = np.tile(np.linspace(0, 255, 32), (32, 1)).astype(np.uint8)
    gray, rgb = tmp_path / "g.jpg", tmp_path / "rgb.jpeg"
    Image.fromarray(arr).save(gray, quality=98)
    Image.fromarray(arr).convert("RGB").save(rgb, quality=98)
    for path in (gray, rgb):
        image, meta = read_image(path)
        assert np.abs(image - arr).mean() < 2 and meta["format"] == "jpeg"
    colour = np.zeros((16, 16, 3), np.uint8)
    colour[..., 0] = 255
    Image.fromarray(colour).save(tmp_path / "red.jpg", quality=98)
    with pytest.raises(ImageError, match="colour"):
        read_image(tmp_path / "red.jpg")


def test_png_window_preset_and_explicit(tmp_path):
    arr = RNG.integers(0, 256, (8, 8), dtype=np.uint8)
    path = tmp_path / "w.png"
    Image.fromarray(arr).save(path)
    expected = np.clip((arr - (100 - 0.5)) / (50 - 1) + 0.5, 0, 1)
    np.testing.assert_allclose(read_image(path, window=(100, 50))[0], expected, atol=1e-6)
    lung = read_image(path, window="lung")[0]
    np.testing.assert_array_equal(lung, apply_window(arr, *WINDOW_PRESETS["lung"]))


@pytest.mark.parametrize("content", [b"", b"not a png at all", "truncated"])
def test_broken_png(tmp_path, content):
    path = tmp_path / "x.png"
    if content == "truncated":
        Image.fromarray(RNG.integers(0, 256, (64, 64), dtype=np.uint8)).save(path)
        content = path.read_bytes()[:200]
    path.write_bytes(content)
    with pytest.raises(ImageError) as e:
        read_image(path)
    assert str(path) in str(e.value)


# --------------------------------------------------------------------------- dispatch


def test_dispatch_by_suffix_and_marker(tmp_path, write_dicom, ramp):
    source = write_dicom("x.dcm", ramp)
    expected = read_dicom(source)[0]
    for name in ("IMG0001", "1.2.840.113619.2.55", "scan.DCM", "scan.bin"):
        target = tmp_path / name
        target.write_bytes(source.read_bytes())
        np.testing.assert_array_equal(read_image(target)[0], expected)
    other = tmp_path / "x.txt"
    other.write_bytes(b"scans from the ward\n")
    with pytest.raises(ImageError, match=r"not an image file .*suffix '\.txt'"):
        read_image(other)
    tif = tmp_path / "x.tif"
    tif.write_bytes(b"II*\0")
    with pytest.raises(ImageError, match=r"x.tif: not a readable TIF file"):
        read_image(tif)
    with pytest.raises(ConfigError):
        read_image(source, window="bogus")


def test_dicom_error_is_an_image_error():
    assert issubclass(DicomError, ImageError)  # callers catch one type for every format


# --------------------------------------------------------------------------- NIfTI


def _nifti(path: Path, data: np.ndarray, zooms=(0.8, 0.6, 2.0)) -> Path:
    zooms = (tuple(zooms) + (1.0,) * data.ndim)[: data.ndim]
    affine = np.diag([*(zooms + (1.0, 1.0))[:3], 1.0])
    img = nib.Nifti1Image(data, affine)
    img.header.set_zooms(zooms)
    nib.save(img, str(path))
    return path


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_middle_and_chosen_slice(tmp_path, suffix):
    vol = RNG.normal(size=(12, 10, 5)).astype(np.float32)
    path = _nifti(tmp_path / f"v{suffix}", vol)
    image, meta = read_image(path)
    np.testing.assert_array_equal(image, vol[:, :, 2].T)
    assert meta["slice_index"] == 2 and meta["number_of_slices"] == 5
    assert meta["pixel_spacing"] == pytest.approx([0.6, 0.8])  # rows follow the 2nd axis
    np.testing.assert_array_equal(read_image(path, slice_index=4)[0], vol[:, :, 4].T)
    with pytest.raises(ImageError, match=r"slice_index 5 out of range; valid: 0\.\.4"):
        read_image(path, slice_index=5)


def test_nifti_scaling_is_applied(tmp_path):
    raw = RNG.integers(-100, 100, (6, 7, 3)).astype(np.int16)
    img = nib.Nifti1Image(raw, np.eye(4))
    img.header.set_slope_inter(2.5, -10.0)
    path = tmp_path / "s.nii"
    nib.save(img, str(path))
    np.testing.assert_allclose(read_image(path)[0], (raw[:, :, 1] * 2.5 - 10.0).T)


def test_nifti_4d_2d_and_nan(tmp_path):
    vol = RNG.normal(size=(8, 6, 4, 3)).astype(np.float32)
    path = _nifti(tmp_path / "t.nii.gz", vol, zooms=(1.0, 1.0, 1.0, 2.0))
    np.testing.assert_array_equal(read_image(path)[0], vol[:, :, 2, 1].T)
    np.testing.assert_array_equal(read_image(path, frame=2, slice_index=0)[0], vol[:, :, 0, 2].T)
    flat = RNG.normal(size=(8, 6)).astype(np.float32)
    flat[0, 0] = np.nan
    image, meta = read_image(_nifti(tmp_path / "f.nii", flat, zooms=(1.0, 1.0)))
    assert np.isfinite(image).all() and image[0, 0] == np.nanmin(flat)
    assert meta["number_of_slices"] == 1


def test_nifti_auto_window_is_percentile(tmp_path):
    vol = RNG.normal(size=(16, 16, 3)).astype(np.float32)
    path = _nifti(tmp_path / "p.nii", vol)
    x = vol[:, :, 1].T.astype(np.float64)
    lo, hi = np.percentile(x, [0.5, 99.5])
    expected = np.clip((x - lo) / (hi - lo), 0, 1)
    np.testing.assert_allclose(read_image(path, window="auto")[0], expected, atol=1e-6)


def test_broken_nifti(tmp_path):
    path = _nifti(tmp_path / "b.nii.gz", RNG.normal(size=(16, 16, 4)).astype(np.float32))
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ImageError, match="NIfTI") as e:
        read_image(path)
    assert str(path) in str(e.value)


# --------------------------------------------------------------------------- MONAI


def test_importing_images_does_not_import_monai():
    code = "import sys, medrec.io.images; assert 'monai' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_load_medical_imaged(tmp_path, write_dicom, ramp):
    pytest.importorskip("monai")
    from monai.transforms import Compose, MapTransform, Resized

    from medrec.io.images import LoadMedicalImaged

    png = tmp_path / "a.png"
    Image.fromarray(RNG.integers(0, 256, (20, 30), dtype=np.uint8)).save(png)
    nii = _nifti(tmp_path / "v.nii.gz", RNG.normal(size=(12, 10, 5)).astype(np.float32))
    dcm = write_dicom("c.dcm", ramp, WindowCenter=2000, WindowWidth=1000)
    load = LoadMedicalImaged(keys=["image"], window="auto")
    assert isinstance(load, MapTransform)
    for path, shape in ((png, (20, 30)), (nii, (10, 12)), (dcm, (16, 16))):
        out = load({"image": str(path), "label": 1})
        expected, meta = read_image(path, window="auto")
        assert out["image"].shape == (1, *shape) and out["image"].dtype == np.float32
        np.testing.assert_array_equal(out["image"][0], expected)
        assert out["image_meta"] == meta and out["label"] == 1
        assert 0.0 <= out["image"].min() and out["image"].max() <= 1.0
    chain = Compose([LoadMedicalImaged(keys="image"), Resized(keys="image", spatial_size=(8, 8))])
    assert tuple(chain({"image": dcm})["image"].shape) == (1, 8, 8)
    from monai.data import list_data_collate

    no_meta = LoadMedicalImaged(keys="image", meta_suffix=None)
    batch = list_data_collate([no_meta({"image": dcm}), no_meta({"image": dcm})])
    assert tuple(batch["image"].shape) == (2, 1, 16, 16) and set(batch) == {"image"}
    colour = tmp_path / "c.png"
    Image.fromarray(RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8), "RGB").save(colour)
    with pytest.raises(ColourImageError):
        LoadMedicalImaged(keys="image")({"image": str(colour)})
    out = LoadMedicalImaged(keys="image", window=None, color="convert")({"image": str(colour)})
    np.testing.assert_allclose(out["image"][0], np.asarray(Image.open(colour), np.float64) @ [0.299, 0.587, 0.114],
                               atol=1e-3)
    clone = pickle.loads(pickle.dumps(load))  # DataLoader workers pickle transforms
    assert type(clone) is LoadMedicalImaged and clone.window == "auto"
