"""medrec.io.dicom against independent truths: pydicom's own LUT/window functions,
hand-computed formulas and the pixel values the fixtures wrote."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from pydicom import uid
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_windowing, get_decoder, get_encoder
from pydicom.sequence import Sequence

from medrec import config
from medrec.errors import ConfigError, DicomError, ImageError
from medrec.io.dicom import (
    WINDOW_PRESETS,
    apply_window,
    dicom_identifiers,
    read_dicom,
    scale_minmax,
    scale_percentile,
)

CR_IMAGE = "1.2.840.10008.5.1.4.1.1.1"
ENHANCED_CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2.1"
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
MAX_BUNDLED_BYTES = 5_000_000


# --------------------------------------------------------------------------- bundled files


def _bundled_files() -> tuple[list[Path], list[Path]]:
    """pydicom's test files installed with the package, split by having pixel data.

    Only the files in the installed package are used: `get_testdata_files()` would also
    try to download pydicom-data. Files over MAX_BUNDLED_BYTES would be skipped (none is).
    """
    root = Path(pydicom.data.DATA_ROOT) / "test_files"
    with_pixels, without = [], []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix != ".py"):
        if path.stat().st_size > MAX_BUNDLED_BYTES:
            continue
        try:
            ds = pydicom.dcmread(path, force=True)
            has_pixels = any(k in ds for k in ("PixelData", "FloatPixelData"))
        except Exception:
            has_pixels = False
        (with_pixels if has_pixels else without).append(path)
    return with_pixels, without


PIXEL_FILES, OTHER_FILES = _bundled_files()
_ROOT = Path(pydicom.data.DATA_ROOT) / "test_files"


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(_ROOT)) for p in paths]


def _kind(ds: Dataset) -> str:
    if str(ds.get("SOPClassUID", "")) == SEG_SOP_CLASS:
        return "segmentation"
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric in ("MONOCHROME1", "MONOCHROME2") and ds.get("SamplesPerPixel", 1) == 1:
        return "gray"
    return "colour" if photometric else "unknown"


def _pydicom_reference(ds: Dataset) -> np.ndarray | None:
    """Modality values of the middle frame by pydicom alone (None if pydicom fails)."""
    try:
        arr = ds.pixel_array
        n_frames = int(ds.get("NumberOfFrames") or 1)
        if n_frames > 1:
            arr = arr[n_frames // 2]
        return np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
    except Exception:
        return None


def test_bundled_files_found():
    assert len(PIXEL_FILES) >= 50 and len(OTHER_FILES) >= 10


@pytest.mark.parametrize("path", PIXEL_FILES, ids=_ids(PIXEL_FILES))
def test_bundled_file_matches_pydicom_or_fails_with_reason(path):
    ds = pydicom.dcmread(path, force=True)
    kind = _kind(ds)
    reference = _pydicom_reference(ds) if kind == "gray" else None
    try:
        image, meta = read_dicom(path)
    except ImageError as exc:  # DicomError, or ImageTooLargeError for an absurd codestream size
        message = str(exc)
        assert message.startswith(f"{path}: ") and len(message) > len(str(path)) + 10
        if kind in ("colour", "segmentation"):
            assert kind in message
        assert reference is None, f"pydicom reads this grayscale file but medrec: {message}"
        return
    assert kind == "gray" and reference is not None
    assert image.dtype == np.float32 and image.shape == reference.shape
    if ds.PhotometricInterpretation == "MONOCHROME1":
        total = image.astype(np.float64) + reference
        assert np.ptp(total) <= 1e-6 * max(1.0, np.abs(total).max())
        assert meta["inverted"] is True
    else:
        np.testing.assert_array_equal(image, reference.astype(np.float32))


@pytest.mark.parametrize("path", OTHER_FILES, ids=_ids(OTHER_FILES))
def test_bundled_file_without_pixels_is_rejected(path):
    with pytest.raises(DicomError, match="no pixel data|not a DICOM file|not a readable") as e:
        read_dicom(path)
    assert str(path) in str(e.value)


# --------------------------------------------------------------------------- modality values


@pytest.mark.parametrize("slope, intercept", [(1.0, 0.0), (2.0, -100.0), (-0.5, 300.0)])
def test_monochrome1_is_inverted_around_the_representable_range(
    write_dicom, ramp, slope, intercept
):
    path = write_dicom(
        "cr.dcm", ramp, photometric="MONOCHROME1", bits_stored=12, sop_class=CR_IMAGE,
        modality="CR", RescaleSlope=slope, RescaleIntercept=intercept,
    )
    image, meta = read_dicom(path)
    modality = ramp * slope + intercept
    ends = np.array([0, 4095]) * slope + intercept  # the representable 12-bit range
    np.testing.assert_allclose(image, ends.min() + ends.max() - modality, rtol=0, atol=1e-3)
    # brightest pixel = lowest modality value, whatever the sign of the slope
    assert image[modality == modality.min()].min() == pytest.approx(image.max())
    ds = pydicom.dcmread(path)
    total = image + apply_modality_lut(ds.pixel_array, ds)
    assert np.ptp(total) < 1e-3 and meta["inverted"] is True


def _modality_lut_item(lut: np.ndarray, first: int = 0) -> Dataset:
    item = Dataset()
    item.add_new(0x00283002, "US", [len(lut), first, 16])  # LUTDescriptor
    item.ModalityLUTType = "US"
    item.add_new(0x00283006, "US", [int(v) for v in lut])  # LUTData
    return item


def test_modality_lut_sequence_and_monochrome1(write_dicom, ramp):
    lut = (np.arange(4096, dtype=np.int64) ** 2 // 300 + 7).astype(np.uint16)
    common = dict(bits_stored=12, ModalityLUTSequence=Sequence([_modality_lut_item(lut)]))
    mono2 = write_dicom("m2.dcm", ramp, **common)
    mono1 = write_dicom("m1.dcm", ramp, photometric="MONOCHROME1", **common)
    np.testing.assert_array_equal(read_dicom(mono2)[0], lut[ramp])
    expected = int(lut.min()) + int(lut.max()) - lut[ramp].astype(np.int64)
    np.testing.assert_array_equal(read_dicom(mono1)[0], expected)


def test_negative_slope(write_dicom, ramp):
    path = write_dicom("neg.dcm", ramp, RescaleSlope=-2, RescaleIntercept=100)
    image, meta = read_dicom(path)
    np.testing.assert_array_equal(image, -2.0 * ramp + 100)
    assert meta["rescale_slope"] == -2.0 and meta["rescale_intercept"] == 100.0


@pytest.mark.parametrize("high_bits", ["sign-extended", "zero", "garbage"])
def test_signed_12_bit(write_dicom, high_bits):
    values = np.linspace(-2048, 2047, 64).round().astype(np.int16).reshape(8, 8)
    low = values.astype(np.int32) & 0x0FFF  # 12-bit two's complement
    pattern = {"sign-extended": values.astype(np.int32) & 0xFFFF, "zero": low,
               "garbage": low | 0xA000}[high_bits]
    path = write_dicom(
        "s12.dcm", values, bits_stored=12, signed=True,
        raw_bytes=pattern.astype("<u2").tobytes(), RescaleSlope=1, RescaleIntercept=-1024,
    )
    np.testing.assert_array_equal(read_dicom(path)[0], values - 1024.0)


# --------------------------------------------------------------------------- frames


def _frames(n: int = 5) -> np.ndarray:
    base = np.arange(64, dtype=np.uint16).reshape(8, 8)
    return np.stack([base + 100 * k for k in range(n)])


def test_multiframe_default_is_middle_and_frame_selects(write_dicom):
    frames = _frames(5)
    path = write_dicom("mf.dcm", frames)
    image, meta = read_dicom(path)
    np.testing.assert_array_equal(image, frames[2])
    assert meta["frame"] == 2 and meta["number_of_frames"] == 5
    np.testing.assert_array_equal(read_dicom(path, frame=4)[0], frames[4])
    with pytest.raises(DicomError, match=r"frame 5 out of range.*valid: 0\.\.4"):
        read_dicom(path, frame=5)
    single = write_dicom("one.dcm", frames[0])
    with pytest.raises(DicomError, match="out of range"):
        read_dicom(single, frame=1)


def _rescale(slope: float, intercept: float) -> Sequence:
    item = Dataset()
    item.RescaleSlope, item.RescaleIntercept, item.RescaleType = slope, intercept, "HU"
    return Sequence([item])


def _voi(center: float, width: float) -> Sequence:
    item = Dataset()
    item.WindowCenter, item.WindowWidth = center, width
    return Sequence([item])


def test_enhanced_multiframe_uses_per_frame_functional_groups(write_dicom):
    frames = _frames(3)
    shared = Dataset()
    shared.PixelValueTransformationSequence = _rescale(1.0, -1024.0)
    per_frame = [Dataset() for _ in range(3)]
    per_frame[1].PixelValueTransformationSequence = _rescale(2.0, -10.0)
    per_frame[2].FrameVOILUTSequence = _voi(-900.0, 100.0)
    path = write_dicom(
        "enh.dcm", frames, sop_class=ENHANCED_CT_IMAGE,
        SharedFunctionalGroupsSequence=Sequence([shared]),
        PerFrameFunctionalGroupsSequence=Sequence(per_frame),
    )
    np.testing.assert_array_equal(read_dicom(path, frame=0)[0], frames[0] - 1024.0)
    np.testing.assert_array_equal(read_dicom(path, frame=1)[0], frames[1] * 2.0 - 10.0)
    windowed, meta = read_dicom(path, frame=2, window="auto")
    expected = np.clip((frames[2] - 1024.0 - (-900 - 0.5)) / 99 + 0.5, 0, 1)
    np.testing.assert_allclose(windowed, expected, atol=1e-6)
    assert meta["window_center"] == -900.0


# --------------------------------------------------------------------------- compression


def _ct_values() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(-1024, 3072, size=(32, 32)).astype(np.int16)


@pytest.mark.parametrize("syntax", [uid.RLELossless, uid.JPEG2000Lossless], ids=["rle", "j2k"])
def test_compressed_round_trip(write_dicom, syntax):
    if not get_encoder(syntax).is_available:
        pytest.skip(f"no encoder for {syntax.name}")
    values = _ct_values()
    path = write_dicom("c.dcm", values, compress=syntax, RescaleSlope=1, RescaleIntercept=0)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == syntax
    image, meta = read_dicom(path)
    np.testing.assert_array_equal(image, values)
    assert meta["transfer_syntax"] == syntax


def _encapsulated(build_dicom, tmp_path, pixels, syntax, fragments, name, **kw) -> Path:
    from pydicom.encaps import encapsulate

    ds = build_dicom(pixels, **kw)
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate(fragments)
    ds["PixelData"].VR = "OB"
    path = tmp_path / name
    ds.save_as(path, enforce_file_format=True)
    return path


def test_jpeg_lossless_decodes_exactly(tmp_path, build_dicom, encode_jpeg_lossless):
    values = np.random.default_rng(2).integers(0, 4096, (24, 20)).astype(np.uint16)
    values[:4, :4] = 4095  # long runs and extreme differences
    jpeg = encode_jpeg_lossless(values, precision=12)
    path = _encapsulated(
        build_dicom, tmp_path, values, uid.JPEGLosslessSV1, [jpeg], "jll.dcm",
        bits_stored=12, RescaleSlope=1, RescaleIntercept=-1024,
    )
    image, meta = read_dicom(path)
    np.testing.assert_array_equal(image, values - 1024.0)
    assert meta["transfer_syntax"] == uid.JPEGLosslessSV1


def test_jpeg_baseline_decodes(tmp_path, build_dicom):
    import io

    from PIL import Image

    gray = np.add.outer(np.arange(32), np.arange(40)).astype(np.uint8) * 3
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, format="JPEG", quality=90)
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())), dtype=np.float64)
    path = _encapsulated(
        build_dicom, tmp_path, gray, uid.JPEGBaseline8Bit, [buffer.getvalue()], "jb.dcm"
    )
    image, _ = read_dicom(path)
    assert np.abs(image - decoded).max() <= 1  # decoders may round the IDCT differently
    assert np.abs(image - gray).mean() < 2


def test_compressed_multiframe_frame(write_dicom):
    frames = _frames(4)
    path = write_dicom("rle_mf.dcm", frames, compress=uid.RLELossless)
    np.testing.assert_array_equal(read_dicom(path, frame=3)[0], frames[3])
    np.testing.assert_array_equal(read_dicom(path)[0], frames[2])


def test_only_the_chosen_frame_is_decoded(tmp_path, build_dicom):
    from pydicom.encaps import encapsulate, generate_frames

    frames = _frames(4)
    ds = build_dicom(frames)
    ds.compress(uid.RLELossless)
    fragments = list(generate_frames(ds.PixelData, number_of_frames=4))
    fragments[0] = b"\x00" * 64 + b"\xff" * 16  # RLE header, segments missing
    ds.PixelData = encapsulate(fragments)
    path = tmp_path / "one_bad_frame.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(Exception):
        pydicom.dcmread(path).pixel_array  # decoding every frame fails
    np.testing.assert_array_equal(read_dicom(path, frame=2)[0], frames[2])
    with pytest.raises(DicomError, match="cannot read pixel data"):
        read_dicom(path, frame=0)


def test_large_multiframe_file_is_read_lazily(write_dicom):
    frames = np.stack([np.full((128, 128), 7 * k, np.uint16) for k in range(48)])  # 1.5 MB
    path = write_dicom("big.dcm", frames)
    np.testing.assert_array_equal(read_dicom(path)[0], frames[24])
    np.testing.assert_array_equal(read_dicom(path, frame=47)[0], frames[47])


def test_missing_decoder_plugin(write_dicom, monkeypatch):
    if not get_encoder(uid.JPEG2000Lossless).is_available:
        pytest.skip("no JPEG 2000 encoder")
    path = write_dicom("j2k.dcm", _ct_values(), compress=uid.JPEG2000Lossless)
    decoder_class = type(get_decoder(uid.JPEG2000Lossless))
    monkeypatch.setattr(decoder_class, "is_available", property(lambda self: False))
    with pytest.raises(DicomError, match="no decoder plugin installed") as e:
        read_dicom(path)
    assert str(path) in str(e.value)


def test_unknown_transfer_syntax(write_dicom):
    path = write_dicom("x.dcm", _ct_values())
    data = path.read_bytes()
    known, unknown = b"1.2.840.10008.1.2.1\0", b"1.2.840.10008.1.2.99"  # same length
    assert data.count(known) == 1
    path.write_bytes(data.replace(known, unknown))
    with pytest.raises(DicomError, match="no decoder for transfer syntax"):
        read_dicom(path)


# --------------------------------------------------------------------------- broken files


def test_truncated_pixel_data(write_dicom, ramp):
    path = write_dicom("t.dcm", ramp)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DicomError, match="cannot read pixel data") as e:
        read_dicom(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("keep", [0, 140, 300])
def test_truncated_header_or_empty(write_dicom, ramp, keep):
    path = write_dicom("t.dcm", ramp)
    path.write_bytes(path.read_bytes()[:keep])
    with pytest.raises(DicomError) as e:
        read_dicom(path)
    assert str(path) in str(e.value)


def test_truncated_compressed_file(write_dicom):
    path = write_dicom("t.dcm", _ct_values(), compress=uid.RLELossless)
    path.write_bytes(path.read_bytes()[:-300])
    with pytest.raises(DicomError):
        read_dicom(path)


def test_not_dicom_and_missing_file(tmp_path):
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(np.random.default_rng(1).bytes(4000))
    with pytest.raises(DicomError, match="not a"):
        read_dicom(junk)
    with pytest.raises(DicomError, match="no such file"):
        read_dicom(tmp_path / "missing.dcm")


def test_missing_pixel_data(tmp_path, ramp, build_dicom):
    ds = build_dicom(ramp)
    del ds.PixelData
    path = tmp_path / "nopix.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(DicomError, match=r"no pixel data \(CT Image Storage\)"):
        read_dicom(path)


def test_colour_and_segmentation_rejected(write_dicom):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 200
    with pytest.raises(DicomError, match="colour image.*convert it to grayscale"):
        read_dicom(write_dicom("rgb.dcm", rgb, photometric="RGB"))
    seg = write_dicom("seg.dcm", np.ones((8, 8), np.uint8), sop_class=SEG_SOP_CLASS)
    with pytest.raises(DicomError, match="segmentation"):
        read_dicom(seg)


def test_file_without_preamble_or_meta(tmp_path, ramp, build_dicom):
    from pydicom.dataset import FileMetaDataset

    ds = build_dicom(ramp, RescaleSlope=1, RescaleIntercept=-5)
    ds.file_meta, ds.preamble = FileMetaDataset(), None
    path = tmp_path / "acr_nema"
    ds.save_as(path, enforce_file_format=False, implicit_vr=True, little_endian=True)
    assert path.read_bytes()[128:132] != b"DICM"
    np.testing.assert_array_equal(read_dicom(path)[0], ramp - 5.0)


# --------------------------------------------------------------------------- windows


def _pydicom_window(values: np.ndarray, center, width, function="LINEAR", index=0):
    """pydicom's windowing of `values`, rescaled to [0, 1] by two far-out sentinels."""
    ds = Dataset()
    ds.PhotometricInterpretation, ds.BitsStored, ds.PixelRepresentation = "MONOCHROME2", 16, 1
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = center, width, function
    c = center[index] if isinstance(center, list) else center
    w = width[index] if isinstance(width, list) else width
    sentinels = np.array([c - 100 * w, c + 100 * w])
    with np.errstate(over="ignore"):  # pydicom's SIGMOID overflows exp far from center
        out = apply_windowing(np.concatenate([values.ravel(), sentinels]), ds, index=index)
    lo, hi = out[-2], out[-1]
    return ((out[:-2] - lo) / (hi - lo)).reshape(values.shape)


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
@pytest.mark.parametrize("center, width", [(40, 80), (-600, 1500), (0.5, 1), (100, 2.5)])
def test_apply_window_matches_pydicom(center, width, function):
    if function != "LINEAR" and width == 1:
        width = 1.5
    values = np.linspace(-2000, 3000, 2001)
    expected = _pydicom_window(values, center, width, function)
    np.testing.assert_allclose(apply_window(values, center, width, function), expected, atol=2e-6)


