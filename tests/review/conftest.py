"""A small synthetic run folder for the review app: PNG and DICOM images, OOF predictions,
run.json, config.yaml and a Grad-CAM map, laid out as medrec.finetune / medrec.predict write them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medrec.config import DataConfig, ExperimentConfig, save_config

THRESHOLD = 0.48  # deliberately not 0.5: the app must take it from run.json
SIZE = 64
IDENTIFIERS = {"PatientName": "Doe^Jane", "PatientID": "MRN-778899", "PatientBirthDate": "19610203"}

# image_id, label, score, fold: TP, FN, FN (uncertain), FP, TN, FP (uncertain), TP (DICOM)
BINARY_CASES = [
    ("img0", 1, 0.91, 0),
    ("img1", 1, 0.12, 1),
    ("img2", 1, 0.45, 0),
    ("img3", 0, 0.70, 1),
    ("img4", 0, 0.08, 0),
    ("img5", 0, 0.55, 1),
    ("ct6", 1, 0.83, 0),
]


def write_png(path: Path, seed: int, size: int = SIZE) -> None:
    """A toy chest film: bright body, two darker lung fields, noise; `seed` moves a small blob."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / (size - 1)
    arr = 170 + 40 * (1 - ((xx - 0.5) ** 2 + (yy - 0.5) ** 2))
    for cx in (0.3, 0.7):
        arr -= 110 * (((xx - cx) / 0.17) ** 2 + ((yy - 0.5) / 0.3) ** 2 < 1)
    by, bx = 0.3 + 0.05 * (seed % 5), 0.25 + 0.1 * (seed % 3)
    arr += 60 * (((xx - bx) ** 2 + (yy - by) ** 2) < 0.004)
    arr += rng.normal(0, 6, (size, size))
    Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(path)


def write_dicom(path: Path, size: int = SIZE) -> np.ndarray:
    """A CT slice (int16 stored, slope 1, intercept -1024) with a file window and identifiers."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(7)
    stored = rng.integers(0, 2000, (size, size)).astype(np.int16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    for key, value in IDENTIFIERS.items():
        setattr(ds, key, value)
    ds.Modality = "CT"
    ds.BodyPartExamined = "CHEST"
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleSlope = 1
    ds.RescaleIntercept = -1024
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    ds.PixelSpacing = [0.7, 0.7]
    ds.PixelData = stored.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return stored


def build_run(root: Path, *, task: str = "binary", extra_rows: list[dict] | None = None, repeats: int = 1) -> Path:
    """Write data/ (images) and run/ (run.json, config.yaml, oof_predictions.csv, a CAM) under root."""
    data = root / "data"
    run = root / "run"
    data.mkdir(parents=True, exist_ok=True)
    (run / "predictions" / "cams").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (image_id, label, score, fold) in enumerate(BINARY_CASES):
        if image_id.startswith("ct"):
            path = data / f"{image_id}.dcm"
            write_dicom(path)
        else:
            path = data / f"{image_id}.png"
            write_png(path, i)
        for r in range(repeats):
            row = {"path": str(path), "image_id": image_id, "patient_id": f"p{i:03d}", "fold": fold, "repeat": r}
            if task == "binary":
                row.update(label=label, score=min(1.0, score + 0.02 * r))
            else:  # multilabel: "effusion" mirrors the binary table, "nodule" is its mirror image
                row.update(label_effusion=label, label_nodule=1 - label, score_effusion=score, score_nodule=1 - score)
            rows.append(row)
    rows += extra_rows or []
    pd.DataFrame(rows).to_csv(run / "oof_predictions.csv", index=False)
    yy, xx = np.mgrid[:SIZE, :SIZE] / (SIZE - 1)
    for image_id, (cy, cx) in {"img0": (0.3, 0.25), "img1": (0.35, 0.35)}.items():  # img2.. have none
        cam = np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / 0.01)).astype(np.float16)
        np.save(run / "predictions" / "cams" / f"{image_id}.npy", cam)

    labels = ["effusion", "nodule"] if task == "multilabel" else ["label"]
    info = {
        "name": "review-test",
        "created": "2025-01-01T00:00:00+00:00",
        "status": "finished",
        "task": task,
        "label_names": labels,
        "class_names": ["normal", "pneumonia"] if task == "binary" else None,
        "data_root": str(data),
        "operating_point": "youden",
        "threshold": THRESHOLD if task == "binary" else {"effusion": THRESHOLD, "nodule": 0.6},
        "folds": [{"fold": k, "repeat": 0, "n_train": 4, "n_val": 3, "best_epoch": 1} for k in (0, 1)],
    }
    (run / "run.json").write_text(json.dumps(info, indent=2))
    cfg = ExperimentConfig(
        name="review-test",
        data=DataConfig(manifest=str(data / "manifest.csv"), root=str(data), task=task, label_columns=tuple(labels)),
    )
    save_config(cfg, run / "config.yaml")
    return run


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return build_run(tmp_path)


@pytest.fixture
def multilabel_run(tmp_path: Path) -> Path:
    return build_run(tmp_path, task="multilabel")


@pytest.fixture
def evil_run(tmp_path: Path) -> Path:
    """A run whose predictions point at system files: relative traversal, absolute, symlink."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "link.png").symlink_to("/etc/passwd")
    bad = [
        {
            "path": "../../etc/passwd",
            "image_id": "evil_rel",
            "patient_id": "p900",
            "fold": 0,
            "repeat": 0,
            "label": 1,
            "score": 0.05,
        },
        {
            "path": "/etc/passwd",
            "image_id": "evil_abs",
            "patient_id": "p901",
            "fold": 0,
            "repeat": 0,
            "label": 1,
            "score": 0.06,
        },
        {
            "path": str(tmp_path / "data" / "link.png"),
            "image_id": "evil_link",
            "patient_id": "p902",
            "fold": 0,
            "repeat": 0,
            "label": 1,
            "score": 0.07,
        },
    ]
    return build_run(tmp_path, extra_rows=bad)


