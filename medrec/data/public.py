"""Adapters for class-per-folder trees and public chest X-ray label files.

`load_public(cfg, where)` turns one on-disk layout into a table with the manifest contract's
columns (absolute `path`, `patient_id`, label columns); `medrec.data.sources.load_source`
validates it. `where` is the resolved `data.manifest`; image paths are resolved against
`data.root` (default: `where` for a folder, else the label file's folder).

Label columns. Single-label sources (folder, rsna) name their one column after
`data.label_columns` (default "label"). Multilabel sources (nih, chexpert) keep one column
per finding under its published name; with the default `label_columns: [label]` all of them
are used, and the table says which in `table.attrs["label_columns"]`. Naming a subset
(e.g. `[Pneumonia]` with `task: binary`) selects those.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from medrec.config import DataConfig
from medrec.errors import DataError

log = logging.getLogger(__name__)

LABEL_COLUMNS_ATTR = "label_columns"
DEFAULT_LABELS = ("label",)
from medrec.io.formats import IMAGE_SUFFIXES  # noqa: E402 - the one registry of image files
NIH_FINDINGS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)
CHEXPERT_OBSERVATIONS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices",
)
# Kermany et al. pediatric chest X-rays: NORMAL/IM-0115-0001.jpeg, NORMAL/NORMAL2-IM-1427-0001.jpeg,
# PNEUMONIA/person1_bacteria_1.jpeg. IM-0115 and NORMAL2-IM-0115 are grouped as one patient:
# if they are two, the folds are a little coarser; if they are one, splitting them would leak.
PATIENT_PATTERNS = (
    re.compile(r"^(?:NORMAL2-)?(IM-\d+)-\d+"),
    re.compile(r"^(person\d+)_", re.IGNORECASE),
)


def load_public(cfg: DataConfig, where: Path) -> pd.DataFrame:
    """The manifest table of `cfg.source` (folder, nih, chexpert, rsna) read from `where`.

    Raises:
        DataError: the layout or label file does not match the source, naming the fix.
    """
    adapters: dict[str, Callable[[DataConfig, Path], pd.DataFrame]] = {
        "folder": class_folders, "nih": nih_chestxray14, "chexpert": chexpert, "rsna": rsna_pneumonia,
    }
    if cfg.source not in adapters:
        raise DataError(f"data.source '{cfg.source}' has no public adapter; valid: {', '.join(adapters)}")
    return adapters[cfg.source](cfg, Path(where))


# --------------------------------------------------------------------------- class folders


def class_folders(cfg: DataConfig, where: Path) -> pd.DataFrame:
    """One sub-folder per class (optionally under split folders: where/train/NORMAL/...).

    `data.split` ("train", "train+val") picks split folders when they exist, else `where`
    holds the class folders itself; `data.val_split` adds a fixed validation split marked in
    a `split` column. Classes are the folder names, sorted, or `data.class_names` in order;
    for a binary task the second class is the positive one (NORMAL=0, PNEUMONIA=1).
    """
    if not where.is_dir():
        raise DataError(f"data.manifest {where} is not a folder; data.source folder needs a folder "
                        "with one sub-folder of images per class")
    column = _single_label_column(cfg)
    if cfg.task == "multilabel":
        raise DataError("data.source folder gives one class per image; use data.task binary or multiclass")
    parts = _split_folders(where, cfg.split, cfg.val_split)
    found = sorted({d.name for base, _ in parts for d in _subfolders(base)})
    classes = list(cfg.class_names) if cfg.class_names else found
    unknown = sorted(set(found) - set(classes))
    if unknown or not classes:
        raise DataError(f"{where}: class folder(s) {unknown or found} not in data.class_names {classes}")
    if cfg.task == "binary" and len(classes) != 2:
        raise DataError(f"{where}: data.task binary needs 2 class folders, found {classes}; "
                        "use data.task multiclass")
    rows = []
    for base, split in parts:
        for label, name in enumerate(classes):
            for path in _image_files(base / name):
                rows.append({"path": str(path), "class_name": name, column: label, "split": split})
    if not rows:
        raise DataError(f"{where}: no image files ({', '.join(IMAGE_SUFFIXES)}) in the class folders {classes}")
    table = pd.DataFrame(rows)
    table.insert(1, "patient_id", _patients_from_names(table["path"], where))
    if cfg.val_split is None:
        table = table.drop(columns="split")
    table.attrs[LABEL_COLUMNS_ATTR] = (column,)
    return table


def _split_folders(where: Path, split: str, val_split: str | None) -> list[tuple[Path, str]]:
    names = split.split("+")
    present = [n for n in names if (where / n).is_dir()]
    if not present:
        if val_split:
            raise DataError(f"{where}: data.val_split '{val_split}' needs split folders ({split}, {val_split})")
        return [(where, "train")]
    missing = [n for n in [*names, *([val_split] if val_split else [])] if not (where / n).is_dir()]
    if missing:
        valid = sorted(d.name for d in _subfolders(where))
        raise DataError(f"{where}: no split folder(s) {missing} for data.split/val_split; present: {valid}")
    return [(where / n, "train") for n in names] + ([(where / val_split, "val")] if val_split else [])


def _subfolders(folder: Path) -> list[Path]:
    # hidden folders and the __MACOSX folder of zip archives made on a Mac are not classes
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith((".", "__")))


def _image_files(folder: Path) -> list[Path]:
    from medrec.io.formats import scan_folder  # the one registry of image files (issue 14)

    return sorted(p.resolve() for p in scan_folder(folder).images)


def patient_from_name(name: str) -> str | None:
    """The patient id in a Kermany chest X-ray file name, or None ('IM-0115-0001.jpeg' -> 'IM-0115')."""
    for pattern in PATIENT_PATTERNS:
        match = pattern.match(name)
        if match:
            return match.group(1)
    return None


def _patients_from_names(paths: pd.Series, where: Path) -> list[str]:
    out, unknown = [], 0
    for p in paths:
        patient = patient_from_name(Path(p).name)
        if patient is None:
            unknown += 1
            patient = Path(p).relative_to(where.resolve()).as_posix()
        out.append(patient)
    if unknown:
        warnings.warn(
            f"{where}: {unknown} of {len(out)} image file names carry no recognised patient id; each of "
            "those is treated as its own patient, so images of one patient may fall into different folds "
            "(leakage). Write a manifest CSV with a patient_id column to group them.",
            stacklevel=3,
        )
    return out


# --------------------------------------------------------------------------- NIH ChestX-ray14


def nih_chestxray14(cfg: DataConfig, where: Path) -> pd.DataFrame:
    """NIH ChestX-ray14: Data_Entry_2017.csv, images in root/images*/ (any depth).

    'Finding Labels' ("Cardiomegaly|Effusion", "No Finding") becomes 14 0/1 columns;
    'Patient ID' groups the follow-up images of one patient.
    """
    csv = _label_file(where, "Data_Entry_2017*.csv")
    t = _read_csv(csv, ("Image Index", "Finding Labels", "Patient ID"))
    dummies = t["Finding Labels"].fillna("No Finding").str.get_dummies(sep="|")
    unknown = sorted(set(dummies.columns) - set(NIH_FINDINGS) - {"No Finding"})
    if unknown:
        raise DataError(f"{csv}: unknown finding(s) {unknown} in 'Finding Labels'; valid: {', '.join(NIH_FINDINGS)}")
    root = _root(cfg, csv)
    images = _images_by_name(root, "images*")
    table = pd.DataFrame({
        "path": t["Image Index"].map(lambda n: images.get(n)),
        "patient_id": t["Patient ID"].astype(str),
    })
    if "View Position" in t.columns:
        table["view_position"] = t["View Position"].astype(str)
    for finding in NIH_FINDINGS:
        table[finding] = dummies[finding].astype(int) if finding in dummies.columns else 0
    table = _select_labels(cfg, table, NIH_FINDINGS, csv)
    return _keep_existing(table, csv, root / "images*")


def _images_by_name(root: Path, pattern: str) -> dict[str, str]:
    folders = sorted(p for p in root.glob(pattern) if p.is_dir())
    if not folders:
        raise DataError(f"no {pattern}/ folder under {root}; NIH images live in images/ or "
                        "images_001/images/ ...; set data.root to the folder that holds them")
    out: dict[str, str] = {}
    for folder in folders:
        for path in _image_files(folder):
            out.setdefault(path.name, str(path))
    return out


# --------------------------------------------------------------------------- CheXpert


def chexpert(cfg: DataConfig, where: Path) -> pd.DataFrame:
    """CheXpert train.csv/valid.csv: 'Path' like CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg.

    Uncertain labels (-1) follow `data.uncertain_policy`: ignore -> missing (NaN, masked
    out of the loss), zeros -> 0, ones -> 1. Blank cells are missing.
    """
    csv = _label_file(where, "train.csv")
    t = _read_csv(csv, ("Path",))
    observations = tuple(c for c in CHEXPERT_OBSERVATIONS if c in t.columns)
    if not observations:
        raise DataError(f"{csv}: none of the CheXpert observation columns ({', '.join(CHEXPERT_OBSERVATIONS)})")
    first = Path(str(t["Path"].iloc[0])) if len(t) else Path()
    base = _root(cfg, csv)
    if not cfg.root and first.parts[:1] == (csv.parent.name,):
        base = csv.parent.parent  # paths start with the dataset folder (CheXpert-v1.0-small/) that holds the CSV
    patient = t["Path"].astype(str).str.extract(r"(patient\d+)", expand=False)
    if patient.isna().any():
        row = int(np.flatnonzero(patient.isna().to_numpy())[0]) + 2
        raise DataError(f"{csv}: line {row} has no 'patientNNNNN' folder in its Path")
    table = pd.DataFrame({"path": [os.path.normpath(base / p) for p in t["Path"].astype(str)],
                          "patient_id": patient})
    for c in ("Frontal/Lateral", "AP/PA"):
        if c in t.columns:
            table[c.lower().replace("/", "_")] = t[c]
    uncertain = {"ignore": np.nan, "zeros": 0.0, "ones": 1.0}[cfg.uncertain_policy]
    for c in observations:
        values = pd.to_numeric(t[c], errors="coerce")
        table[c] = values.mask(values == -1, uncertain)
    table = _select_labels(cfg, table, observations, csv)
    return _keep_existing(table, csv, base)


# --------------------------------------------------------------------------- RSNA Pneumonia


def rsna_pneumonia(cfg: DataConfig, where: Path) -> pd.DataFrame:
    """RSNA Pneumonia Detection: stage_2_train_labels.csv, one row per box, to one row per image.

    The label is the largest Target of the image's rows (1 if any box). Images are
    root/stage_2_train_images/<patientId>.dcm. RSNA publishes one image per patientId, so
    grouping is per image.
    """
    csv = _label_file(where, "stage_2_train_labels.csv")
    t = _read_csv(csv, ("patientId", "Target"))
    column = _single_label_column(cfg)
    target = pd.to_numeric(t["Target"], errors="coerce")
    if target.isna().any() or not target.isin([0, 1]).all():
        raise DataError(f"{csv}: column Target must hold 0/1 on every line")
    per_image = target.groupby(t["patientId"].astype(str), sort=False).max()
    root = _root(cfg, csv)
    folder = root / "stage_2_train_images"
    if not folder.is_dir():
        folder = root  # data.root may name the image folder itself
    table = pd.DataFrame({
        "path": [str(folder / f"{pid}.dcm") for pid in per_image.index],
        "patient_id": per_image.index,
        column: per_image.to_numpy().astype(int),
    })
    table = _keep_existing(table, csv, folder)
    table.attrs[LABEL_COLUMNS_ATTR] = (column,)
    return table


# --------------------------------------------------------------------------- shared


def _single_label_column(cfg: DataConfig) -> str:
    if len(cfg.label_columns) != 1:
        raise DataError(f"data.source {cfg.source} gives one label per image; data.label_columns must "
                        f"name one column, got {list(cfg.label_columns)}")
    return cfg.label_columns[0]


def _select_labels(cfg: DataConfig, table: pd.DataFrame, available: tuple[str, ...], source: Path) -> pd.DataFrame:
    """Record which label columns to use: all for the default ("label",), else the named ones."""
    wanted = available if tuple(cfg.label_columns) == DEFAULT_LABELS else tuple(cfg.label_columns)
    missing = [c for c in wanted if c not in available]
    if missing:
        raise DataError(f"{source}: data.label_columns {missing} unknown; valid: {', '.join(available)} "
                        "(or leave data.label_columns unset for all of them)")
    if cfg.task == "binary" and len(wanted) == 1 and table[wanted[0]].isna().any():
        # A binary loss needs a 0/1 target on every image: images without one are left out.
        missing_rows = int(table[wanted[0]].isna().sum())
        log.warning("%s: %d image(s) have no %s label (blank or uncertain with uncertain_policy ignore); "
                    "left out of the binary task", source, missing_rows, wanted[0])
        table = table.loc[table[wanted[0]].notna()].reset_index(drop=True)
    table.attrs[LABEL_COLUMNS_ATTR] = tuple(wanted)
    return table


def _label_file(where: Path, pattern: str) -> Path:
    where = where.resolve()
    if not where.is_dir():
        return where
    matches = sorted(where.glob(pattern))
    if not matches:
        raise DataError(f"no {pattern} in {where}; set data.manifest to the label CSV")
    return matches[0]


def _read_csv(path: Path, need: tuple[str, ...]) -> pd.DataFrame:
    try:
        table = pd.read_csv(path)
    except FileNotFoundError:
        raise DataError(f"label file {path} not found; set data.manifest to it") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not a readable CSV: {exc}") from None
    missing = [c for c in need if c not in table.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; present: {', '.join(map(str, table.columns))}. "
                        "Is data.source right for this file?")
    return table


def _root(cfg: DataConfig, label_file: Path) -> Path:
    return Path(cfg.root).expanduser().resolve() if cfg.root else label_file.parent.resolve()


def _keep_existing(table: pd.DataFrame, source: Path, where: Path) -> pd.DataFrame:
    """Drop listed images that are not on disk (partial downloads), loudly; none found is an error."""
    exists = np.array([isinstance(p, str) and os.path.exists(p) for p in table["path"]], dtype=bool)
    if not exists.any():
        raise DataError(f"{source}: none of the {len(table)} listed images found under {where}; "
                        "set data.root to the folder that holds them")
    if not exists.all():
        warnings.warn(f"{source}: {int((~exists).sum())} of {len(table)} listed images not found under "
                      f"{where}; using the {int(exists.sum())} found", stacklevel=3)
        attrs = table.attrs
        table = table.loc[exists].reset_index(drop=True)
        table.attrs = attrs
    return table
