"""Neighbouring slices as extra channels: `data.context_slices: k`.

A radiologist scrolls: a small bleed or nodule is told from a vessel by how it continues on the
slices above and below. With `k > 0` each slice is fed with its k neighbours on either side, in
order of position (lowest first, the slice itself in the middle), 2k+1 channels per CT window.

Which slices are neighbours:
- rows of one series (`series_id` and `slice_position`, as `python -m medrec.index` writes them;
  without these columns they are read from the DICOM headers, in memory): the rows of that
  series in the table, ordered by `slice_position` (then `instance_number`, then path); a series
  is never mixed with another;
- any other row: the slices of its own file (NIfTI third axis, multi-frame DICOM frames) around
  its slice; a 2-D image is its own neighbour.
At either end of a series the edge slice is repeated (edges replicated), so every item has
2k+1 channels.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd

from medrec.data.manifest import NPZ_SEP, table_slices

Ref = tuple[str, "int | None"]  # (path, slice) as `read_item` takes them


def context_refs(table: pd.DataFrame, k: int, default_slice: int | str = "middle") -> list[list[Ref]]:
    """For each row, the 2k+1 (path, slice) references from k below to k above, the row itself in the middle.

    Args:
        table: manifest rows (path, optional slice, series_id, slice_position, instance_number).
        k: neighbours on either side.
        default_slice: `data.slice`, the slice a row without one stands for in a volume.
    """
    slices = table_slices(table)
    if "series_id" not in table.columns or "slice_position" not in table.columns:
        table = table.assign(**series_from_headers(list(table["path"].astype(str))))
    refs: list[list[Ref] | None] = [None] * len(table)
    for rows in series_groups(table):
        for rank, row in enumerate(rows):
            picked = np.clip(np.arange(rank - k, rank + k + 1), 0, len(rows) - 1)
            refs[row] = [(str(table["path"].iat[rows[j]]), slices[rows[j]]) for j in picked]
    for row in (i for i, r in enumerate(refs) if r is None):
        refs[row] = volume_refs(str(table["path"].iat[row]), slices[row], k, default_slice)
    return refs  # type: ignore[return-value]


def series_groups(table: pd.DataFrame) -> list[list[int]]:
    """Row positions of each series, ordered by slice position (then instance number, then path).

    Only rows with a series_id and a finite slice_position (and no slice of their own) are grouped.
    """
    if "series_id" not in table.columns or "slice_position" not in table.columns:
        return []
    position = pd.to_numeric(table["slice_position"], errors="coerce")
    series = table["series_id"].astype("string").fillna("").str.strip()
    usable = (series != "") & np.isfinite(position.to_numpy(dtype=float))
    usable &= np.array([k is None for k in table_slices(table)], dtype=bool)  # a volume's slice: its own file
    instance = (pd.to_numeric(table["instance_number"], errors="coerce") if "instance_number" in table.columns
                else pd.Series(np.nan, index=table.index))
    order = pd.DataFrame({"row": np.arange(len(table)), "series": series, "position": position,
                          "instance": instance.to_numpy(), "path": table["path"].astype(str).to_numpy()})[usable.to_numpy()]
    order = order.sort_values(["series", "position", "instance", "path"], kind="stable")
    return [list(g["row"]) for _, g in order.groupby("series", sort=False)]


def series_from_headers(paths: list[str]) -> dict[str, list]:
    """series_id (the raw SeriesInstanceUID, kept in memory only), slice_position and instance_number
    of each single-frame DICOM file (empty for anything else), from its header (`medrec.io.series`)."""
    from medrec.io.formats import DICOM, image_reader
    from medrec.io.headers import BadFile, read_header
    from medrec.io.series import geometry

    out: dict[str, list] = {"series_id": [], "slice_position": [], "instance_number": []}
    for path in paths:
        ds = None
        if NPZ_SEP not in path and image_reader(path) == DICOM:
            try:
                ds = read_header(Path(path))
            except (BadFile, OSError):
                ds = None  # the pixel read reports it
        single = ds is not None and int(ds.get("NumberOfFrames", 1) or 1) == 1
        where = geometry(ds) if single else {"slice_position": "", "instance_number": ""}
        out["series_id"].append(str(ds.get("SeriesInstanceUID", "")) if single else "")
        out["slice_position"].append(where["slice_position"])
        out["instance_number"].append(where["instance_number"])
    return out


def volume_refs(path: str, slice_index: int | None, k: int, default_slice: int | str = "middle") -> list[Ref]:
    """The slices of one file around `slice_index` (default: `default_slice`, else the middle), clamped."""
    n = 1 if NPZ_SEP in path else _count_slices(path)
    if n <= 1:
        return [(path, slice_index)] * (2 * k + 1)
    centre = slice_index if slice_index is not None else (default_slice if isinstance(default_slice, int) else n // 2)
    centre = min(max(int(centre), 0), n - 1)
    return [(path, int(j)) for j in np.clip(np.arange(centre - k, centre + k + 1), 0, n - 1)]


@functools.lru_cache(maxsize=4096)
def _count_slices(path: str) -> int:
    from medrec.io.images import count_slices

    return count_slices(path)


def stack_slices(images: list[np.ndarray], refs: list[Ref]) -> np.ndarray:
    """(2k+1, H, W) from the slices read for `refs`; slices of different sizes are an error naming them."""
    from medrec.errors import ImageError

    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        sizes = ", ".join(f"{p}{'' if s is None else f' slice {s}'}: {im.shape}" for (p, s), im in zip(refs, images))
        raise ImageError(f"neighbouring slices differ in size ({sizes}); data.context_slices needs slices of "
                         "one size per series (check the series_id / slice_position columns), or set it to 0")
    return np.stack(images).astype(np.float32, copy=False)
