"""Public-dataset adapters, each on a few lines of its real label format and tiny images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import uid
from pydicom.dataset import FileDataset, FileMetaDataset

from medrec.config import DataConfig
from medrec.data.manifest import validate_manifest
from medrec.data.public import (
    CHEXPERT_OBSERVATIONS,
    LABEL_COLUMNS_ATTR,
    NIH_FINDINGS,
    load_public,
    patient_from_name,
)
from medrec.data.sources import load_source
from medrec.errors import DataError

REPO = Path(__file__).resolve().parents[2]


def write_image(path: Path, value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).save(path)


def write_dicom(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = uid.generate_uid()
    meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = bytes(64)
    ds.save_as(path, enforce_file_format=True)


# --------------------------------------------------------------------------- class folders

KERMANY = {
    "train/NORMAL": ["IM-0115-0001.jpeg", "IM-0115-0002.jpeg", "NORMAL2-IM-0115-0001.jpeg", "IM-0117-0001.jpeg"],
    "train/PNEUMONIA": ["person1_bacteria_1.jpeg", "person1_virus_6.jpeg", "person1000_bacteria_2931.jpeg"],
    "val/NORMAL": ["NORMAL2-IM-1427-0001.jpeg"],
    "val/PNEUMONIA": ["person1946_bacteria_4874.jpeg"],
}


@pytest.fixture
def kermany(tmp_path):
    root = tmp_path / "chest_xray"
    for folder, names in KERMANY.items():
        for name in names:
            write_image(root / folder / name)
    (root / "train" / "NORMAL" / ".DS_Store").write_bytes(b"\0")
    return root


@pytest.mark.parametrize(("name", "patient"), [
    ("IM-0115-0001.jpeg", "IM-0115"), ("NORMAL2-IM-0115-0001.jpeg", "IM-0115"),
    ("person1_bacteria_1.jpeg", "person1"), ("person1_virus_6.jpeg", "person1"),
    ("person1000_bacteria_2931.jpeg", "person1000"), ("scan_17.png", None),
])
def test_kermany_patient_ids(name, patient):
    assert patient_from_name(name) == patient


def test_class_folders_kermany_train_split(kermany):
    m = load_source(DataConfig(source="folder", manifest=str(kermany)))
    expected = {str((kermany / folder / n).resolve()): int(folder.endswith("PNEUMONIA"))
                for folder, names in KERMANY.items() if folder.startswith("train/") for n in names}
    assert dict(zip(m.table["path"], m.table["label"])) == expected
    assert all(Path(p).is_absolute() for p in m.table["path"])
    pid = dict(zip(m.table["path"].map(lambda p: Path(p).name), m.table["patient_id"]))
    assert pid["IM-0115-0001.jpeg"] == pid["IM-0115-0002.jpeg"] == pid["NORMAL2-IM-0115-0001.jpeg"]
    assert pid["person1_bacteria_1.jpeg"] == pid["person1_virus_6.jpeg"] != pid["person1000_bacteria_2931.jpeg"]
    assert m.table["patient_id"].nunique() == 4


def test_class_folders_with_fixed_val_split(kermany):
    t = load_public(DataConfig(source="folder", manifest=str(kermany), val_split="val"), kermany)
    assert (t["split"] == "val").sum() == 2 and (t["split"] == "train").sum() == 7


def test_class_folders_class_names_order_sets_the_positive_class(kermany):
    cfg = DataConfig(source="folder", manifest=str(kermany), class_names=("PNEUMONIA", "NORMAL"))
    t = load_public(cfg, kermany)
    assert (t.loc[t["class_name"] == "NORMAL", "label"] == 1).all()


def test_class_folders_unknown_names_are_own_patients_with_warning(tmp_path):
    for cls in ("a", "b"):
        for i in range(2):
            write_image(tmp_path / cls / f"scan_{i}.png")
    with pytest.warns(UserWarning, match="4 of 4 image file names carry no recognised patient id"):
        m = load_source(DataConfig(source="folder", manifest=str(tmp_path)))
    assert m.table["patient_id"].nunique() == 4


def test_class_folders_binary_needs_two_classes(tmp_path):
    for cls in ("a", "b", "c"):
        write_image(tmp_path / cls / "person1_x.png")
    with pytest.raises(DataError, match="multiclass"):
        load_public(DataConfig(source="folder", manifest=str(tmp_path)), tmp_path)
    m = load_source(DataConfig(source="folder", manifest=str(tmp_path), task="multiclass"))
    assert sorted(m.table["label"]) == [0, 1, 2]


# --------------------------------------------------------------------------- NIH

NIH_CSV = """\
Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],
00000001_000.png,Cardiomegaly,0,1,58,M,PA,2682,2749,0.143,0.143,
00000001_001.png,Cardiomegaly|Emphysema,1,1,58,M,PA,2894,2729,0.143,0.143,
00000001_002.png,Cardiomegaly|Effusion,2,1,58,M,PA,2500,2048,0.168,0.168,
00000002_000.png,No Finding,0,2,81,M,PA,2500,2048,0.171,0.171,
00000003_000.png,Hernia,0,3,81,F,PA,2582,2991,0.143,0.143,
00000013_005.png,Emphysema|Infiltration|Pleural_Thickening|Pneumothorax,5,13,60,M,AP,3056,2544,0.139,0.139,
"""


@pytest.fixture
def nih(tmp_path):
    root = tmp_path / "nih"
    root.mkdir()
    (root / "Data_Entry_2017.csv").write_text(NIH_CSV)
    lines = NIH_CSV.splitlines()[1:]
    for k, line in enumerate(lines):  # Kaggle layout: images_001/images/, images_002/images/
        write_image(root / f"images_00{1 + k % 2}" / "images" / line.split(",")[0])
    return root


def nih_truth() -> dict[str, set[str]]:
    return {line.split(",")[0]: set(line.split(",")[1].split("|")) for line in NIH_CSV.splitlines()[1:]}


def test_nih_all_findings_by_default(nih):
    cfg = DataConfig(source="nih", manifest=str(nih / "Data_Entry_2017.csv"), task="multilabel")
    t = load_public(cfg, nih / "Data_Entry_2017.csv")
    assert t.attrs[LABEL_COLUMNS_ATTR] == NIH_FINDINGS
    truth = nih_truth()
    for _, row in t.iterrows():
        name = Path(row["path"]).name
        assert {f for f in NIH_FINDINGS if row[f] == 1} == truth[name] - {"No Finding"}
        assert Path(row["path"]).exists()
    assert dict(zip(t["path"].map(lambda p: Path(p).name), t["patient_id"]))["00000001_002.png"] == "1"
    # what sources.load_source will validate once it reads attrs (see the report)
    m = validate_manifest(t, task="multilabel", label_columns=t.attrs[LABEL_COLUMNS_ATTR], source="nih",
                          data_root=str(nih))
    assert m.labels.shape == (6, 14)


def test_nih_one_finding_as_binary_through_load_source(nih):
    cfg = DataConfig(source="nih", manifest=str(nih), label_columns=("Cardiomegaly",))
    m = load_source(cfg)
    truth = nih_truth()
    assert {Path(p).name: int(v) for p, v in zip(m.table["path"], m.table["Cardiomegaly"])} == {
        n: int("Cardiomegaly" in f) for n, f in truth.items()}
    assert m.table.groupby("patient_id").size().to_dict() == {"1": 3, "2": 1, "3": 1, "13": 1}


def test_nih_missing_images_dropped_with_warning_and_unknown_label_refused(nih):
    os.remove(next((nih / "images_001" / "images").iterdir()))
    with pytest.warns(UserWarning, match="1 of 6 listed images not found"):
        t = load_public(DataConfig(source="nih", manifest="x"), nih)
    assert len(t) == 5
    with pytest.raises(DataError, match="valid: Atelectasis"):
        load_public(DataConfig(source="nih", manifest="x", label_columns=("Pneumonia", "Covid")), nih)


# --------------------------------------------------------------------------- CheXpert

CHEXPERT_CSV = """\
Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,Fracture,Support Devices
CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg,Female,68,Frontal,AP,1.0,,,,,,,,,0.0,,,,1.0
CheXpert-v1.0-small/train/patient00002/study2/view1_frontal.jpg,Female,87,Frontal,AP,,,-1.0,1.0,,-1.0,-1.0,,-1.0,,-1.0,,1.0,
CheXpert-v1.0-small/train/patient00002/study1/view1_frontal.jpg,Female,83,Frontal,AP,,,,1.0,,,-1.0,,,,,,1.0,
CheXpert-v1.0-small/train/patient00002/study1/view2_lateral.jpg,Female,83,Lateral,,,,,1.0,,,-1.0,,,,,,1.0,
CheXpert-v1.0-small/train/patient00003/study1/view1_frontal.jpg,Male,41,Frontal,AP,,,,,,1.0,,,,0.0,,,,
"""


@pytest.fixture
def chexpert_root(tmp_path):
    base = tmp_path / "data"
    (base / "CheXpert-v1.0-small").mkdir(parents=True)
    (base / "CheXpert-v1.0-small" / "train.csv").write_text(CHEXPERT_CSV)
    for line in CHEXPERT_CSV.splitlines()[1:]:
        write_image(base / line.split(",")[0])
    return base / "CheXpert-v1.0-small"


def chexpert_cells() -> dict[str, dict[str, str]]:
    header, *lines = CHEXPERT_CSV.splitlines()
    names = header.split(",")
    return {line.split(",")[0]: dict(zip(names, line.split(","))) for line in lines}


@pytest.mark.parametrize("policy", ["ignore", "zeros", "ones"])
def test_chexpert_uncertain_policy(chexpert_root, policy):
    cfg = DataConfig(source="chexpert", manifest=str(chexpert_root / "train.csv"), task="multilabel",
                     uncertain_policy=policy)
    t = load_public(cfg, chexpert_root / "train.csv")
    assert t.attrs[LABEL_COLUMNS_ATTR] == CHEXPERT_OBSERVATIONS
    uncertain = {"ignore": None, "zeros": 0.0, "ones": 1.0}[policy]
    cells = chexpert_cells()
    for _, row in t.iterrows():
        rel = Path(row["path"]).relative_to(chexpert_root.parent).as_posix()
        assert Path(row["path"]).exists()
        assert row["patient_id"] == rel.split("/")[2]
        for obs in CHEXPERT_OBSERVATIONS:
            cell = cells[rel][obs]
            want = None if cell == "" else (uncertain if float(cell) == -1 else float(cell))
            assert (np.isnan(row[obs]) if want is None else row[obs] == want), (rel, obs, cell)
    validate_manifest(t, task="multilabel", label_columns=CHEXPERT_OBSERVATIONS, source="c",
                      data_root=str(chexpert_root))


def test_chexpert_binary_leaves_out_images_without_that_label(chexpert_root):
    cfg = DataConfig(source="chexpert", manifest=str(chexpert_root / "train.csv"), label_columns=("Edema",))
    m = load_source(cfg)
    cells = chexpert_cells()
    kept = {p: c["Edema"] for p, c in cells.items() if c["Edema"] not in ("", "-1.0")}
    assert sorted(Path(p).relative_to(chexpert_root.parent).as_posix() for p in m.table["path"]) == sorted(kept)
    assert set(m.table["patient_id"]) == {"patient00003"}


def test_chexpert_patients_group_studies(chexpert_root):
    t = load_public(DataConfig(source="chexpert", manifest="x", task="multilabel"), chexpert_root)
    assert t.groupby("patient_id").size().to_dict() == {"patient00001": 1, "patient00002": 3, "patient00003": 1}


# --------------------------------------------------------------------------- RSNA

RSNA_CSV = """\
patientId,x,y,width,height,Target
0004cfab-14fd-4e49-80ba-63a80b6bddd6,,,,,0
00313ee0-9eaa-42f4-b0ab-c148ed3241cd,,,,,0
00436515-870c-4b36-a041-de91049b9ab4,264.0,152.0,213.0,379.0,1
00436515-870c-4b36-a041-de91049b9ab4,562.0,152.0,256.0,453.0,1
00704310-78a8-4b38-8475-49f4573b2dbb,323.0,577.0,160.0,104.0,1
00704310-78a8-4b38-8475-49f4573b2dbb,695.0,575.0,162.0,137.0,1
"""


def test_rsna_one_row_per_image_with_max_target(tmp_path):
    (tmp_path / "stage_2_train_labels.csv").write_text(RSNA_CSV)
    lines = [line.split(",") for line in RSNA_CSV.splitlines()[1:]]
    truth: dict[str, int] = {}
    for line in lines:
        truth[line[0]] = max(truth.get(line[0], 0), int(line[-1]))
        write_dicom(tmp_path / "stage_2_train_images" / f"{line[0]}.dcm")
    m = load_source(DataConfig(source="rsna", manifest=str(tmp_path / "stage_2_train_labels.csv")))
    assert len(m.table) == len(truth) == 4
    assert {Path(p).stem: v for p, v in zip(m.table["path"], m.table["label"])} == truth
    assert (m.table["patient_id"] == m.table["path"].map(lambda p: Path(p).stem)).all()
    assert all(Path(p).parent.name == "stage_2_train_images" for p in m.table["path"])


def test_rsna_without_images_says_where_to_look(tmp_path):
    (tmp_path / "stage_2_train_labels.csv").write_text(RSNA_CSV)
    with pytest.raises(DataError, match="set data.root"):
        load_public(DataConfig(source="rsna", manifest="x"), tmp_path / "stage_2_train_labels.csv")


def test_wrong_source_for_the_file_names_the_columns(tmp_path):
    (tmp_path / "stage_2_train_labels.csv").write_text(RSNA_CSV)
    with pytest.raises(DataError, match="missing column.*Image Index.*Is data.source right"):
        load_public(DataConfig(source="nih", manifest="x"), tmp_path / "stage_2_train_labels.csv")


# --------------------------------------------------------------------------- MedMNIST (real file)


@pytest.mark.slow
def test_real_pneumoniamnist_through_the_medmnist_adapter():
    default = REPO.parent / "shared" / "datasets" / "pneumoniamnist" / "pneumoniamnist_trainval.npz"
    npz = Path(os.environ.get("MEDREC_PNEUMONIAMNIST", default))
    if not npz.exists():
        pytest.skip(f"{npz} absent; set MEDREC_PNEUMONIAMNIST to the PneumoniaMNIST npz")
    m = load_source(DataConfig(source="medmnist", manifest=str(npz), split="train", val_split="val"))
    assert m.task == "binary" and m.label_columns == ("label",)
    assert m.table["split"].value_counts().to_dict() == {"train": 4708, "val": 524}
    with np.load(npz) as f:
        truth = np.concatenate([f["train_labels"].ravel(), f["val_labels"].ravel()])
    np.testing.assert_array_equal(m.labels.ravel(), truth)
    assert m.table["patient_id"].is_unique  # MedMNIST has no patient ids: image-level groups
    assert len(load_source(DataConfig(source="medmnist", manifest=str(npz))).table) == 4708
