"""`medrec samples DIR`: the bundled sets as committed in data_samples/, with configs that run from DIR."""

from __future__ import annotations

import csv
import datetime as dt
import filecmp
from pathlib import Path

import pydicom
import pytest
import yaml

from medrec.config import load_config
from medrec.errors import MedrecError
from medrec.samples import SETS, config_text, write_samples
from medrec.samples.__main__ import main

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "data_samples"


def rows(folder: Path) -> list[dict]:
    with open(folder / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def three_patients(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("samples")
    assert main([str(out), "--patients", "3"]) == 0
    return out


@pytest.mark.parametrize("name", sorted(SETS))
def test_files_are_the_committed_bytes_of_the_first_patients(three_patients, name):
    written = rows(three_patients / name)
    committed = {r["path"]: r for r in rows(COMMITTED / name)}
    first_three = sorted({r["patient_id"] for r in committed.values()})[:3]
    assert written and {r["patient_id"] for r in written} == set(first_three)
    for r in written:
        assert r == committed[r["path"]]  # every column, the label included
        assert filecmp.cmp(three_patients / name / r["path"], COMMITTED / name / r["path"], shallow=False), r["path"]


@pytest.mark.parametrize("name", sorted(SETS))
def test_config_is_the_repository_config_relative_to_its_folder(three_patients, name):
    packaged = (three_patients / f"{name}.yaml").read_text()
    assert packaged == config_text(name)
    # One source of truth in two places: the only difference is the data_samples/ prefix.
    assert packaged == (ROOT / "configs" / f"{name}.yaml").read_text().replace("data_samples/", "")
    cfg = load_config(three_patients / f"{name}.yaml", [])
    manifest = Path(yaml.safe_load(packaged)["data"]["manifest"])
    assert not manifest.is_absolute() and (three_patients / manifest).is_file() and cfg.name == name


def test_sex_and_age_band_follow_the_dicom_headers():
    """Independent of the generator: PatientSex, and the age from PatientBirthDate at the first StudyDate."""
    by_patient: dict[str, list[tuple[dict, pydicom.Dataset]]] = {}
    for r in rows(COMMITTED / "chest_xray"):
        ds = pydicom.dcmread(COMMITTED / "chest_xray" / r["path"], stop_before_pixels=True)
        by_patient.setdefault(r["patient_id"], []).append((r, ds))
    bands = set()
    for studies in by_patient.values():
        birth = dt.datetime.strptime(studies[0][1].PatientBirthDate, "%Y%m%d").date()
        first = min(dt.datetime.strptime(ds.StudyDate, "%Y%m%d").date() for _, ds in studies)
        age = (first - birth).days // 365  # the generator draws birth = first study - (365 * age + 0..364) days
        band = "18-49" if age < 50 else "50-69" if age < 70 else "70+"
        for r, ds in studies:
            assert r["sex"] == ds.PatientSex and r["age_band"] == band
            bands.add(band)
    assert bands == {"18-49", "50-69", "70+"}
    assert {r["sex"] for r in rows(COMMITTED / "chest_xray")} == {"F", "M"}


def test_one_set_only_and_bad_requests(tmp_path, capsys):
    assert main([str(tmp_path), "--set", "mri_brain", "--patients", "1"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mri_brain", "mri_brain.yaml"]
    assert f"medrec finetune --config {tmp_path / 'mri_brain'}.yaml" in capsys.readouterr().out
    with pytest.raises(MedrecError, match="valid: chest_xray, ct_head, mri_brain"):
        write_samples(tmp_path, ["chest"])
    assert main([str(tmp_path), "--patients", "0"]) == 2 and "at least 1" in capsys.readouterr().err
