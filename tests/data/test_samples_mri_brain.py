"""The bundled MRI sample data (data_samples/mri_brain) keeps its promises.

The truth here is nibabel's own decoding (get_fdata applies scl_slope/scl_inter) and the
generator's drawn volume and masks, not anything in medrec: the sample set must be right
before medrec reads it.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from tests.data.conftest import generator_module, manifest_rows

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "data_samples" / "mri_brain"
GENERATOR = REPO / "data_samples" / "make_mri_brain.py"


@pytest.fixture(scope="module")
def gen():
    with generator_module("make_mri_brain") as module:
        yield module


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return manifest_rows(SAMPLES)


@pytest.fixture(scope="module")
def images(rows) -> dict[str, nib.Nifti1Image]:
    return {r["path"]: nib.load(SAMPLES / r["path"]) for r in rows}


@pytest.fixture(scope="module")
def data(images) -> dict[str, np.ndarray]:
    """Voxel values as nibabel scales them (stored * scl_slope + scl_inter for int16)."""
    return {path: img.get_fdata() for path, img in images.items()}


@pytest.fixture(scope="module")
def drawn(gen, rows) -> dict:
    """The generator's own volume and masks for every listed file."""
    out = {}
    for pid, volumes in by_patient(rows).items():
        p = gen.draw_patient(int(pid[1:]))
        for r in volumes:
            k = int(re.search(r"_(\d+)\.nii\.gz$", r["path"]).group(1)) - 1
            out[r["path"]] = gen.draw_volume(p, k)
    return out


def by_patient(rows: list[dict]) -> dict[str, list[dict]]:
    out = defaultdict(list)
    for r in rows:
        out[r["patient_id"]].append(r)
    return out


def zscore(values: np.ndarray, over: np.ndarray) -> np.ndarray:
    return (values - values[over].mean()) / values[over].std()


def test_manifest_lists_exactly_the_files(rows):
    assert list(rows[0]) == ["path", "patient_id", "label"]
    on_disk = {p.relative_to(SAMPLES).as_posix() for p in (SAMPLES / "volumes").iterdir()}
    listed = [r["path"] for r in rows]
    assert len(listed) == len(set(listed))
    assert set(listed) == on_disk
    assert {p.name for p in SAMPLES.iterdir()} == {"volumes", "manifest.csv", "README.md"}
    for r in rows:
        assert re.fullmatch(r"M\d{3}", r["patient_id"])
        assert re.fullmatch(rf"volumes/{r['patient_id']}_[12]\.nii\.gz", r["path"])
        assert r["label"] in {"0", "1"}


def test_counts_patients_and_label_balance(rows):
    patients = by_patient(rows)
    assert 36 <= len(patients) <= 40
    follow_ups = [p for p, volumes in patients.items() if len(volumes) == 2]
    assert 4 <= len(follow_ups) <= 6
    assert all(len(volumes) <= 2 for volumes in patients.values())
    assert 0.4 <= np.mean([int(r["label"]) for r in rows]) <= 0.6
    mixed = [p for p in follow_ups if len({r["label"] for r in patients[p]}) > 1]
    assert 1 <= len(mixed) < len(follow_ups)


def test_readme_states_the_measured_counts(rows):
    readme = (SAMPLES / "README.md").read_text()
    assert readme.startswith("# ") and "**These volumes are synthetic phantoms, not MRI of people.**" in readme
    assert f"{len(rows)} volumes" in readme
    assert f"{len(by_patient(rows))} pseudo-patients" in readme
    assert f"{sum(int(r['label']) for r in rows)} with a lesion" in readme


def test_size_limits():
    total = sum(f.stat().st_size for f in SAMPLES.rglob("*") if f.is_file())
    assert total <= 5_000_000


def test_nifti_headers(rows, images):
    dtypes = set()
    for r in rows:
        img = images[r["path"]]
        hdr = img.header
        assert img.shape == (64, 64, 6)
        assert tuple(float(z) for z in hdr.get_zooms()) == (3.5, 3.5, 5.0)
        assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
        assert int(hdr["qform_code"]) == int(hdr["sform_code"]) == 1
        np.testing.assert_allclose(hdr.get_qform(), hdr.get_sform(), atol=1e-4)
        assert hdr.get_xyzt_units()[0] == "mm"
        assert hdr["descrip"].tobytes().rstrip(b"\0") == b"synthetic medrec phantom"
        assert hdr["db_name"].tobytes().strip(b"\0") == hdr["aux_file"].tobytes().strip(b"\0") == b""
        dtype = str(img.get_data_dtype())
        dtypes.add(dtype)
        slope, inter = img.dataobj.slope, img.dataobj.inter  # nibabel moves scl_* to the proxy
        if dtype == "int16":
            assert slope != 1.0 and np.isfinite(inter), r["path"]
        else:
            assert (slope, inter) == (1.0, 0.0), r["path"]
        raw = (SAMPLES / r["path"]).read_bytes()
        assert raw[3] == 0 and raw[4:8] == b"\0\0\0\0", "gzip header: no file name, no time stamp"
    assert dtypes == {"int16", "float32"}


