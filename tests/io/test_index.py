"""The DICOM-tree indexer: every good file in the manifest, every bad one in the errors CSV,
identifiers only as keyed pseudonyms."""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom import uid
from pydicom.dataset import FileDataset, FileMetaDataset

from medrec import index as cli
from medrec.errors import DataError
from medrec.io.index import MANIFEST_COLUMNS, index_tree, join_labels
from medrec.privacy import PseudonymKey

SECRET_NAME = "Zyxwv^Quentin"
SECRET_BIRTH = "19231117"
KEY = PseudonymKey(b"test-key-0123456789abcdef", "test")
CORRUPTIONS = ("truncated", "garbage", "no_pixels", "short_pixels", "empty", "garbage_dicm", "truncated_rle")


def patient_id(i: int) -> str:
    return f"MRN-SECRET-{i // 4:05d}"  # four images per patient


def accession(i: int) -> str:
    return f"ACC-SECRET-{i // 2:05d}"


def make_dataset(i: int, size: int = 64, *, frames: int = 1) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray
    meta.MediaStorageSOPInstanceUID = uid.generate_uid()
    meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = f"1.2.826.0.1.3680043.9.7.{i // 2}"
    ds.SeriesInstanceUID = uid.generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = SECRET_NAME, patient_id(i), SECRET_BIRTH
    ds.AccessionNumber = accession(i)
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "DX", "CHEST", ("PA", "AP")[i % 2]
    ds.Rows = ds.Columns = size
    ds.PixelSpacing = [0.143, 0.145]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    pixels = (np.arange(frames * size * size) % 4096).astype("<u2")
    ds.PixelData = pixels.tobytes()
    return ds


def write_tree(root: Path, n: int, corrupt_fraction: float = 0.05, seed: int = 0) -> dict[str, set[str]]:
    """n files over nested folders, names with and without suffix; a fraction corrupted.

    Returns the relative paths of the good and of the corrupt files.
    """
    rng = random.Random(seed)
    n_bad = round(n * corrupt_fraction)
    bad_index = set(rng.sample(range(n), n_bad))
    out: dict[str, set[str]] = {"good": set(), "bad": set()}
    for i in range(n):
        folder = root / f"patient{i // 4:05d}" / f"study{i // 2:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        name = (f"IM{i:05d}.dcm", f"IM{i:05d}", f"1.2.3.{i}")[i % 3]  # .dcm, no suffix, UID-style
        path = folder / name
        ds = make_dataset(i)
        if i in bad_index:
            _corrupt(path, ds, CORRUPTIONS[len(out["bad"]) % len(CORRUPTIONS)], rng)
            out["bad"].add(path.relative_to(root).as_posix())
        else:
            ds.save_as(path, enforce_file_format=True)
            out["good"].add(path.relative_to(root).as_posix())
    (root / "README.txt").write_text("not an image\n")  # neither DICOM by name nor content: skipped
    (root / ".DS_Store").write_bytes(b"\0" * 64)
    return out


def _corrupt(path: Path, ds: FileDataset, how: str, rng: random.Random) -> None:
    if how == "garbage":
        path.write_bytes(rng.randbytes(5000))
    elif how == "garbage_dicm":
        path.write_bytes(b"\0" * 128 + b"DICM" + rng.randbytes(3000))
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "no_pixels":
        del ds.PixelData
        ds.save_as(path, enforce_file_format=True)
    elif how == "short_pixels":  # the element is complete but too small for 64 x 64 x 16 bit
        ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
        ds.save_as(path, enforce_file_format=True)
    elif how == "truncated_rle":
        ds.compress(uid.RLELossless)
        ds.save_as(path, enforce_file_format=True)
        path.write_bytes(path.read_bytes()[:-200])
    else:  # truncated
        ds.save_as(path, enforce_file_format=True)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - rng.randint(1, 4000)])