# ---------------------------------------------------------------- a CT volume run (data.slice: all)

CT_CHANNELS = ("brain", "subdural", "bone")
VOLUME_SHAPE = (32, 24, 5)  # not square, so that a missing transpose shows


def ct_volume() -> np.ndarray:
    """HU in which every voxel differs and slice k spans 10k - 20 .. 10k + 111: some of each
    slice falls below, inside and above the brain window (40/80)."""
    i, j, k = np.meshgrid(*(np.arange(n) for n in VOLUME_SHAPE), indexing="ij")
    return (10 * k + 4 * i + j - 20).astype(np.int16)


def build_volume_run(root: Path, *, image_ids: bool = True) -> Path:
    """A CT run trained on every slice: one NIfTI volume, two of its slices as separate cases
    (rows with the same path, slice 1 and 3) and one row without a slice (the middle one)."""
    import nibabel as nib

    data, run = root / "data", root / "run"
    data.mkdir(parents=True, exist_ok=True)
    run.mkdir(parents=True, exist_ok=True)
    path = data / "head.nii.gz"
    nib.save(nib.Nifti1Image(ct_volume(), np.eye(4)), path)
    rows = [
        {"path": str(path), "slice": 1, "image_id": "head-s1", "patient_id": "p1", "fold": 0, "label": 1, "score": 0.2},
        {"path": str(path), "slice": 3, "image_id": "head-s3", "patient_id": "p1", "fold": 0, "label": 0, "score": 0.9},
        {"path": str(path), "slice": -1, "image_id": "head", "patient_id": "p1", "fold": 1, "label": 1, "score": 0.7},
    ]
    table = pd.DataFrame(rows)
    if not image_ids:
        table = table.drop(columns="image_id")
    table.to_csv(run / "oof_predictions.csv", index=False)
    info = {"name": "ct-volume-test", "task": "binary", "label_names": ["bleed"], "data_root": str(data),
            "threshold": 0.5}
    (run / "run.json").write_text(json.dumps(info))
    cfg = ExperimentConfig.model_validate(
        {"name": "ct-volume-test",
         "data": {"manifest": str(data / "manifest.csv"), "root": str(data), "label_columns": ["bleed"],
                  "modality": "ct", "channels": list(CT_CHANNELS), "slice": "all"}}
    )
    save_config(cfg, run / "config.yaml")
    return run


@pytest.fixture
def volume_run(tmp_path: Path) -> Path:
    return build_volume_run(tmp_path)
