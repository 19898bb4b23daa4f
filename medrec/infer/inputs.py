"""What `medrec.predict --input` names, as a table of images: manifest CSV, npz, folder or one file."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medrec.config import ExperimentConfig
from medrec.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class Inputs:
    """The images to predict: path, image_id, patient_id (pseudonymous) and label columns."""

    table: pd.DataFrame
    kind: str  # "image", "folder", "manifest" or "npz"
    errors: list[dict[str, str]] = field(default_factory=list)
    skipped: int = 0  # folder files that are not images (README.txt, .csv, ...)
    pseudonym_key_id: str | None = None



def collect_inputs(path: Path, cfg: ExperimentConfig, *, split: str = "test",
                   allow_identifying_paths: bool = False) -> Inputs:
    """Turn `--input` into a table of images to predict.

    PATH is a manifest CSV (.csv), a MedMNIST-style npz (.npz, `split`), a folder (searched
    recursively for DICOM, PNG, JPEG and NIfTI files) or one image file.

    Raises:
        DataError: PATH does not exist, or a folder holds no image file.
    """
    from medrec.data.manifest import image_id_for

    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise DataError(f"--input {path} does not exist; give a DICOM/PNG/NIfTI file, a folder, a manifest CSV or an npz")
    name = path.name.lower()
    if path.is_file() and name.endswith(".csv"):
        return _manifest_inputs(path, cfg, allow_identifying_paths)
    if path.is_file() and name.endswith(".npz"):
        from medrec.data.sources import medmnist_table

        table = medmnist_table(path, split, None)
        table["image_id"] = [image_id_for(p) for p in table["path"]]
        return Inputs(_with_labels(table, cfg), "npz")
    if path.is_dir():
        files, errors, skipped = _scan_folder(path)
        if not files and not errors:
            raise DataError(f"--input {path}: no DICOM, PNG, JPEG or NIfTI file found ({skipped} other file(s))")
        inputs = _file_inputs(files, cfg, "folder", path, allow_identifying_paths)
        inputs.errors, inputs.skipped = errors, skipped
        return inputs
    return _file_inputs([path], cfg, "image", None, allow_identifying_paths)



def refuse_too_large(inputs: Inputs) -> Inputs:
    """Move every input whose header declares more than the io limits (`medrec.io.preflight`, header
    only, no model loaded) from the table to `inputs.errors`, with the reader's own message.

    Raises:
        DataError: no input is left to predict; the message gives the count and each reason.
    """
    from medrec.errors import ImageTooLargeError
    from medrec.io.preflight import check_file

    refused: dict[str, str] = {}
    for path in dict.fromkeys(inputs.table["path"]):
        try:
            check_file(path)
        except ImageTooLargeError as exc:
            refused[path] = str(exc)
    if not refused:
        return inputs
    inputs.errors = inputs.errors + [{"path": p, "reason": r} for p, r in refused.items()]
    inputs.table = inputs.table[~inputs.table["path"].isin(refused)].reset_index(drop=True)
    log.warning("%d input(s) refused before decoding: their headers declare more than the io limits", len(refused))
    if inputs.table.empty:
        reasons = [r if r.startswith(str(e["path"])) else f"{e['path']}: {r}" for e in inputs.errors for r in [e["reason"]]]
        shown = "\n  ".join(reasons[:20]) + (f"\n  ... and {len(reasons) - 20} more" if len(reasons) > 20 else "")
        raise DataError(f"nothing to predict: all {len(reasons)} input(s) refused ({len(refused)} over the io "
                        f"limits, checked before loading any model):\n  {shown}")
    return inputs


def _with_slices(table: pd.DataFrame, cfg: ExperimentConfig) -> pd.DataFrame:
    """`data.slice: all` runs predict every slice of each volume, as they were trained."""
    if cfg.data.slice != "all":
        return table
    from medrec.data.sources import expand_slices

    return expand_slices(table).reset_index(drop=True)



def _manifest_inputs(path: Path, cfg: ExperimentConfig, allow_identifying_paths: bool = False) -> Inputs:
    from medrec.data.manifest import NPZ_SEP, first_duplicate, image_ids
    from medrec.data.sources import load_manifest_csv
    from medrec.io.headers import check_identifying_paths

    table = load_manifest_csv(path, root=None, image_column=cfg.data.image_column,
                              patient_column=cfg.data.patient_column)
    files = [Path(p) for p in table["path"].astype(str).unique() if NPZ_SEP not in p]
    check_identifying_paths(files, path.parent, allow_identifying_paths)  # as for folders (medrec.index)
    table = _with_slices(table, cfg)
    dup = first_duplicate(table)
    if dup is not None:
        raise DataError(f"{path}: image {dup} is listed twice")
    if "image_id" not in table.columns:
        table["image_id"] = image_ids(table)
    missing = table["patient_id"].isna()
    table["patient_id"] = table["patient_id"].astype(str).where(~missing, table["image_id"])
    return Inputs(_with_labels(table, cfg), "manifest")



def _with_labels(table: pd.DataFrame, cfg: ExperimentConfig) -> pd.DataFrame:
    """path, image_id, patient_id and the run's label columns as named in predictions CSVs."""
    out = table[["path", "image_id", "patient_id"]].astype(str).reset_index(drop=True)
    if "slice" in table.columns:
        out["slice"] = pd.to_numeric(table["slice"], errors="coerce").astype("Int64").to_numpy()
    cols = [c for c in cfg.data.label_columns if c in table.columns]
    if not cols:
        return out
    values = {c: pd.to_numeric(table[c], errors="coerce").to_numpy() for c in cols}
    if cfg.data.task in ("binary", "multiclass"):
        out["label"] = values[cols[0]]
    else:
        for c in cfg.data.label_columns:
            out[f"label_{c}"] = values.get(c, np.full(len(out), np.nan))
    return out



def _scan_folder(root: Path) -> tuple[list[Path], list[dict[str, str]], int]:
    from medrec.io.formats import scan_folder  # the one registry of image files (issue 14)

    found = scan_folder(root)
    return found.images, found.errors, len(found.skipped)



def _file_inputs(files: list[Path], cfg: ExperimentConfig, kind: str, root: Path | None = None,
                 allow_identifying_paths: bool = False) -> Inputs:
    """Image files; DICOM patients get keyed pseudonyms, others their image_id."""
    from medrec.data.manifest import image_ids

    paths = [str(f) for f in files]
    patients, key_id = _dicom_pseudonyms(files, cfg, root, allow_identifying_paths)
    table = _with_slices(pd.DataFrame({"path": paths, "patient_id": patients}), cfg)
    table.insert(1, "image_id", image_ids(table))
    table["patient_id"] = [p or i for p, i in zip(table["patient_id"], table["image_id"])]
    return Inputs(table, kind, pseudonym_key_id=key_id)



def _dicom_pseudonyms(files: list[Path], cfg: ExperimentConfig, root: Path | None,
                      allow_identifying_paths: bool) -> tuple[list[str | None], str | None]:
    """Keyed pseudonym of each DICOM file's PatientID (None when absent or not DICOM), as the indexer
    makes them, after the indexer's identifying-path check (`medrec.io.headers.patient_pseudonyms`)."""
    from medrec.io.headers import patient_pseudonyms

    return patient_pseudonyms(files, root, cfg.privacy.pseudonym_key_env,
                              allow_identifying_paths=allow_identifying_paths)