def check_run(tmp_path: Path, n: int, fraction: float, workers: int, capsys, caplog) -> None:
    root = tmp_path / "tree"
    truth = write_tree(root, n, fraction)
    out, errors = tmp_path / "out" / "manifest.csv", tmp_path / "out" / "errors.csv"
    with caplog.at_level(logging.DEBUG):
        rc = cli.main([str(root), "--out", str(out), "--errors", str(errors), "--workers", str(workers)])
    assert rc == 0
    manifest, bad = pd.read_csv(out, dtype=str), pd.read_csv(errors, dtype=str)
    assert set(manifest["path"]) == truth["good"]
    assert set(bad["path"]) == truth["bad"]
    assert bad["reason"].str.len().gt(5).all()
    assert list(manifest.columns) == list(MANIFEST_COLUMNS)
    # Patient grouping survives pseudonymisation: files i and j share a patient iff i//4 == j//4.
    true_patient = manifest["path"].str.extract(r"patient(\d+)")[0]
    assert manifest.groupby(true_patient)["patient_id"].nunique().eq(1).all()
    assert manifest.groupby("patient_id").apply(lambda g: true_patient[g.index].nunique()).eq(1).all()
    assert manifest["image_id"].is_unique
    printed = capsys.readouterr()
    texts = [out.read_text(), errors.read_text(), printed.out, printed.err, caplog.text]
    secrets_ = [SECRET_NAME, SECRET_NAME.split("^")[0], SECRET_BIRTH, "MRN-SECRET", "ACC-SECRET"]
    for text in texts:
        for secret in secrets_:
            assert secret not in text


def test_index_40_files_with_corrupt_ones(tmp_path, capsys, caplog):
    # 20% so that each kind of corruption occurs at least once
    check_run(tmp_path, 40, 0.2, workers=1, capsys=capsys, caplog=caplog)


@pytest.mark.slow
def test_index_2000_files_with_5pct_corrupt(tmp_path, capsys, caplog):
    check_run(tmp_path, 2000, 0.05, workers=2, capsys=capsys, caplog=caplog)


@pytest.mark.parametrize(("how", "reason"), [
    ("truncated", "truncated: the file has"),
    ("truncated_rle", "truncated: the file ends inside"),
    ("garbage", "not a DICOM file"),
    ("garbage_dicm", "not an image"),
    ("no_pixels", "no pixel data"),
    ("short_pixels", "pixel data holds 4096 bytes"),
    ("empty", "empty file"),
])
def test_each_corruption_has_its_reason(tmp_path, how, reason):
    root = tmp_path / "t"
    root.mkdir()
    _corrupt(root / "x.dcm", make_dataset(0), how, random.Random(0))
    result = index_tree(root, key=KEY)
    assert result.manifest.empty
    assert list(result.errors["path"]) == ["x.dcm"] and reason in result.errors.loc[0, "reason"]


def test_header_values_match_pydicom(tmp_path):
    """Every manifest field equals what pydicom reads from the full file."""
    root = tmp_path / "t"
    root.mkdir()
    ds = make_dataset(7, size=32, frames=3)
    ds.save_as(root / "multi.dcm", enforce_file_format=True)
    row = index_tree(root, key=KEY).manifest.iloc[0]
    full = pydicom.dcmread(root / "multi.dcm")
    assert full.pixel_array.shape == (3, 32, 32)  # the file really is complete
    assert (row["rows"], row["columns"], row["number_of_frames"]) == (full.Rows, full.Columns, full.NumberOfFrames)
    assert (row["modality"], row["body_part"], row["view_position"]) == (full.Modality, full.BodyPartExamined,
                                                                          full.ViewPosition)
    assert [float(v) for v in row["pixel_spacing"].split("\\")] == [float(v) for v in full.PixelSpacing]
    assert row["transfer_syntax"] == full.file_meta.TransferSyntaxUID
    assert row["photometric_interpretation"] == full.PhotometricInterpretation
    assert row["patient_id"] == KEY.pseudonym(full.PatientID, "patient")
    assert row["study_id"] == KEY.pseudonym(full.StudyInstanceUID, "study")
    assert row["image_id"] == KEY.pseudonym(full.SOPInstanceUID, "image")


def test_compressed_good_and_truncated(tmp_path):
    """An RLE file whose fragments pydicom can decode is indexed; the same file cut short is not."""
    root = tmp_path / "t"
    root.mkdir()
    ds = make_dataset(1)
    ds.compress(uid.RLELossless)
    ds.save_as(root / "rle.dcm", enforce_file_format=True)
    data = (root / "rle.dcm").read_bytes()
    (root / "rle_cut.dcm").write_bytes(data[:-50])
    assert pydicom.dcmread(root / "rle.dcm").pixel_array.shape == (64, 64)
    result = index_tree(root, key=KEY)
    assert list(result.manifest["path"]) == ["rle.dcm"]
    assert result.manifest.loc[0, "transfer_syntax"] == uid.RLELossless
    assert list(result.errors["path"]) == ["rle_cut.dcm"]
    assert "truncated" in result.errors.loc[0, "reason"]


