"""`data.context_slices`: slices of a series ordered by their position along the slice normal (the
indexer's `slice_position`), fed with their neighbours as channels, edges replicated."""

from __future__ import annotations

import math
import os
import random
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from pydicom import uid
from pydicom.dataset import FileDataset, FileMetaDataset

from medrec.config import DataConfig, ExperimentConfig
from medrec.data.context import context_refs, series_groups, volume_refs
from medrec.data.transforms import LoadItemd, WindowStackd
from medrec.io.index import index_tree
from medrec.io.windows import apply_window
from medrec.privacy import PseudonymKey

KEY = PseudonymKey(b"test-key-0123456789abcdef", "test")
SIZE = 8
THETA = math.radians(20)  # an oblique series: the plane is tilted about the patient's x axis
ROW = (1.0, 0.0, 0.0)
COL = (0.0, math.cos(THETA), math.sin(THETA))


def write_ct(path: Path, *, position, instance: int, series: str, value: int, orientation=ROW + COL) -> None:
    """A SIZE x SIZE CT slice whose pixels all hold `value` HU (slope 1, intercept -1024)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = uid.generate_uid()
    meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.826.0.1.3680043.9.7.1", series
    ds.PatientID, ds.Modality = "PAT-1", "CT"
    ds.ImagePositionPatient, ds.ImageOrientationPatient = list(position), list(orientation)
    ds.InstanceNumber, ds.SliceThickness = instance, 2.5
    ds.Rows = ds.Columns = SIZE
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelData = np.full((SIZE, SIZE), value + 1024, "<u2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def hand_normal() -> tuple[float, float, float]:
    """ROW x COL written out: (r2 c3 - r3 c2, r3 c1 - r1 c3, r1 c2 - r2 c1)."""
    (r1, r2, r3), (c1, c2, c3) = ROW, COL
    return (r2 * c3 - r3 * c2, r3 * c1 - r1 * c3, r1 * c2 - r2 * c1)


@pytest.fixture
def series_tree(tmp_path) -> tuple[Path, dict[str, int]]:
    """Two interleaved series of 7 and 4 oblique slices, files shuffled, instance numbers scrambled.

    Returns the root and each file's true rank along the slice normal in its series (its HU value
    is 100 x rank + 1000 x series).
    """
    rng = random.Random(3)
    normal = np.array(hand_normal())
    in_plane = np.array([5.0, -3.0, 2.0])  # the same in-plane offset for every slice
    rank = {}
    for s, (n, spacing) in enumerate(((7, 2.5), (4, 5.0))):
        steps = list(range(n))
        rng.shuffle(steps)
        instances = rng.sample(range(1, 50), n)
        for j, step in enumerate(steps):
            name = f"f{rng.randrange(10**6):06d}.dcm"
            position = in_plane + (-40.0 + spacing * step) * normal
            write_ct(tmp_path / "t" / name, position=position, instance=instances[j], series=f"1.2.3.{s}",
                     value=100 * step + 1000 * s)
            rank[name] = step
    return tmp_path / "t", rank


def test_indexer_slice_position_orders_shuffled_oblique_slices(series_tree):
    root, rank = series_tree
    m = index_tree(root, key=KEY).manifest
    normal = hand_normal()
    assert m["series_id"].nunique() == 2 and m["series_id"].str.startswith("R").all()
    for _, g in m.groupby("series_id"):
        by_position = g.sort_values("slice_position")["path"].tolist()
        assert [rank[p] for p in by_position] == sorted(rank[p] for p in by_position)
    # the position itself: the dot product of ImagePositionPatient with ROW x COL, by hand
    import pydicom

    for _, row in m.iterrows():
        ipp = [float(v) for v in pydicom.dcmread(root / row["path"]).ImagePositionPatient]
        assert row["slice_position"] == pytest.approx(sum(a * b for a, b in zip(ipp, normal)), abs=1e-4)
    assert set(m["slice_thickness"]) == {2.5}


def test_context_refs_take_neighbours_in_the_series_with_edges_replicated(series_tree):
    root, rank = series_tree
    m = index_tree(root, key=KEY).manifest
    by_rank = {(sid, rank[p]): p for sid, p in zip(m["series_id"], m["path"])}
    refs = context_refs(m, 2)
    for i, (sid, path) in enumerate(zip(m["series_id"], m["path"])):
        n = sum(1 for s, _ in by_rank if s == sid)
        expected = [by_rank[(sid, min(max(rank[path] + d, 0), n - 1))] for d in range(-2, 3)]
        assert [p for p, _ in refs[i]] == expected
        assert refs[i][2] == (path, None)


def test_loaded_item_stacks_the_neighbours_hu(series_tree):
    root, rank = series_tree
    m = index_tree(root, key=KEY).manifest.assign(path=lambda t: [str(root / p) for p in t["path"]])
    cfg = DataConfig(modality="ct", channels=("brain",), context_slices=1)
    load = LoadItemd("image", cfg)
    sizes = m["series_id"].map(m["series_id"].value_counts())
    for i, refs in enumerate(context_refs(m, 1)):
        item = load({"image": m["path"].iat[i], "slice": -1, "context": [[p, -1] for p, _ in refs]})
        step, n = rank[Path(m["path"].iat[i]).name], sizes.iat[i]
        base = 0 if n == 7 else 1000  # the 7-slice series is series 0 of the fixture
        expected = [base + 100 * min(max(step + d, 0), n - 1) for d in (-1, 0, 1)]
        assert item["image"].shape == (3, SIZE, SIZE)
        assert item["image"][:, 0, 0].tolist() == expected


def test_headers_stand_in_for_missing_series_columns(series_tree):
    root, _ = series_tree
    m = index_tree(root, key=KEY).manifest.assign(path=lambda t: [str(root / p) for p in t["path"]])
    bare = m[["path", "patient_id"]]
    assert context_refs(bare, 1) == context_refs(m, 1)


def test_series_groups_leave_rows_without_position_to_their_file():
    t = pd.DataFrame({"path": ["a", "b", "c", "d"], "series_id": ["R1", "R1", "", "R1"],
                      "slice_position": [3.0, -1.0, 0.0, np.nan], "instance_number": [1, 2, 3, 4]})
    assert series_groups(t) == [[1, 0]]


def test_volume_refs_clamp_to_the_volume(tmp_path):
    path = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 5), np.float32), np.eye(4)), path)
    assert volume_refs(str(path), 0, 1) == [(str(path), 0), (str(path), 0), (str(path), 1)]
    assert volume_refs(str(path), 4, 2) == [(str(path), j) for j in (2, 3, 4, 4, 4)]
    assert volume_refs(str(path), None, 1) == [(str(path), j) for j in (1, 2, 3)]  # the middle one
    png = tmp_path / "x.png"
    png.write_bytes(b"")
    assert volume_refs(str(png), None, 1) == [(str(png), None)] * 3  # a 2-D image is its own neighbour


def test_window_stack_of_slices_is_windows_by_slices():
    rng = np.random.default_rng(0)
    hu = rng.uniform(-1100, 1500, (3, 6, 6)).astype(np.float32)
    windows = [(40.0, 80.0), (-600.0, 1500.0)]
    out = WindowStackd("image", windows)({"image": hu})["image"]
    assert out.shape == (6, 6, 6)
    for w, (c, width) in enumerate(windows):
        for s in range(3):
            np.testing.assert_allclose(out[3 * w + s], apply_window(hu[s], c, width), atol=1e-6)


def test_in_channels_follow_windows_times_slices():
    cfg = ExperimentConfig.model_validate({"data": {"modality": "ct", "channels": ["brain", "subdural", "bone"],
                                                    "context_slices": 1}})
    assert cfg.model.in_channels == 9 == cfg.data.num_channels
    assert ExperimentConfig.model_validate({"data": {"context_slices": 2}}).model.in_channels == 5
    with pytest.raises(ValueError, match="does not match the data's 3 channels"):
        ExperimentConfig.model_validate({"data": {"context_slices": 1}, "model": {"in_channels": 1}})


# --------------------------------------------------------------------------- a real CT series

LIDC = Path(os.environ.get("MEDREC_LIDC", Path(__file__).resolve().parents[3] / "shared" / "datasets" / "lidc-idri-0001"))
needs_lidc = pytest.mark.skipif(not LIDC.is_dir(), reason=f"LIDC-IDRI-0001 series not found at {LIDC} (set MEDREC_LIDC)")


@pytest.fixture(scope="module")
def lidc_manifest():
    from medrec.data.manifest import validate_manifest

    table = index_tree(LIDC, key=KEY).manifest
    table = table.assign(path=[str(LIDC / p) for p in table["path"]], label=0)
    return validate_manifest(table, task="binary", label_columns=("label",), source=str(LIDC), data_root=str(LIDC))


@pytest.mark.slow
@needs_lidc
def test_lidc_order_by_position_is_the_anatomy(lidc_manifest):
    import pydicom

    t = lidc_manifest.table
    assert len(t) == 133 and t["series_id"].nunique() == 1
    ordered = t.sort_values("slice_position")
    z = [float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]) for p in ordered["path"]]
    assert all(b > a for a, b in zip(z, z[1:]))  # strictly monotonic: feet to head, no slice twice
    assert ordered["slice_position"].tolist() == pytest.approx(z)  # axial: the normal is +z
    assert np.diff(z) == pytest.approx(2.5, abs=1e-3)  # the README's 2.5 mm, no gap


@pytest.mark.slow
@needs_lidc
def test_lidc_context_one_gives_three_channels_with_the_slice_in_the_middle(lidc_manifest):
    from medrec.data.datasets import manifest_items
    from medrec.data.transforms import preprocess_transforms, window_transforms
    from monai.transforms import Compose

    def inputs(context: int, rows: list[int]) -> list[np.ndarray]:
        cfg = DataConfig(modality="ct", channels=("lung",), context_slices=context, image_size=96, cache="none")
        chain = Compose([preprocess_transforms(cfg), *window_transforms(cfg, train=False)])
        items = manifest_items(lidc_manifest, cfg)
        return [np.asarray(chain(items[i])["image"], dtype=np.float32) for i in rows]

    t = lidc_manifest.table
    order = np.argsort(t["slice_position"].to_numpy())
    rows = [int(order[0]), int(order[1]), int(order[66]), int(order[67]), int(order[68]), int(order[-1])]
    single = dict(zip(rows, inputs(0, rows)))
    stacked = dict(zip(rows, inputs(1, rows)))
    for r in rows:
        assert stacked[r].shape == (3, 96, 96)
        np.testing.assert_array_equal(stacked[r][1], single[r][0])  # the middle channel is the slice itself
    np.testing.assert_array_equal(stacked[rows[3]][0], single[rows[2]][0])  # below: the next lower position
    np.testing.assert_array_equal(stacked[rows[3]][2], single[rows[4]][0])  # above: the next higher one
    np.testing.assert_array_equal(stacked[rows[0]][0], single[rows[0]][0])  # lowest slice: edge replicated
    np.testing.assert_array_equal(stacked[rows[0]][2], single[rows[1]][0])
    assert not np.array_equal(stacked[rows[3]][0], stacked[rows[3]][2])  # real neighbours differ


def test_predict_inputs_stack_the_same_neighbours_from_the_headers(series_tree):
    """Predict's dataset (no manifest columns, a folder of files) feeds what training feeds."""
    from types import SimpleNamespace

    from medrec.infer.engine import ImageDataset

    root, rank = series_tree
    cfg = ExperimentConfig.model_validate({"data": {"modality": "ct", "channels": [[0, 4000]], "context_slices": 1,
                                                    "image_size": 16, "augment": {"preset": "none"}}})
    ens = SimpleNamespace(cfg=cfg, norm={"mean": [0.0] * 3, "std": [1.0] * 3})
    paths = sorted(str(p) for p in root.iterdir())
    ds = ImageDataset(paths, ens)

    def window(hu: float) -> float:  # DICOM LINEAR, C 0 / W 4000
        return float(np.clip((hu - (0 - 0.5)) / (4000 - 1) + 0.5, 0, 1))
    for i, path in enumerate(paths):
        item = ds[i]
        assert "error" not in item, item
        step = rank[Path(path).name]
        n, base = (7, 0) if _series_of(path) == 0 else (4, 1000)  # the fixture's two series
        expected = [window(base + 100 * min(max(step + d, 0), n - 1)) for d in (-1, 0, 1)]
        np.testing.assert_allclose(item["image"][:, 0, 0].numpy(), expected, atol=1e-6)


def _series_of(path: str) -> int:
    import pydicom

    return int(str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID).rsplit(".", 1)[1])


@pytest.mark.parametrize(("windows", "k", "shown"), [(1, 1, [1]), (3, 1, [1, 4, 7]), (1, 2, [2]), (3, 0, [0, 1, 2])])
def test_preview_draws_the_slice_itself_and_its_neighbours(windows, k, shown):
    from medrec.data.preview_draw import _display, _neighbours

    names = ["brain", "subdural", "bone"][:windows]
    cfg = ExperimentConfig.model_validate({"data": {"modality": "ct", "channels": names, "context_slices": k}})
    img = np.stack([np.full((4, 4), c / 10, np.float32) for c in range(cfg.data.num_channels)])  # value = channel/10
    arr, _ = _display(img, cfg)
    drawn = [arr[0, 0]] if arr.ndim == 2 else list(arr[0, 0])
    assert drawn == pytest.approx([c / 10 for c in shown])
    if k:
        assert list(_neighbours(img, cfg)[0, 0]) == pytest.approx([0.0, k / 10, 2 * k / 10])  # first window