def test_apply_window_rejects_bad_width():
    with pytest.raises(ValueError, match=">= 1"):
        apply_window(np.zeros(3), 0, 0.5)


def test_presets_cover_config_names():
    assert set(WINDOW_PRESETS) == set(config.WINDOW_PRESETS)
    assert all(width > 0 for _, width in WINDOW_PRESETS.values())


def _hu_image() -> np.ndarray:
    return np.linspace(-1200, 3000, 1024).round().reshape(32, 32).astype(np.int16)


@pytest.mark.parametrize("preset", sorted(WINDOW_PRESETS))
def test_preset_window(write_dicom, preset):
    hu = _hu_image()
    path = write_dicom("ct.dcm", hu, RescaleSlope=1, RescaleIntercept=0)
    image, meta = read_dicom(path, window=preset)
    expected = _pydicom_window(hu.astype(np.float64), *WINDOW_PRESETS[preset])
    np.testing.assert_allclose(image, expected, atol=2e-6)
    assert image.min() >= 0 and image.max() <= 1 and preset in meta["window"]
    np.testing.assert_array_equal(read_dicom(path, window=WINDOW_PRESETS[preset])[0], image)


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_file_window_first_of_several(write_dicom, function):
    stored = (_hu_image() + 1024).astype(np.uint16)
    centers, widths = [40.0, 400.0], [80.0, 1800.0]
    path = write_dicom(
        "ct.dcm", stored, RescaleSlope=1, RescaleIntercept=-1024,
        WindowCenter=centers, WindowWidth=widths, VOILUTFunction=function,
    )
    image, meta = read_dicom(path, window="auto")
    expected = _pydicom_window(stored - 1024.0, centers, widths, function, index=0)
    np.testing.assert_allclose(image, expected, atol=2e-6)
    assert meta["window_center"] == 40.0 and meta["window_width"] == 80.0


