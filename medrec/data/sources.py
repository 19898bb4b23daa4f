"""Data-source adapters: each turns one on-disk layout into the manifest contract.

`load_source(cfg.data, base_dir)` dispatches on `data.source`. Adapters for public label
files (NIH, CheXpert, RSNA) and class folders live in `medrec.data.public`.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd

from medrec.config import DataConfig
from medrec.data.manifest import NPZ_SEP, Manifest, load_manifest_csv, validate_manifest
from medrec.errors import DataError


def resolve(path: str | None, base_dir: Path, what: str) -> Path:
    """Resolve a config path relative to the config file's folder, then the working directory."""
    if not path:
        raise DataError(f"{what} is not set; name the file or folder in the config")
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    for candidate in (Path.cwd() / p, base_dir / p):
        if candidate.exists():
            return candidate.resolve()
    return (Path.cwd() / p).resolve()


def load_source(cfg: DataConfig, base_dir: Path | str = ".") -> Manifest:
    """Build the validated manifest that `cfg` describes.

    Raises:
        DataError: the source is missing or violates the manifest contract.
    """
    base_dir = Path(base_dir)
    where = resolve(cfg.manifest, base_dir, "data.manifest")
    if cfg.source == "manifest":
        table = load_manifest_csv(where, root=cfg.root, image_column=cfg.image_column,
                                  patient_column=cfg.patient_column)
        root = str(Path(cfg.root).resolve()) if cfg.root else str(where.parent)
    elif cfg.source == "medmnist":
        table = medmnist_table(where, cfg.split, cfg.val_split)
        root = str(where.parent)
    else:
        from medrec.data import public

        table = public.load_public(cfg, where)
        root = str(Path(cfg.root).resolve()) if cfg.root else str(where if where.is_dir() else where.parent)
    labels = _label_columns(cfg, table)
    if cfg.slice == "all":
        table = expand_slices(table)
    return validate_manifest(table, task=cfg.task, label_columns=labels, source=str(where),
                             data_root=root, class_names=cfg.class_names)


def expand_slices(table: pd.DataFrame) -> pd.DataFrame:
    """`data.slice: all`: one row per slice of each volume, with the volume's patient and labels.

    Rows that already name a slice (a `slice` column in the manifest) are kept as they are.
    """
    from medrec.io.images import count_slices

    given = table["slice"] if "slice" in table.columns else pd.Series([pd.NA] * len(table), index=table.index)
    rows = []
    for (_, row), k in zip(table.iterrows(), given):
        if not pd.isna(k):
            rows.append(row.to_dict())
            continue
        n = 1 if NPZ_SEP in str(row["path"]) else count_slices(row["path"])
        rows += [{**row.to_dict(), "slice": j} for j in range(n)]
    out = pd.DataFrame(rows, columns=[*table.columns, *([] if "slice" in table.columns else ["slice"])])
    out.attrs = dict(table.attrs)
    return out


def _label_columns(cfg: DataConfig, table: pd.DataFrame) -> tuple[str, ...]:
    """The configured label columns; for adapters, the default `[label]` means 'every finding the
    adapter found' (NIH's 14, CheXpert's, MedMNIST multilabel), which they list in `table.attrs`."""
    if cfg.source == "manifest" or tuple(cfg.label_columns) != ("label",):
        return tuple(cfg.label_columns)
    return tuple(table.attrs.get("label_columns", cfg.label_columns))


def medmnist_table(npz: Path, split: str, val_split: str | None) -> pd.DataFrame:
    """One row per image of a MedMNIST-style npz (`<split>_images`, `<split>_labels`).

    `split` may join several splits with '+'. With `val_split`, a `split` column marks which
    rows are the fixed validation set. MedMNIST has no patient ids, so each image is its own
    'patient' (folds are image-level; reports say so).
    """
    arrays = _npz_keys(npz)
    rows = []
    names = split.split("+") + ([val_split] if val_split else [])
    for name in names:
        if f"{name}_images" not in arrays or f"{name}_labels" not in arrays:
            valid = sorted({k.rsplit("_", 1)[0] for k in arrays})
            raise DataError(f"{npz}: no split '{name}' (need {name}_images and {name}_labels); valid: {valid}")
        labels = np.asarray(_npz_array(str(npz), f"{name}_labels"))
        labels = labels.reshape(len(labels), -1)
        for i in range(len(labels)):
            row = {"path": f"{npz}{NPZ_SEP}{name}{NPZ_SEP}{i}", "patient_id": f"{name}-{i}",
                   "split": "val" if name == val_split else "train"}
            if labels.shape[1] == 1:
                row["label"] = int(labels[i, 0])
            else:
                row.update({f"label_{j}": int(v) for j, v in enumerate(labels[i])})
            rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs["label_columns"] = tuple(c for c in table.columns if c == "label" or c.startswith("label_"))
    return table


def _npz_keys(npz: Path) -> list[str]:
    try:
        with np.load(npz) as f:
            return list(f.keys())
    except FileNotFoundError:
        raise DataError(f"npz file {npz} not found; set data.manifest to the MedMNIST .npz file") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{npz} is not a readable npz file: {exc}") from None


@functools.lru_cache(maxsize=8)
def _npz_array(npz: str, key: str) -> np.ndarray:
    # npz members are decompressed whole on every access, so keep each split in memory once.
    with np.load(npz) as f:
        return f[key]


def read_npz_item(ref: str) -> np.ndarray:
    """Read one image from an `npz::split::index` reference as float32 in [0, 1], shape (H, W)."""
    npz, split, index = ref.split(NPZ_SEP)
    img = _npz_array(npz, f"{split}_images")[int(index)]
    if img.ndim == 3:  # RGB MedMNIST sets: luminance, since the networks here take gray input
        img = img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    scale = 255.0 if np.issubdtype(img.dtype, np.integer) or img.max() > 1 else 1.0
    return img.astype(np.float32) / scale
