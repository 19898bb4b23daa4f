"""The bundled head CT sample data (data_samples/ct_head) keeps its promises.

The truth here is pydicom's own decoding (pixel_array, apply_modality_lut), the generator's
drawn HU picture and masks, and thresholds in Hounsfield units, not anything in medrec: the
sample set must be right before medrec reads it.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from tests.data.conftest import generator_module, manifest_rows

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "data_samples" / "ct_head"
GENERATOR = REPO / "data_samples" / "make_ct_head.py"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture(scope="module")
def gen():
    with generator_module("make_ct_head") as module:
        yield module


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return manifest_rows(SAMPLES)


@pytest.fixture(scope="module")
def datasets(rows) -> dict[str, pydicom.Dataset]:
    return {r["path"]: pydicom.dcmread(SAMPLES / r["path"]) for r in rows}


@pytest.fixture(scope="module")
def hu(datasets) -> dict[str, np.ndarray]:
    """Hounsfield units as pydicom decodes them: stored * slope + intercept."""
    return {path: apply_modality_lut(ds.pixel_array, ds).astype(np.float64) for path, ds in datasets.items()}


@pytest.fixture(scope="module")
def drawn(gen, rows) -> dict:
    """The generator's own slice (HU picture, bleed, brain and skull masks) for every listed file."""
    out = {}
    for pid, slices in by_patient(rows).items():
        p = gen.draw_patient(int(pid[1:]))
        for r in slices:
            out[r["path"]] = gen.draw_slice(p, int(r["slice_level"]) - 1)
    return out


def by_patient(rows: list[dict]) -> dict[str, list[dict]]:
    out = defaultdict(list)
    for r in rows:
        out[r["patient_id"]].append(r)
    return out


def cavity(picture: np.ndarray) -> np.ndarray:
    """Inside the skull, from the picture alone: holes of the bone ring, 2 px clear of the bone
    (partial-volume pixels at the inner table pass through blood densities)."""
    bone = picture > 400
    return ndimage.binary_fill_holes(bone) & ~ndimage.binary_dilation(bone, iterations=2)


def test_manifest_lists_exactly_the_files(rows):
    assert list(rows[0]) == ["path", "patient_id", "label", "slice_level"]
    on_disk = {p.relative_to(SAMPLES).as_posix() for p in (SAMPLES / "images").iterdir()}
    listed = [r["path"] for r in rows]
    assert len(listed) == len(set(listed))
    assert set(listed) == on_disk
    for r in rows:
        assert re.fullmatch(r"H\d{3}", r["patient_id"])
        assert r["path"] == f"images/{r['patient_id']}_s{r['slice_level']}.dcm"
        assert r["label"] in {"0", "1"}
    for slices in by_patient(rows).values():  # levels 1..n, lowest first
        assert [int(r["slice_level"]) for r in slices] == list(range(1, len(slices) + 1))


def test_counts_and_label_balance(rows):
    patients = by_patient(rows)
    assert 90 <= len(rows) <= 130
    assert len(patients) >= 25
    assert all(3 <= len(slices) <= 4 for slices in patients.values())
    with_bleed = [p for p, slices in patients.items() if any(r["label"] == "1" for r in slices)]
    assert 0.4 <= len(with_bleed) / len(patients) <= 0.6
    assert 0.25 <= np.mean([int(r["label"]) for r in rows]) <= 0.6
    partial = 0
    for pid in with_bleed:  # a bleed spans contiguous slices, not necessarily all of them
        levels = [int(r["slice_level"]) for r in patients[pid] if r["label"] == "1"]
        assert levels == list(range(levels[0], levels[-1] + 1)), pid
        partial += len(levels) < len(patients[pid])
    assert partial >= 0.3 * len(with_bleed)


def test_size_limits(datasets):
    total = sum(f.stat().st_size for f in SAMPLES.rglob("*") if f.is_file())
    assert total <= 5_000_000
    assert all((ds.Rows, ds.Columns) == (128, 128) for ds in datasets.values())


def test_dicom_features_are_exercised(rows, datasets):
    encodings, syntaxes, windows = [], set(), set()
    for r in rows:
        ds = datasets[r["path"]]
        assert ds.Modality == "CT" and ds.SOPClassUID == CT_STORAGE == ds.file_meta.MediaStorageSOPClassUID
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.BodyPartExamined == "HEAD"
        assert float(ds.RescaleSlope) == 1.0 and ds.RescaleType == "HU"
        assert ds.BitsAllocated == 16 and ds.HighBit == ds.BitsStored - 1
        signed, bits, intercept = ds.PixelRepresentation, ds.BitsStored, float(ds.RescaleIntercept)
        assert intercept == (0.0 if signed else -1024.0)  # stored = HU when signed, HU + 1024 when not
        stored = ds.pixel_array
        assert stored.dtype == (np.int16 if signed else np.uint16)
        lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        assert lo <= int(stored.min()) and int(stored.max()) <= hi
        encodings.append((signed, bits, intercept))
        syntaxes.add(ds.file_meta.TransferSyntaxUID)
        centers = ds.WindowCenter if ds["WindowCenter"].VM > 1 else [ds.WindowCenter]
        widths = ds.WindowWidth if ds["WindowWidth"].VM > 1 else [ds.WindowWidth]
        assert (float(centers[0]), float(widths[0])) == (40.0, 80.0)  # the brain window comes first
        windows.add(len(centers))
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert float(ds.ImagePositionPatient[2]) == float(ds.SliceLocation)
        assert float(ds.SliceThickness) in (2.5, 3.0, 5.0)
        assert 1.6 < float(ds.PixelSpacing[0]) == float(ds.PixelSpacing[1]) < 2.1
    assert {e[0] for e in encodings} == {0, 1} and {e[1] for e in encodings} == {12, 16}
    assert sum(e[2] == -1024.0 for e in encodings) > len(encodings) / 2
    assert syntaxes == {ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless}
    assert windows == {1, 2}
    uids = [ds.SOPInstanceUID for ds in datasets.values()]
    assert len(set(uids)) == len(uids)