def test_file_window_on_monochrome1_is_applied_before_inversion(write_dicom, ramp):
    path = write_dicom(
        "cr.dcm", ramp, photometric="MONOCHROME1", bits_stored=12, sop_class=CR_IMAGE,
        WindowCenter=1500, WindowWidth=2000,
    )
    image, _ = read_dicom(path, window="auto")
    expected = 1.0 - _pydicom_window(ramp.astype(np.float64), 1500, 2000)
    np.testing.assert_allclose(image, expected, atol=2e-6)
    assert image[ramp == 0].item() == 1.0  # stored 0 is white in MONOCHROME1
    explicit, _ = read_dicom(path, window=(1500, 2000))
    np.testing.assert_array_equal(explicit, image)


def _voi_lut_item(lut: np.ndarray, first: int, bits: int) -> Dataset:
    item = Dataset()
    item.add_new(0x00283002, "US", [len(lut), first, bits])
    item.add_new(0x00283006, "US", [int(v) for v in lut])
    return item


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_voi_lut_sequence_wins_in_auto(write_dicom, ramp, bits, photometric):
    first, n = 1000, 2048
    top = 2**bits - 1
    lut = np.round(np.sqrt(np.arange(n) / (n - 1)) * top).astype(np.uint16)  # non-linear
    path = write_dicom(
        "voi.dcm", ramp, bits_stored=12, photometric=photometric,
        VOILUTSequence=Sequence([_voi_lut_item(lut, first, bits)]),
        WindowCenter=2000, WindowWidth=10,  # must be ignored: the LUT comes first
    )
    image, meta = read_dicom(path, window="auto")
    expected = lut[np.clip(ramp.astype(np.int64) - first, 0, n - 1)] / top
    if photometric == "MONOCHROME1":
        expected = 1.0 - expected
    np.testing.assert_allclose(image, expected, atol=1e-6)
    assert meta["window"] == "file VOI LUT"