def test_truncated_reason_names_sizes(tmp_path):
    root = tmp_path / "t"
    root.mkdir()
    make_dataset(0).save_as(root / "a.dcm", enforce_file_format=True)
    data = (root / "a.dcm").read_bytes()
    (root / "a.dcm").write_bytes(data[:-10])
    reason = index_tree(root, key=KEY).errors.loc[0, "reason"]
    assert "truncated" in reason and str(len(data) - 10) in reason


def test_dicom_without_preamble_is_found_by_forced_read(tmp_path):
    """A file with no 128-byte preamble and odd suffix-less name is still indexed."""
    root = tmp_path / "t"
    root.mkdir()
    ds = make_dataset(3)
    ds.file_meta, ds.preamble = FileMetaDataset(), None  # ACR-NEMA style: no preamble or meta
    ds.save_as(root / "IMG0001", enforce_file_format=False, implicit_vr=True, little_endian=True)
    assert (root / "IMG0001").read_bytes()[128:132] != b"DICM"
    result = index_tree(root, key=KEY)
    assert list(result.manifest["path"]) == ["IMG0001"] and result.errors.empty


def test_other_suffix_with_dicm_marker_is_indexed_and_jpeg_is_skipped(tmp_path):
    root = tmp_path / "t"
    root.mkdir()
    make_dataset(0).save_as(root / "scan.img", enforce_file_format=True)
    (root / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 300)
    result = index_tree(root, key=KEY)
    assert list(result.manifest["path"]) == ["scan.img"]
    assert result.errors.empty and result.skipped == 1


def test_key_changes_pseudonyms(tmp_path):
    root = tmp_path / "t"
    write_tree(root, 8, corrupt_fraction=0)
    a = index_tree(root, key=KEY).manifest
    b = index_tree(root, key=PseudonymKey(b"another-key-0123456789", "test")).manifest
    assert (a["path"] == b["path"]).all()
    assert not set(a["patient_id"]) & set(b["patient_id"])
    # same key: same pseudonyms (stable across runs)
    pd.testing.assert_frame_equal(a, index_tree(root, key=KEY, workers=2).manifest)


def test_missing_patient_id_groups_by_study(tmp_path, caplog):
    root = tmp_path / "t"
    root.mkdir()
    for i in range(4):
        ds = make_dataset(i)  # studies: 0, 0, 1, 1
        del ds.PatientID
        ds.save_as(root / f"{i}.dcm", enforce_file_format=True)
    with caplog.at_level(logging.WARNING):
        m = index_tree(root, key=KEY).manifest
    assert m["patient_id"].nunique() == 2
    assert m.groupby("study_id")["patient_id"].nunique().eq(1).all()
    assert "no PatientID" in caplog.text


def test_errors_and_log_never_quote_identifiers(tmp_path, caplog):
    """pydicom's value validation quotes a malformed UID in its warning and log line; the
    indexer reads identifiers raw, so neither a good file's nor a broken file's reach the log."""
    root = tmp_path / "t"
    root.mkdir()
    for name, keep_pixels in (("good.dcm", True), ("broken.dcm", False)):
        ds = make_dataset(0)
        with pytest.warns(UserWarning, match="Invalid value for VR UI"):
            ds.StudyInstanceUID = "1.2.MRN-SECRET-4711"
        if not keep_pixels:
            del ds.PixelData
        ds.save_as(root / name, enforce_file_format=True)
    caplog.clear()  # writing logged the UID; only what the indexer logs counts
    with caplog.at_level(logging.DEBUG):
        result = index_tree(root, key=KEY)
    assert list(result.manifest["path"]) == ["good.dcm"]
    assert result.manifest.loc[0, "study_id"] == KEY.pseudonym("1.2.MRN-SECRET-4711", "study")
    assert "no pixel data" in result.errors.loc[0, "reason"]
    assert "MRN-SECRET" not in caplog.text + result.errors.to_csv() + result.manifest.to_csv()


# --------------------------------------------------------------------------- labels


@pytest.fixture
def small_tree(tmp_path):
    root = tmp_path / "tree"
    truth = write_tree(root, 12, corrupt_fraction=0)
    return root, truth


def test_labels_joined_by_file_stem(small_tree, tmp_path):
    root, truth = small_tree
    paths = sorted(truth["good"])
    # labels for all but the last file; names given with their suffix where they have one
    lab = pd.DataFrame({"file": [Path(p).name for p in paths[:-1]],
                        "pneumonia": [i % 2 for i in range(len(paths) - 1)]})
    lab.to_csv(tmp_path / "labels.csv", index=False)
    out = tmp_path / "m.csv"
    assert cli.main([str(root), "--out", str(out), "--labels", str(tmp_path / "labels.csv"),
                     "--label-key", "file", "--label-columns", "pneumonia", "--quiet"]) == 0
    m = pd.read_csv(out)
    assert len(m) == len(paths) - 1  # the unlabelled one is dropped
    expected = dict(zip(lab["file"], lab["pneumonia"]))
    assert all(expected[Path(p).name] == v for p, v in zip(m["path"], m["pneumonia"]))
    assert "file" not in m.columns