def test_series_geometry_and_uids_per_patient(rows, datasets):
    studies, series = set(), set()
    for pid, slices in by_patient(rows).items():
        stack = [datasets[r["path"]] for r in slices]
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "PixelSpacing",
                        "SliceThickness", "PixelRepresentation", "RescaleIntercept"):
            assert len({str(ds[keyword].value) for ds in stack}) == 1, (pid, keyword)
        z = [float(ds.SliceLocation) for ds in stack]
        assert all(b - a >= 8 for a, b in zip(z, z[1:])), pid  # lowest first, distinct levels
        assert [ds.InstanceNumber for ds in stack] == sorted({ds.InstanceNumber for ds in stack})
        studies.add(stack[0].StudyInstanceUID)
        series.add(stack[0].SeriesInstanceUID)
    assert len(studies) == len(series) == len(by_patient(rows))


def test_identifiers_are_fake_consistent_and_kept_out_of_the_manifest(rows, datasets):
    raw = {}
    for pid, slices in by_patient(rows).items():
        ident = {(str(datasets[r["path"]].PatientName), datasets[r["path"]].PatientID,
                  datasets[r["path"]].PatientBirthDate) for r in slices}
        assert len(ident) == 1, f"{pid}: slices disagree on the patient"
        raw[pid] = ident.pop()
    assert len({v[0] for v in raw.values()}) == len({v[1] for v in raw.values()}) == len(raw)
    shipped_text = (SAMPLES / "manifest.csv").read_text() + (SAMPLES / "README.md").read_text()
    for name, patient_id, birth in raw.values():
        assert name.startswith("Phantom^") and patient_id.startswith("SYNH-")
        for secret in (name, name.split("^")[1], *name.split("^")[1].split(), patient_id, birth):
            assert secret not in shipped_text


def test_pixels_are_the_generators_picture(rows, hu, drawn):
    """stored + intercept gives back the drawn HU picture, to the rounding of the stored integers."""
    for r in rows:
        assert np.abs(hu[r["path"]] - drawn[r["path"]].hu).max() <= 0.5 + 1e-9, r["path"]


def test_hounsfield_ranges_are_plausible(rows, hu, drawn):
    for r in rows:
        picture, truth = hu[r["path"]], drawn[r["path"]]
        air = picture[:6]  # the top rows lie in front of the forehead
        assert -1010 < np.median(air) < -990 and 2 < air.std() < 8, r["path"]
        skull = picture[truth.skull]
        assert 600 < np.median(skull) < 1600 and np.percentile(skull, 99) < 2000, r["path"]
        # A closed bone ring: the brain lies in the holes of the > 600 HU pixels.
        ring = picture > 600
        assert (ndimage.binary_fill_holes(ring) & ~ring)[truth.brain].mean() > 0.97, r["path"]
        central = ndimage.binary_erosion(truth.brain, iterations=4) & ~truth.bleed
        assert 20 < np.median(picture[central]) < 50, r["path"]  # brain parenchyma
        if r["slice_level"] == "1":  # CSF ventricles on the lowest slice (smoothed: not noise dips)
            assert np.mean(ndimage.uniform_filter(picture, 3)[central] < 15) > 0.005, r["path"]


def test_label_is_the_drawn_bleed_and_it_is_hyperdense(rows, hu, drawn):
    for r in rows:
        truth = drawn[r["path"]]
        assert truth.bleed.any() == (r["label"] == "1"), r["path"]
        if r["label"] == "0":
            continue
        picture = hu[r["path"]]
        assert truth.bleed.sum() >= 40, r["path"]  # a few dozen pixels at least: visible at 128 px
        near = ndimage.binary_dilation(truth.bleed, iterations=4) & ~ndimage.binary_dilation(truth.bleed)
        brain = near & ndimage.binary_erosion(truth.brain, iterations=2)  # surrounding brain, not bone
        blood = picture[truth.bleed].mean()
        assert 50 < blood < 95, r["path"]
        assert blood - picture[brain].mean() > 15, r["path"]


def test_bleed_is_visible_in_the_brain_window(rows, hu):
    """Not learned: the share of blood-density pixels (55-95 HU) inside the skull ranks the slices."""
    labels, share = [], []
    for r in rows:
        picture = hu[r["path"]]
        inside = picture[cavity(picture)]
        labels.append(int(r["label"]))
        share.append(np.mean((inside >= 55) & (inside <= 95)))
    assert roc_auc_score(labels, share) > 0.85


def test_generator_is_deterministic_and_prefix_stable(gen, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    gen.main(["--out", str(first), "--patients", "3"])
    gen.main(["--out", str(second), "--patients", "3"])
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert len(files) >= 10  # manifest + at least 3 slices for each of 3 patients
    for rel in files:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel
        if rel.suffix == ".dcm":  # the first patients of the bundled set, byte for byte
            assert (first / rel).read_bytes() == (SAMPLES / rel).read_bytes(), rel
    bundled = (SAMPLES / "manifest.csv").read_text().splitlines()
    regenerated = (first / "manifest.csv").read_text().splitlines()
    assert regenerated == bundled[: len(regenerated)]