def test_auto_without_window_is_percentile_and_minmax(write_dicom):
    values = _ct_values()
    path = write_dicom("ct.dcm", values)
    lo, hi = np.percentile(values.astype(np.float64), [0.5, 99.5])
    expected = np.clip((values - lo) / (hi - lo), 0, 1)
    np.testing.assert_allclose(read_dicom(path, window="auto")[0], expected, atol=1e-6)
    expected = (values - values.min()) / float(values.max() - values.min())
    np.testing.assert_allclose(read_dicom(path, window="minmax")[0], expected, atol=1e-6)
    np.testing.assert_array_equal(read_dicom(path, window="percentile")[0],
                                  read_dicom(path, window="auto")[0])


def test_scaling_edge_cases():
    assert np.all(scale_minmax(np.full((3, 3), 7.0)) == 0)
    mostly_zero = np.zeros(1000)
    mostly_zero[0] = 5.0
    np.testing.assert_array_equal(scale_percentile(mostly_zero), scale_minmax(mostly_zero))


@pytest.mark.parametrize("window", ["lungs", (1, 2, 3), "auto-ish", 5])
def test_invalid_window_is_config_error(write_dicom, ramp, window):
    path = write_dicom("ct.dcm", ramp)
    with pytest.raises(ConfigError, match="valid: None, auto, minmax, percentile, lung"):
        read_dicom(path, window=window)


