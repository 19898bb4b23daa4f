"""Keyed pseudonyms: HMAC-SHA256 by the book, a key that is never guessable, never printed."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
import threading
from pathlib import Path

import pytest

from medrec.errors import ConfigError
from medrec.privacy import PseudonymKey, PseudonymKeyWarning, default_key_file, load_key

ENV = "MEDREC_TEST_PSEUDONYM_KEY"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def test_pseudonym_is_hmac_sha256_of_kind_and_value():
    key = PseudonymKey(b"0123456789abcdef-key", "test")
    expected = hmac.new(b"0123456789abcdef-key", b"patient\x00MRN-123", hashlib.sha256).hexdigest()
    assert key.pseudonym("MRN-123") == "P" + expected[:16]
    assert key.pseudonym("  MRN-123 ") == key.pseudonym("MRN-123")  # DICOM space padding
    assert key.pseudonym("MRN-123", "study")[1:] != key.pseudonym("MRN-123", "patient")[1:]


def test_unkeyed_hash_is_not_what_we_write():
    """The brute-force attack an unkeyed hash allows: hash every candidate id and compare."""
    with pytest.warns(PseudonymKeyWarning):
        key = load_key(ENV)  # a fresh random per-installation key
    candidates = [f"{i:06d}" for i in range(2000)]
    target = key.pseudonym("001234")
    unkeyed = {hashlib.sha256(c.encode()).hexdigest()[:16]: c for c in candidates}
    assert target[1:] not in unkeyed


def test_env_key_wins_and_different_keys_disagree(monkeypatch):
    monkeypatch.setenv(ENV, "a-shared-site-key-of-32-chars!!!")
    a = load_key(ENV)
    assert a.source == f"env:{ENV}" and a.secret == b"a-shared-site-key-of-32-chars!!!"
    monkeypatch.setenv(ENV, "another-site-key-of-32-chars!!!!")
    b = load_key(ENV)
    assert a.pseudonym("MRN-1") != b.pseudonym("MRN-1")
    assert a.key_id != b.key_id
    assert not default_key_file().exists()  # an env key never creates the file


def test_short_env_key_is_refused(monkeypatch):
    monkeypatch.setenv(ENV, "short")
    with pytest.raises(ConfigError, match="at least 16"):
        load_key(ENV)


def test_key_file_created_once_private_and_reused():
    with pytest.warns(PseudonymKeyWarning, match="created a new random per-installation pseudonym key"):
        first = load_key(ENV)
    path = default_key_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_text().strip()) == 64  # 32 random bytes in hex
    with pytest.warns(PseudonymKeyWarning, match="is not set: using the per-installation"):
        again = load_key(ENV)
    assert again.pseudonym("MRN-1") == first.pseudonym("MRN-1")
    assert first.source == f"file:{path}"


def test_key_file_content_as_env_gives_the_same_pseudonyms(monkeypatch):
    """The documented way to share the per-installation key with another machine."""
    with pytest.warns(PseudonymKeyWarning):
        local = load_key(ENV)
    monkeypatch.setenv(ENV, default_key_file().read_text())
    assert load_key(ENV).pseudonym("MRN-9", "study") == local.pseudonym("MRN-9", "study")


def test_group_readable_key_file_is_refused():
    with pytest.warns(PseudonymKeyWarning):
        load_key(ENV)
    path = default_key_file()
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_key(ENV)


def test_no_key_and_no_create_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_key(ENV, key_file=tmp_path / "none.key", create=False)


@pytest.mark.filterwarnings("ignore::medrec.privacy.PseudonymKeyWarning")
def test_concurrent_first_use_shares_one_key(tmp_path):
    path = tmp_path / "k" / "pseudonym.key"
    keys: list[bytes] = []

    def use() -> None:
        keys.append(load_key(ENV, key_file=path).secret)

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(keys) == 8 and len(set(keys)) == 1
    assert [p.name for p in path.parent.iterdir()] == ["pseudonym.key"]  # no temp files left


def test_secret_never_in_repr():
    key = PseudonymKey(b"super-secret-value-xyz", "test")
    assert "super-secret" not in repr(key) and "super-secret" not in str(key.describe())


# --------------------------------------------------------------------------- identifier text


def _dicom(path, patient_id, charset=None, name="SMITH^JOHN", birth="19451231", accession="ACC5551234"):
    """A small DX DICOM whose identifiers are encoded in `charset` (pydicom encodes on save)."""
    import numpy as np
    from pydicom import uid
    from pydicom.dataset import FileDataset, FileMetaDataset

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = uid.generate_uid()
    meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    if charset:
        ds.SpecificCharacterSet = charset.split("\\") if "\\" in charset else charset
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid.generate_uid(), uid.generate_uid()
    ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.AccessionNumber = patient_id, name, birth, accession
    ds.Modality, ds.ViewPosition = "DX", "PA"
    ds.Rows = ds.Columns = 32
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (np.arange(32 * 32) * 3 % 4096).astype("<u2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


# (charset, a PatientID in it); the file stores the id in that charset's bytes.
NON_ASCII = [("ISO_IR 100", "MÜLLER-0042"), ("ISO_IR 144", "ИВАНОВ-77"), ("ISO_IR 192", "张伟-3141"),
             ("\\ISO 2022 IR 87", "ヤマダ00"), ("ISO_IR 126", "ΠΑΠΑΣ12")]


@pytest.mark.parametrize(("charset", "pid"), NON_ASCII)
def test_identifier_decoded_in_the_files_character_set(tmp_path, charset, pid):
    import pydicom

    from medrec.privacy import read_identifiers

    path = _dicom(tmp_path / "a.dcm", pid, charset)
    raw = pydicom.dcmread(path).get_item("PatientID").value
    assert isinstance(raw, bytes) and raw != pid.encode("utf-8") or charset == "ISO_IR 192"  # really re-encoded
    ids = read_identifiers(pydicom.dcmread(path, defer_size=1024))
    assert ids["PatientID"] == pid
    assert ids["PatientName"] == "SMITH^JOHN" and ids["PatientBirthDate"] == "19451231"


def test_decoder_normalises_to_nfc_and_strips_padding():
    from medrec.privacy import decode_identifier

    composed, decomposed = "Mu\u0308ller", "M\u00fcller"
    assert decode_identifier((composed + " ").encode("utf-8"), ["UTF8"]) == decomposed
    assert decode_identifier(b"\xdcBER\x00", ["iso8859"]) == "\u00dcBER"
    assert decode_identifier(b"   ", ["iso8859"]) is None


# --------------------------------------------------------------------------- identifying paths

IDS = {"PatientID": "12345", "PatientName": "SMITH^JOHN", "PatientBirthDate": "19451231",
       "AccessionNumber": "ACC5551234"}


@pytest.mark.parametrize(("rel", "ids", "found"), [
    ("SMITH^JOHN/19451231/ACC5551234/pt_12345/1.dcm", IDS,
     ("PatientID", "AccessionNumber", "PatientName", "PatientBirthDate")),
    ("pt_12345/1.dcm", IDS, ("PatientID",)),  # an id inside a longer name
    ("x/IM_12345.dcm", IDS, ("PatientID",)),
    ("IM123456.dcm", IDS, ()),  # 12345 is not a token of 123456, and 5 characters are not matched inside
    ("12345678/a.dcm", {"PatientID": "12345678"}, ("PatientID",)),
    ("1234/IM1.dcm", {"PatientID": "1234"}, ("PatientID",)),
    ("IM12345.dcm", {"PatientID": "1234"}, ()),
    ("patient7/1.dcm", {"PatientID": "7", "PatientName": "Li^Al"}, ()),  # 1-character id: whole names only
    ("LI_WEI/1.dcm", {"PatientName": "Li^Wei"}, ("PatientName",)),  # 2-letter parts, joined as in DICOM
    ("WeiLi/1.dcm", {"PatientName": "Li^Wei"}, ("PatientName",)),
    ("li/1.dcm", {"PatientName": "Li^Wei"}, ()),  # a lone 2-letter part is too common to count
    ("allimages/1.dcm", {"PatientName": "Li^Al"}, ()),
    ("DOE_JOHN/1.dcm", {"PatientID": "9", "PatientName": "Doe^John"}, ("PatientName",)),
    ("smith-j/1.dcm", IDS, ("PatientName",)),
    ("acc_5551234/1.dcm", IDS, ("AccessionNumber",)),
    ("5551234/1.dcm", {"AccessionNumber": "5551234"}, ("AccessionNumber",)),
    ("export/1945-12-31/1.dcm", IDS, ("PatientBirthDate",)),
    ("31.12.1945/1.dcm", IDS, ("PatientBirthDate",)),
    ("12_31_1945/1.dcm", IDS, ("PatientBirthDate",)),
    ("dob311245/1.dcm", IDS, ("PatientBirthDate",)),
    ("IM3112450.dcm", IDS, ()),  # a 6-digit date only as a whole number
    ("311245/1.dcm", IDS, ("PatientBirthDate",)),
    ("12-31-45/1.dcm", IDS, ("PatientBirthDate",)),
    ("31Dec1945/1.dcm", IDS, ("PatientBirthDate",)),
    ("dec 31, 1945/1.dcm", IDS, ("PatientBirthDate",)),
    ("born_19451231_ct/1.dcm", IDS, ("PatientBirthDate",)),
    ("1.2.840.113619.2.55.3.19451230/1.dcm", IDS, ()),
    ("export/series1/1.dcm", IDS, ()),
    ("export/series1/1.dcm", {}, ()),
])
def test_path_identifies(rel, ids, found):
    from medrec.privacy import path_identifies

    assert path_identifies(rel, ids) == found


# --------------------------------------------------------------------------- indexer and predict

KEY_TEXT = "test-key-0123456789abcdef"
IDENTIFYING_REL = "SMITH^JOHN/19451231/ACC5551234/pt_12345/1.dcm"
SECRETS = [r"smith", r"john", r"19451231", r"acc5551234", r"5551234", r"(?<![\d.])12345(?!\d)"]


def _index(tree, out, *extra):
    from medrec import index

    return index.main([str(tree), "--out", str(out), "--quiet", *extra])


def _predict(run, tree, out, *extra):
    from medrec.predict import main

    return main(["--run", str(run), "--input", str(tree), "--out", str(out), "--quiet", *extra])


def test_non_ascii_patient_ids_get_one_pseudonym_from_indexer_and_predict(samples_run, tmp_path, monkeypatch):
    import pandas as pd

    monkeypatch.setenv("MEDREC_PSEUDONYM_KEY", KEY_TEXT)
    tree = tmp_path / "tree"
    for i, (charset, pid) in enumerate(NON_ASCII):
        _dicom(tree / f"case{i}" / "1.dcm", pid, charset, name="Doe^Jane", accession="A1")
    # the same patient exported again by a UTF-8 system: the same person, the same pseudonym
    _dicom(tree / "again" / "1.dcm", NON_ASCII[0][1], "ISO_IR 192", name="Doe^Jane", accession="A2")
    assert _index(tree, tmp_path / "m.csv") == 0
    assert _predict(samples_run[0], tree, tmp_path / "p" / "preds.csv") == 0
    manifest = pd.read_csv(tmp_path / "m.csv", dtype=str).set_index("path")["patient_id"]
    preds = pd.read_csv(tmp_path / "p" / "preds.csv", dtype=str)
    preds = preds.set_index(preds["path"].map(lambda p: Path(p).relative_to(tree).as_posix()))["patient_id"]
    key = PseudonymKey(KEY_TEXT.encode(), "test")
    expected = {f"case{i}/1.dcm": key.pseudonym(pid, "patient") for i, (_, pid) in enumerate(NON_ASCII)}
    expected["again/1.dcm"] = expected["case0/1.dcm"]
    assert manifest.to_dict() == expected
    assert preds.to_dict() == expected


def test_identifying_path_refused_by_indexer_and_predict_and_kept_out_of_every_output(
        samples_run, tmp_path, monkeypatch, capsys, caplog):
    import re

    monkeypatch.setenv("MEDREC_PSEUDONYM_KEY", KEY_TEXT)
    tree = tmp_path / "tree"
    _dicom(tree / IDENTIFYING_REL, "12345", "ISO_IR 100")
    _dicom(tree / "other" / "2.dcm", "67890", "ISO_IR 100", name="Roe^Ann", birth="19700101", accession="B77")
    idx, pred = tmp_path / "index" / "m.csv", tmp_path / "pred" / "p.csv"
    assert _index(tree, idx) == 2
    assert _predict(samples_run[0], tree, pred) == 2
    err = capsys.readouterr().err
    for kind in ("AccessionNumber (1)", "PatientBirthDate (1)", "PatientID (1)", "PatientName (1)"):
        assert err.count(kind) == 2  # both refusals name every kind found, and no value
    assert not idx.parent.exists() and not pred.parent.exists()  # nothing written

    assert _index(tree, idx, "--allow-identifying-paths") == 0
    assert _predict(samples_run[0], tree, pred, "--allow-identifying-paths", "--cam") == 0
    printed = capsys.readouterr()
    outputs = [p for p in [*idx.parent.rglob("*"), *pred.parent.rglob("*")] if p.is_file()]
    assert {p.name for p in outputs} >= {"m.csv", "m_errors.csv", "p.csv", "p.errors.csv", "p.meta.json"}
    assert any(p.suffix == ".png" for p in outputs)  # CAM files, named by image_id
    # The paths were allowed: cut them out, and nothing else may hold an identifier (ids, file
    # names, reasons, metadata, logs).
    allowed = [str(tree / IDENTIFYING_REL), IDENTIFYING_REL]
    texts = {str(p.relative_to(tmp_path)): p.read_bytes().decode("utf-8", "replace") for p in outputs}
    texts |= {"stdout": printed.out, "stderr": printed.err, "log": caplog.text,
              "file names": "\n".join(str(p.relative_to(tmp_path)) for p in outputs)}
    for name, text in texts.items():
        for path in allowed:
            text = text.replace(path, "<allowed path>")
        for secret in SECRETS:
            assert not re.search(secret, text, re.IGNORECASE), (name, secret)
    assert IDENTIFYING_REL in texts["index/m.csv"]  # the path itself is written: that is what was allowed


def test_show_identifiers_removed_with_a_clear_error(tmp_path):
    from medrec.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("privacy:\n  show_identifiers: true\n")
    with pytest.raises(ConfigError, match="show_identifiers was removed: medrec never writes"):
        load_config(path)
    path.write_text("privacy:\n  show_identifiers: false\n")  # as every saved run config holds it
    assert load_config(path).privacy.model_dump() == {"pseudonym_key_env": "MEDREC_PSEUDONYM_KEY"}


def test_predict_refuses_identifying_paths_listed_in_a_manifest(tmp_path, monkeypatch):
    import pandas as pd

    from medrec.config import ExperimentConfig
    from medrec.errors import DataError
    from medrec.infer.inputs import collect_inputs

    monkeypatch.setenv("MEDREC_PSEUDONYM_KEY", KEY_TEXT)
    _dicom(tmp_path / IDENTIFYING_REL, "12345", "ISO_IR 100")
    _dicom(tmp_path / "clean" / "2.dcm", "67890", "ISO_IR 100", name="Roe^Ann", birth="19700101", accession="B7")
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": [IDENTIFYING_REL, "clean/2.dcm"], "patient_id": ["P1", "P2"]}).to_csv(manifest, index=False)
    with pytest.raises(DataError, match=r"1 image path\(s\) .* AccessionNumber \(1\), PatientBirthDate \(1\), "
                                        r"PatientID \(1\), PatientName \(1\)") as err:
        collect_inputs(manifest, ExperimentConfig())
    assert not any(v in str(err.value).lower() for v in ("smith", "john", "19451231", "5551234", "12345"))
    table = collect_inputs(manifest, ExperimentConfig(), allow_identifying_paths=True).table
    assert len(table) == 2 and not table["image_id"].str.contains("pt_12345|SMITH|1945", case=False).any()
    pd.DataFrame({"path": ["clean/2.dcm"], "patient_id": ["P2"]}).to_csv(manifest, index=False)
    assert len(collect_inputs(manifest, ExperimentConfig()).table) == 1
