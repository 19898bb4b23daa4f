"""The bundled sample data (data_samples/chest_xray) keeps its promises.

The truth here is pydicom's own decoding (pixel_array, apply_modality_lut) and the generator's
drawn picture, not anything in medrec: the sample set must be right before medrec reads it.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut
from pydicom.uid import ExplicitVRLittleEndian, RLELossless
from sklearn.metrics import roc_auc_score

from tests.data.conftest import generator_module, manifest_rows

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "data_samples" / "chest_xray"
GENERATOR = REPO / "data_samples" / "make_chest_xray.py"
CR, DX = "1.2.840.10008.5.1.4.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1"


@pytest.fixture(scope="module")
def gen():
    with generator_module("make_chest_xray") as module:
        yield module


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return manifest_rows(SAMPLES)


@pytest.fixture(scope="module")
def datasets(rows) -> dict[str, pydicom.Dataset]:
    return {r["path"]: pydicom.dcmread(SAMPLES / r["path"]) for r in rows}


@pytest.fixture(scope="module")
def drawn(gen, rows) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The generator's own (picture, lung mask, opacity map) for every listed image."""
    out = {}
    for pid, images in by_patient(rows).items():
        p = gen.draw_patient(int(pid[1:]))
        for k, r in enumerate(images):  # images of a patient come from one stream, in order
            picture, lung, opacity, _ = gen.draw_image(p, k)
            out[r["path"]] = picture, lung, opacity
    return out


def display(ds: pydicom.Dataset) -> np.ndarray:
    """Modality values with MONOCHROME1 inverted, so bright always means dense."""
    values = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    return -values if ds.PhotometricInterpretation == "MONOCHROME1" else values


def by_patient(rows: list[dict]) -> dict[str, list[dict]]:
    out = defaultdict(list)
    for r in rows:
        out[r["patient_id"]].append(r)
    return out


def test_manifest_lists_exactly_the_files(rows):
    assert list(rows[0]) == ["path", "patient_id", "label", "view", "sex", "age_band"]  # tests/samples checks the last two
    on_disk = {p.relative_to(SAMPLES).as_posix() for p in (SAMPLES / "images").iterdir()}
    listed = [r["path"] for r in rows]
    assert len(listed) == len(set(listed))
    assert set(listed) == on_disk
    for r in rows:
        assert re.fullmatch(r"P\d{3}", r["patient_id"])
        assert r["path"].startswith(f"images/{r['patient_id']}_")
        assert r["label"] in {"0", "1"}
        assert r["view"] in {"PA", "AP"}


def test_counts_patients_and_label_balance(rows):
    patients = by_patient(rows)
    assert len(rows) >= 60
    assert len(patients) >= 20
    assert all(2 <= len(images) <= 4 for images in patients.values())
    majority = [np.mean([int(r["label"]) for r in images]) >= 0.5 for images in patients.values()]
    assert 0.4 <= np.mean(majority) <= 0.6
    mixed = [p for p, images in patients.items() if len({r["label"] for r in images}) > 1]
    assert 1 <= len(mixed) <= 0.15 * len(patients)


def test_size_limits(datasets):
    total = sum(f.stat().st_size for f in SAMPLES.rglob("*") if f.is_file())
    assert total <= 5_000_000
    assert all(ds.Rows <= 256 and ds.Columns <= 256 for ds in datasets.values())