@pytest.mark.parametrize("attribute", ["PatientID", "AccessionNumber"])
def test_labels_joined_by_raw_identifier_are_never_written(small_tree, tmp_path, attribute):
    root, truth = small_tree
    n = len(truth["good"])
    ident = patient_id if attribute == "PatientID" else accession
    keys = sorted({ident(i) for i in range(n)})
    truth_label = {k: j % 2 for j, k in enumerate(keys)}
    pd.DataFrame({attribute: list(truth_label), "label": list(truth_label.values()),
                  "PatientName": SECRET_NAME}).to_csv(tmp_path / "ris.csv", index=False)
    out = tmp_path / "m.csv"
    assert cli.main([str(root), "--out", str(out), "--labels", str(tmp_path / "ris.csv"),
                     "--label-key", attribute, "--quiet"]) == 0
    text = out.read_text()
    assert "SECRET" not in text and SECRET_NAME not in text
    m = pd.read_csv(out)
    assert len(m) == n
    for p, label in zip(m["path"], m["label"]):
        i = int(Path(p).name.removeprefix("IM").removeprefix("1.2.3.").removesuffix(".dcm"))
        assert label == truth_label[ident(i)]


def test_label_join_refuses_repeated_keys_and_identifying_columns(small_tree, tmp_path):
    root, _ = small_tree
    result = index_tree(root, key=KEY, match_on="PatientID")
    rep = tmp_path / "rep.csv"
    pd.DataFrame({"PatientID": [patient_id(0), patient_id(0)], "label": [0, 1]}).to_csv(rep, index=False)
    with pytest.raises(DataError, match=r"repeats a value \(lines 2 and 3\)") as err:
        join_labels(result.manifest, rep, key_column="PatientID", label_columns=["label"],
                    match_on="PatientID", key=KEY)
    assert "SECRET" not in str(err.value)
    with pytest.raises(DataError, match="identifying"):
        join_labels(result.manifest, rep, key_column="label", label_columns=["PatientID"],
                    match_on="stem", key=KEY)


def test_keep_unlabelled_leaves_empty_labels(small_tree, tmp_path):
    root, truth = small_tree
    first = sorted(truth["good"])[0]
    pd.DataFrame({"f": [Path(first).name], "label": [1]}).to_csv(tmp_path / "l.csv", index=False)
    m, stats = join_labels(index_tree(root, key=KEY).manifest, tmp_path / "l.csv", key_column="f",
                           label_columns=None, match_on="stem", key=KEY, keep_unlabelled=True)
    assert stats == {"labelled": 1, "unlabelled": len(truth["good"]) - 1, "unused_label_rows": 0}
    assert m.loc[m["path"] == first, "label"].item() == 1 and m["label"].isna().sum() == len(m) - 1


def test_cli_reports_a_missing_folder(tmp_path, capsys):
    assert cli.main([str(tmp_path / "nope"), "--out", str(tmp_path / "m.csv"), "--quiet"]) == 2
    assert "is not a folder" in capsys.readouterr().err


@pytest.fixture(autouse=True)
def _key_env(monkeypatch):
    monkeypatch.setenv("MEDREC_PSEUDONYM_KEY", "k" * 32)
    monkeypatch.setenv("XDG_CONFIG_HOME", os.devnull + "-never-used")


@pytest.mark.parametrize("folder", ["MRN-SECRET-00000", "zyxwv_quentin", "Zyxwv"])
def test_tree_filed_by_patient_id_or_name_is_refused(tmp_path, capsys, folder):
    root = tmp_path / "t"
    (root / folder).mkdir(parents=True)
    make_dataset(0).save_as(root / folder / "1.dcm", enforce_file_format=True)
    out = tmp_path / "m.csv"
    assert cli.main([str(root), "--out", str(out), "--quiet"]) == 2
    assert "contain an identifier of their own file" in capsys.readouterr().err
    assert not out.exists()
    assert cli.main([str(root), "--out", str(out), "--quiet", "--allow-identifying-paths"]) == 0
    assert len(pd.read_csv(out)) == 1


# --------------------------------------------------------------------------- subgroup and series columns