# --------------------------------------------------------------------------- privacy


def test_metadata_is_deidentified_and_useful(write_dicom, ramp, caplog, phi):
    path = write_dicom(
        "ct.dcm", ramp, bits_stored=12, PixelSpacing=[0.5, 0.7], BodyPartExamined="CHEST",
        WindowCenter=[40, 400], WindowWidth=[80, 1500], RescaleSlope=1, RescaleIntercept=-1024,
    )
    caplog.set_level(logging.DEBUG)
    _, meta = read_dicom(path, window="lung")
    colour = write_dicom("rgb.dcm", np.zeros((4, 4, 3), np.uint8), photometric="RGB")
    with pytest.raises(DicomError) as e:
        read_dicom(colour)
    text = json.dumps(meta) + caplog.text + str(e.value)
    for value in phi.values():
        assert value not in text and value.split("^")[0] not in text
    assert not any("patient" in key or "birth" in key for key in meta)
    assert meta["pixel_spacing"] == [0.5, 0.7] and meta["body_part"] == "CHEST"
    assert (meta["rows"], meta["columns"], meta["bits_stored"]) == (16, 16, 12)
    assert meta["window_center"] == 40.0 and meta["modality"] == "CT"
    assert meta["transfer_syntax"] == uid.ExplicitVRLittleEndian


