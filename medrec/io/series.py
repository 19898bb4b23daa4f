"""Where a slice sits in its series: position along the slice normal, instance number, thickness.

A CT or MR series arrives as one file per slice, in any file order. The position of a slice
along the patient axis is the dot product of its ImagePositionPatient (the centre of the first
voxel, in mm) with the slice normal, the cross product of the row and column direction
cosines of ImageOrientationPatient (DICOM PS3.3 C.7.6.2.1.1). Sorting by it orders slices
whatever the orientation (axial, sagittal, coronal, oblique) and whatever the InstanceNumber
says (which scanners reset, reverse or leave out).
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Positions are written to 1 µm: far below any slice spacing, stable across float printing.
POSITION_DECIMALS = 4


def slice_normal(orientation: Any) -> np.ndarray | None:
    """Unit normal of a slice from its 6 direction cosines (row then column direction), or None."""
    try:
        cosines = np.asarray([float(v) for v in orientation], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if cosines.shape != (6,):
        return None
    normal = np.cross(cosines[:3], cosines[3:])
    norm = float(np.linalg.norm(normal))
    return normal / norm if norm > 1e-6 else None  # parallel or zero vectors: no plane


def slice_position(position: Any, orientation: Any) -> float | None:
    """ImagePositionPatient projected on the slice normal (mm), or None when either is missing or bad."""
    normal = slice_normal(orientation)
    try:
        point = np.asarray([float(v) for v in position], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if normal is None or point.shape != (3,) or not np.isfinite(point).all():
        return None
    return round(float(point @ normal), POSITION_DECIMALS)


def geometry(ds: Any) -> dict[str, Any]:
    """The manifest's series columns of a pydicom dataset (empty cells for what it lacks)."""
    position = slice_position(ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient"))
    return {
        "instance_number": _number(ds.get("InstanceNumber"), int),
        "slice_position": "" if position is None else position,
        "slice_thickness": _number(ds.get("SliceThickness"), float),
    }


def _number(value: Any, kind: type) -> Any:
    try:
        x = kind(float(value)) if value not in (None, "") else None
    except (TypeError, ValueError):
        return ""
    return "" if x is None or not np.isfinite(x) else x