def test_voxels_are_the_generators_volume(rows, images, data, drawn):
    """get_fdata gives back the drawn volume, within the storage's rounding step."""
    for r in rows:
        d, values = drawn[r["path"]], data[r["path"]]
        st = d.storage
        assert str(images[r["path"]].get_data_dtype()) == st["dtype"]
        if st["dtype"] == "int16":
            assert images[r["path"]].dataobj.slope == pytest.approx(st["slope"], rel=1e-7)
        span = np.percentile(d.volume, 99) - np.percentile(d.volume, 1)
        assert st["step"] < 1e-3 * span  # the rounding is far below the picture's contrast
        error = np.abs(values - d.volume).max()
        assert error <= st["step"] / 2 + 1e-6 * np.abs(d.volume).max(), r["path"]


def test_intensity_scales_differ_until_normalised(rows, data, drawn):
    """Raw intensities are arbitrary per volume; a per-volume z-score makes them comparable."""
    raw, normalised, background = [], [], []
    for r in rows:
        d, values = drawn[r["path"]], data[r["path"]]
        raw.append(np.median(values[d.brain]))
        normalised.append(np.median(zscore(values, d.head)[d.brain]))
        background.append(np.median(values[~d.head]) / raw[-1])
    assert max(raw) / min(raw) > 10
    assert max(normalised) - min(normalised) < 1.5  # standard deviations
    assert max(background) < 0.25  # dark background: noise and a small offset only


def test_bias_field_is_smooth_and_strong(gen, drawn):
    d = next(iter(drawn.values()))
    for seed in range(10):
        field = gen.bias_field(np.random.default_rng(seed), d.head.astype(float))
        inside = field[d.head]
        assert 0.2 <= np.abs(inside - 1).max() <= 0.35 + 1e-9
        assert np.abs(np.diff(field, axis=0)).max() < 0.05  # smooth: under 5% per voxel


def test_head_fits_the_field_of_view(rows, drawn):
    for r in rows:
        head = drawn[r["path"]].head
        assert head.any(axis=(0, 1)).all(), r["path"]
        edge = np.zeros(head.shape[:2], bool)
        edge[[0, -1], :] = edge[:, [0, -1]] = True
        assert not head[edge].any(), r["path"]


def test_label_is_a_lesion_on_every_slice(rows, drawn):
    for r in rows:
        d = drawn[r["path"]]
        per_slice = d.lesion.any(axis=(0, 1))
        if r["label"] == "1":
            assert per_slice.all(), r["path"]
            assert d.lesion.sum(axis=(0, 1)).min() >= 30, r["path"]  # clearly present, not a few voxels
        else:
            assert not per_slice.any(), r["path"]
        assert not (d.lesion & ~d.brain).any(), r["path"]


def test_lesion_is_brighter_than_the_surrounding_parenchyma(rows, data, drawn):
    """On every slice of a positive volume, after a per-volume z-score over the head."""
    for r in (r for r in rows if r["label"] == "1"):
        d = drawn[r["path"]]
        z = zscore(data[r["path"]], d.head)
        for k in range(z.shape[2]):
            lesion = d.lesion[:, :, k]
            ring = ndimage.binary_dilation(lesion, iterations=4) & d.parenchyma[:, :, k]  # 1-4 voxels out
            assert ring.sum() >= 10
            assert z[:, :, k][lesion].mean() > z[:, :, k][ring].mean() + 1.0, (r["path"], k)


def test_label_is_learnable_per_slice(rows, data, drawn):
    """A non-learned score separates the slices: after a per-slice z-score over the
    non-background voxels, the 99th percentile inside the brain is higher with a lesion."""
    labels, scores = [], []
    for r in rows:
        values, brain = data[r["path"]], drawn[r["path"]].brain
        for k in range(values.shape[2]):
            s = values[:, :, k]
            lo, hi = np.percentile(s, [1, 99])
            foreground = s > lo + 0.15 * (hi - lo)  # Rician background lies below
            scores.append(np.percentile(zscore(s, foreground)[brain[:, :, k]], 99))
            labels.append(int(r["label"]))
    assert roc_auc_score(labels, scores) > 0.8


def test_generator_is_deterministic_and_prefix_stable(gen, tmp_path):
    """`--patients 3` rewrites the bundled set's first files byte for byte (written in another
    process at another time, so no clock or state leaks in); a smaller rerun leaves no stale files."""
    out = tmp_path / "mri"
    gen.main(["--out", str(out), "--patients", "3"])
    volumes = sorted(p.relative_to(out) for p in (out / "volumes").iterdir())
    assert [p.name for p in volumes] == ["M001_1.nii.gz", "M002_1.nii.gz", "M003_1.nii.gz", "M003_2.nii.gz"]
    for rel in volumes:
        assert (out / rel).read_bytes() == (SAMPLES / rel).read_bytes(), rel
    bundled = (SAMPLES / "manifest.csv").read_text().splitlines()
    regenerated = (out / "manifest.csv").read_text().splitlines()
    assert regenerated == bundled[: len(regenerated)] and len(regenerated) == 1 + len(volumes)
    gen.main(["--out", str(out), "--patients", "1"])
    assert [p.name for p in (out / "volumes").iterdir()] == ["M001_1.nii.gz"]
    assert (out / "manifest.csv").read_text().splitlines() == bundled[:2]
