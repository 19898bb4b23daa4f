"""The manifest contract: one row per image with its path, patient id and labels.

Every data source is turned into this table before anything else sees it, so splits,
datasets and reports only ever deal with one shape:

    path        absolute path of the image (or an `npz::split::index` reference)
    image_id    stable, unique, non-identifying id of the image
    patient_id  pseudonymous patient id (images of one patient never straddle a split)
    <labels>    one column per label (binary: 1 column; multilabel: one per label, NaN = missing;
                multiclass: 1 integer column)
    slice       optional: the slice of a volume (NIfTI third axis, multi-frame DICOM frame);
                several rows may then share a path. `data.slice: all` fills it in.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medrec.errors import DataError

NPZ_SEP = "::"


@dataclass(frozen=True)
class Manifest:
    """A validated manifest table plus what the pipeline needs to know about its labels."""

    table: pd.DataFrame
    task: str
    label_columns: tuple[str, ...]
    class_names: tuple[str, ...]  # multiclass: class names; otherwise the label columns
    source: str  # the file or folder it came from (for fingerprints and messages)
    data_root: str

    @property
    def labels(self) -> np.ndarray:
        """Labels as float (N, L) for binary/multilabel, int (N,) for multiclass."""
        if self.task == "multiclass":
            return self.table[self.label_columns[0]].to_numpy(dtype=np.int64)
        return self.table[list(self.label_columns)].to_numpy(dtype=np.float32)

    @property
    def num_outputs(self) -> int:
        return len(self.class_names) if self.task == "multiclass" else len(self.label_columns)


def image_id_for(path: str, slice_index: int | None = None) -> str:
    """A short stable id of an image: a hash of its path (and slice `-s<k>`), never a path component.

    Folders and files are often named by MRN, patient name or birth date; the id goes into
    predictions, run folders, CAM file names and the review app, so none of the path shows
    in it. The path itself is hashed (SHA-256, 16 hex digits): it is written beside the id
    anyway, so the hash reveals nothing the row does not already hold.
    """
    if NPZ_SEP in path:
        _, split, index = path.split(NPZ_SEP)
        return f"{split}-{index}"
    suffix = "" if slice_index is None else f"-s{slice_index}"
    return f"img-{hashlib.sha256(path.encode()).hexdigest()[:16]}{suffix}"


def slice_of(value) -> int | None:
    """A `slice` cell as an int, or None for the default slice (empty cell, or a negative value)."""
    if value is None or pd.isna(value):
        return None
    k = int(value)
    return k if k >= 0 else None


def table_slices(table: pd.DataFrame) -> list[int | None]:
    """The `slice` column as `slice_of` values; all None without the column."""
    if "slice" not in table.columns:
        return [None] * len(table)
    return [slice_of(v) for v in pd.to_numeric(table["slice"], errors="coerce")]


def image_ids(table: pd.DataFrame) -> list[str]:
    """`image_id_for` of every row (path and slice)."""
    return [image_id_for(p, k) for p, k in zip(table["path"], table_slices(table))]


def first_duplicate(table: pd.DataFrame) -> str | None:
    """The path of the first row that repeats an earlier (path, slice), or None."""
    keys = ["path", "slice"] if "slice" in table.columns else ["path"]
    dup = table.duplicated(keys)
    return str(table.loc[dup, "path"].iloc[0]) if dup.any() else None


def validate_manifest(
    table: pd.DataFrame,
    *,
    task: str,
    label_columns: tuple[str, ...],
    source: str,
    data_root: str,
    class_names: tuple[str, ...] | None = None,
    check_files: bool = True,
) -> Manifest:
    """Check the contract and normalise dtypes.

    Raises:
        DataError: naming the manifest, the column or row and the fix.
    """
    need = ["path", "patient_id", *label_columns]
    missing = [c for c in need if c not in table.columns]
    if missing:
        raise DataError(
            f"{source}: missing column(s) {', '.join(missing)}; present: {', '.join(map(str, table.columns))}. "
            "Set data.image_column / data.patient_column / data.label_columns to the right names."
        )
    table = table.reset_index(drop=True).copy()
    table["path"] = table["path"].astype(str)
    if table["patient_id"].isna().any():
        row = int(np.flatnonzero(table["patient_id"].isna().to_numpy())[0])
        raise DataError(f"{source}: row {row + 2} has no patient_id; every image needs one (use the image id if unknown)")
    table["patient_id"] = table["patient_id"].astype(str)
    if "slice" in table.columns:
        table["slice"] = pd.to_numeric(table["slice"], errors="coerce").astype("Int64")
    dup = first_duplicate(table)
    if dup is not None:
        what = "image (and slice)" if "slice" in table.columns else "image"
        raise DataError(f"{source}: {what} {dup} is listed twice; each image must appear once")
    if check_files:
        _check_files(table, source)
    class_names = _check_labels(table, task, label_columns, source, class_names)
    if "image_id" not in table.columns:
        table["image_id"] = image_ids(table)
    return Manifest(table, task, tuple(label_columns), class_names, source, data_root)


def _check_files(table: pd.DataFrame, source: str) -> None:
    files = table["path"].str.split(NPZ_SEP).str[0].unique()
    absent = [f for f in files if not Path(f).exists()]
    if absent:
        more = f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""
        raise DataError(
            f"{source}: image file {absent[0]} does not exist{more}; paths are relative to data.root "
            "(default: the manifest's folder)"
        )


def _check_labels(
    table: pd.DataFrame, task: str, cols: tuple[str, ...], source: str, class_names: tuple[str, ...] | None
) -> tuple[str, ...]:
    for c in cols:
        table[c] = pd.to_numeric(table[c], errors="coerce")
    values = table[list(cols)].to_numpy(dtype=float)
    if task == "binary":
        if len(cols) != 1:
            raise DataError(f"{source}: data.task binary needs one label column, got {list(cols)}; use multilabel")
        _require(np.isin(values, [0, 1]).all(), f"{source}: column {cols[0]} must hold 0/1 for data.task binary")
        return tuple(cols)
    if task == "multilabel":
        ok = np.isnan(values) | np.isin(values, [0, 1])
        _require(ok.all(), f"{source}: multilabel columns {list(cols)} must hold 0, 1 or empty (missing)")
        return tuple(cols)
    _require(len(cols) == 1, f"{source}: data.task multiclass needs one integer label column, got {list(cols)}")
    _require(not np.isnan(values).any() and (values == values.astype(int)).all() and (values >= 0).all(),
             f"{source}: column {cols[0]} must hold class indices 0..K-1 for data.task multiclass")
    k = int(values.max()) + 1
    names = tuple(class_names) if class_names else tuple(f"class_{i}" for i in range(k))
    _require(len(names) >= k, f"{source}: {k} classes in {cols[0]} but data.class_names has {len(names)}")
    table[cols[0]] = table[cols[0]].astype(int)
    return names


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise DataError(message)


def load_manifest_csv(path: str | Path, *, root: str | None, image_column: str, patient_column: str) -> pd.DataFrame:
    """Read a manifest CSV and resolve image paths against `root` (default: the CSV's folder)."""
    path = Path(path)
    try:
        table = pd.read_csv(path)
    except FileNotFoundError:
        raise DataError(f"manifest {path} not found; set data.manifest to an existing CSV") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"manifest {path} is not a readable CSV: {exc}") from None
    for col in (image_column, patient_column):
        if col not in table.columns:
            raise DataError(f"{path}: no column '{col}'; present: {', '.join(map(str, table.columns))}")
    base = Path(root) if root else path.parent
    table = table.rename(columns={image_column: "path", patient_column: "patient_id"})
    table["path"] = [str((base / p).resolve()) for p in table["path"].astype(str)]
    return table