def test_dicom_features_are_exercised(rows, datasets):
    photometric, syntaxes, rescales, windows = set(), set(), set(), set()
    for r in rows:
        ds = datasets[r["path"]]
        photometric.add(ds.PhotometricInterpretation)
        syntaxes.add(ds.file_meta.TransferSyntaxUID)
        rescales.add((float(ds.RescaleSlope), float(ds.RescaleIntercept)))
        windows.add("WindowCenter" in ds)
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (16, 12, 11, 0)
        assert ds.pixel_array.ndim == 2 and int(ds.pixel_array.max()) <= 4095
        assert int(ds.get("NumberOfFrames", 1)) == 1
        assert ds.SOPClassUID == {"CR": CR, "DX": DX}[ds.Modality] == ds.file_meta.MediaStorageSOPClassUID
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.BodyPartExamined == "CHEST" and ds.ViewPosition == r["view"]
        if "WindowCenter" in ds:  # a window inside the picture's modality range
            values = apply_modality_lut(ds.pixel_array, ds)
            assert values.min() < float(ds.WindowCenter) < values.max()
            assert 0 < float(ds.WindowWidth) <= values.max() - values.min()
    assert photometric == {"MONOCHROME1", "MONOCHROME2"}
    assert syntaxes == {ExplicitVRLittleEndian, RLELossless}
    assert any(slope not in (1.0,) for slope, _ in rescales) and any(b != 0 for _, b in rescales)
    assert windows == {True, False}
    assert len({ds.Modality for ds in datasets.values()}) == 2
    uids = [ds.SOPInstanceUID for ds in datasets.values()]
    assert len(set(uids)) == len(uids)


def test_identifiers_are_fake_consistent_and_kept_out_of_the_manifest(rows, datasets):
    patients = by_patient(rows)
    raw = {}
    for pid, images in patients.items():
        ident = {(str(datasets[r["path"]].PatientName), datasets[r["path"]].PatientID,
                  datasets[r["path"]].PatientBirthDate) for r in images}
        assert len(ident) == 1, f"{pid}: images disagree on the patient"
        raw[pid] = ident.pop()
    assert len({v[0] for v in raw.values()}) == len({v[1] for v in raw.values()}) == len(raw)
    shipped_text = (SAMPLES / "manifest.csv").read_text() + (SAMPLES / "README.md").read_text()
    for name, patient_id, birth in raw.values():
        assert name.startswith("Phantom^")
        for secret in (name, name.split("^")[1], patient_id, birth):
            assert secret not in shipped_text


def test_pixels_are_the_generators_picture(rows, datasets, drawn):
    """stored * slope + intercept, MONOCHROME1 inverted, gives back the drawn picture."""
    for r in rows:
        shown = display(datasets[r["path"]])
        picture = drawn[r["path"]][0]
        assert np.corrcoef(shown.ravel(), picture.ravel())[0, 1] > 0.999, r["path"]


def test_label_is_in_the_lung_pixels(rows, datasets, drawn):
    """An opacity brightens part of a lung: lung mean and spread separate the labels,
    and within one patient (same anatomy) the opacity studies are the more uneven ones."""
    labels, lung_mean, lung_spread = [], {}, {}
    for r in rows:
        _, lung, opacity = drawn[r["path"]]  # where the generator put the lungs and the lesion
        assert (opacity.max() > 0) == (r["label"] == "1"), r["path"]
        shown = display(datasets[r["path"]])
        lo, hi = np.percentile(shown, [1, 99])  # undo exposure, contrast and rescale
        inside = (shown[lung > 0.5] - lo) / (hi - lo)
        labels.append(int(r["label"]))
        lung_mean[r["path"]], lung_spread[r["path"]] = inside.mean(), inside.std()
    assert roc_auc_score(labels, list(lung_mean.values())) > 0.7
    assert roc_auc_score(labels, list(lung_spread.values())) > 0.9
    mixed = [images for images in by_patient(rows).values() if len({r["label"] for r in images}) > 1]
    assert mixed
    for images in mixed:
        with_opacity = [lung_spread[r["path"]] for r in images if r["label"] == "1"]
        without = [lung_spread[r["path"]] for r in images if r["label"] == "0"]
        assert min(with_opacity) > max(without), images[0]["patient_id"]


def test_generator_is_deterministic_and_prefix_stable(gen, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    gen.main(["--out", str(first), "--patients", "3"])
    gen.main(["--out", str(second), "--patients", "3"])
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert len(files) >= 7  # manifest + at least 2 images for each of 3 patients
    for rel in files:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel
        if rel.suffix == ".dcm":  # the first patients of the bundled set, byte for byte
            assert (first / rel).read_bytes() == (SAMPLES / rel).read_bytes(), rel
    bundled = (SAMPLES / "manifest.csv").read_text().splitlines()
    regenerated = (first / "manifest.csv").read_text().splitlines()
    assert regenerated == bundled[: len(regenerated)]