@pytest.mark.parametrize(("sex", "age", "birth", "study", "band", "sex_out"), [
    ("F", "047Y", SECRET_BIRTH, "20240101", "40-49", "F"),  # PatientAge wins over the dates
    ("M", None, "19800615", "20240614", "40-49", "M"),  # 43 years and 364 days
    ("M", None, "19800615", "20240615", "40-49", "M"),  # the 44th birthday
    ("O", None, "19300101", "20240101", "90+", "O"),  # 94: Safe Harbor's single top band
    ("F", "018M", None, None, "0-9", "F"),  # months
    ("F", "003W", None, None, "0-9", "F"),
    ("X", "", None, "20240101", "", ""),  # no age, an invalid sex code
    ("", "1O5Y", "20300101", "20240101", "", ""),  # garbled age, birth after the study
])
def test_sex_and_age_band_never_the_date(tmp_path, sex, age, birth, study, band, sex_out):
    root = tmp_path / "t"
    root.mkdir()
    ds = make_dataset(0)
    ds.PatientSex = sex
    for keyword, value in (("PatientAge", age), ("PatientBirthDate", birth), ("StudyDate", study)):
        if value is None:
            delattr(ds, keyword) if keyword in ds else None
        else:
            setattr(ds, keyword, value)
    ds.save_as(root / "a.dcm", enforce_file_format=True)
    m = index_tree(root, key=KEY).manifest
    assert (m.loc[0, "sex"] if isinstance(m.loc[0, "sex"], str) else "") == sex_out
    assert (m.loc[0, "age_band"] if isinstance(m.loc[0, "age_band"], str) else "") == band
    text = m.to_csv(index=False)
    for secret in {SECRET_BIRTH, birth, study, age} - {None, ""}:
        assert secret not in text


def test_view_position_only_as_a_code(tmp_path):
    root = tmp_path / "t"
    root.mkdir()
    for i, view in enumerate(["pa", "LL", "<script>", "AP ERECT SUPINE LONG"]):
        ds = make_dataset(i)
        ds.ViewPosition = view
        ds.save_as(root / f"{i}.dcm", enforce_file_format=True)
    views = index_tree(root, key=KEY).manifest["view_position"].fillna("")
    assert views.tolist() == ["PA", "LL", "", ""]


def test_series_columns_match_pydicom(tmp_path):
    root = tmp_path / "t"
    root.mkdir()
    ds = make_dataset(0)
    ds.InstanceNumber, ds.SliceThickness = 17, 1.25
    ds.ImagePositionPatient = [-120.5, 80.0, 33.75]
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]  # sagittal: rows along y, columns down z
    ds.save_as(root / "a.dcm", enforce_file_format=True)
    make_dataset(1).save_as(root / "b.dcm", enforce_file_format=True)  # a radiograph: no geometry
    m = index_tree(root, key=KEY).manifest.set_index("path")
    full = pydicom.dcmread(root / "a.dcm")
    # (0,1,0) x (0,0,-1) = (1*-1 - 0*0, 0*0 - 0*-1, 0*0 - 1*0) = (-1, 0, 0)
    assert m.loc["a.dcm", "slice_position"] == pytest.approx(-float(full.ImagePositionPatient[0]))
    assert (m.loc["a.dcm", "instance_number"], m.loc["a.dcm", "slice_thickness"]) == (17, 1.25)
    assert m.loc["a.dcm", "series_id"] == KEY.pseudonym(full.SeriesInstanceUID, "series")
    assert pd.isna(m.loc["b.dcm", "slice_position"]) and pd.isna(m.loc["b.dcm", "instance_number"])


def test_header_declaring_a_huge_image_is_an_error_row(tmp_path):
    from medrec.io.limits import Limits, use_limits

    root = tmp_path / "t"
    root.mkdir()
    ds = make_dataset(0, size=64)
    ds.save_as(root / "ok.dcm", enforce_file_format=True)
    ds = make_dataset(1, size=64)
    ds.compress(uid.RLELossless)
    ds.Rows = ds.Columns = 46000  # a 758-byte file that would decode to 4 GB
    ds.save_as(root / "bomb.dcm", enforce_file_format=True)
    with use_limits(Limits()):
        result = index_tree(root, key=KEY)
    assert result.manifest["path"].tolist() == ["ok.dcm"]
    assert result.errors["path"].tolist() == ["bomb.dcm"]
    assert "46000 x 46000" in result.errors.loc[0, "reason"] and "io.max_pixels" in result.errors.loc[0, "reason"]
