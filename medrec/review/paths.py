"""Which files the review app may open: image paths from a predictions file and CAM maps.

A predictions CSV is untrusted input: its `path` cells are resolved (symlinks followed) and
served only when they land inside the run folder or the run's data root.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medrec.errors import DataError, ImageError

if TYPE_CHECKING:
    from medrec.review.cases import Run


class PathRefused(DataError):
    """A predictions file points at a file outside the run folder and the run's data_root."""


def resolve_case_path(raw: Any, roots: Sequence[Path], *, base: Path | None = None) -> Path:
    """Resolve an image path from a predictions file, refusing anything outside `roots`.

    The path is resolved (symlinks followed) before the check, so '..' components, absolute
    paths elsewhere and symlinks that lead out of the roots are all refused. Relative paths
    are taken relative to `base` (default: the first root).

    Raises:
        PathRefused: the resolved path is outside every root, or the value is not a path.
        ImageError: the path is allowed but no such file exists.
    """
    text = "" if raw is None or (isinstance(raw, float) and math.isnan(raw)) else str(raw)
    if not text.strip() or "\x00" in text:
        raise PathRefused(f"image path {text!r} is empty or invalid; refused")
    if not roots:
        raise PathRefused("no allowed folder (run folder or data_root) to serve images from")
    path = Path(text)
    if not path.is_absolute():
        path = (base or roots[0]) / path
    real = Path(os.path.realpath(path))
    real_roots = [Path(os.path.realpath(r)) for r in roots]
    # Containment is checked before existence, so the app never reveals which outside files exist.
    if not any(real == r or real.is_relative_to(r) for r in real_roots):
        where = " or ".join(str(r) for r in real_roots)
        raise PathRefused(
            f"image path {text!r} resolves outside the run folder and the run's data_root ({where}); refused"
        )
    if not real.is_file():
        raise ImageError(f"image {text} not found (resolved to {real})")
    return real


def case_path(run: Run, raw: Any) -> Path:
    """`resolve_case_path` with the run's roots; relative paths are under data_root if set."""
    return resolve_case_path(raw, run.allowed_roots, base=run.data_root or run.run_dir)


def cam_file(run: Run, image_id: str) -> Path | None:
    """The CAM map file of an image (`<cam dir>/<image_id>.npy`, first dir that has one), or None.

    Raises:
        PathRefused: `image_id` is not a plain file name (a crafted id such as '../x').
    """
    name = f"{image_id}.npy"
    if Path(name).name != name or name.startswith(".") or any(ch in name for ch in "\x00\n\r"):
        raise PathRefused(f"image_id {image_id!r} is not a plain file name; CAM refused")
    for folder in run.cam_dirs:
        path = folder / name
        if path.is_file():
            return resolve_case_path(str(path), [folder])
    return None


def file_stamp(path: Path) -> tuple[str, int, int]:
    """(path, mtime_ns, size): a cache key that changes when the file is rewritten."""
    st = path.stat()
    return str(path), st.st_mtime_ns, st.st_size