def test_dicom_identifiers(write_dicom, ramp, phi):
    path = write_dicom("ct.dcm", ramp)
    ds = pydicom.dcmread(path)
    path.write_bytes(path.read_bytes()[:-200])  # pixel data is not needed
    ids = dicom_identifiers(path)
    assert ids["patient_id"] == phi["PatientID"]
    assert ids["accession_number"] == phi["AccessionNumber"]
    assert ids["study_instance_uid"] == ds.StudyInstanceUID
    assert ids["series_instance_uid"] == ds.SeriesInstanceUID
    assert ids["sop_instance_uid"] == ds.SOPInstanceUID
    assert "patient_name" not in ids


def test_dicom_identifiers_never_quote_a_malformed_value(write_dicom, ramp, caplog, recwarn):
    bad_uid = "1.2.840.SECRET.7"  # pydicom's validation warns "Invalid value for VR UI: '...'"
    path = write_dicom(
        "ct.dcm", ramp, StudyInstanceUID=bad_uid, SpecificCharacterSet="ISO_IR 100",
        AccessionNumber="M\u00fcller-1",
    )
    recwarn.clear()
    caplog.clear()  # writing the file warned; reading must not
    caplog.set_level(logging.DEBUG)
    ids = dicom_identifiers(path)
    assert ids["study_instance_uid"] == bad_uid and ids["accession_number"] == "M\u00fcller-1"
    read_dicom(path)
    said = caplog.text + " ".join(str(w.message) for w in recwarn)
    assert "SECRET" not in said and "ller-1" not in said
