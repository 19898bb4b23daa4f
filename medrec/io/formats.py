"""Which files are images, and which reader reads each: the one registry of image formats.

`read_image`, predict's folder scan, the indexer and the folder adapters all ask this module,
so a file one of them lists is a file the others read (and one they refuse for the same reason).

The rules, in order:
1. A PNG/JPEG/TIFF/BMP suffix -> Pillow; ``.nii`` / ``.nii.gz`` -> nibabel.
2. A DICOM suffix (``.dcm``, ``.dicom``, ``.dic``, ``.ima``), a UID-like name whose last dot part is
   digits (``1.2.840.1234``), or no suffix at all (``IM0001``, as DICOM trees name slices) -> pydicom.
   A damaged file named so is therefore listed, and reported by whoever reads it, not skipped.
3. Any other suffix: the content decides. The Part 10 ``DICM`` marker at byte 128 -> pydicom; a
   PNG/JPEG/TIFF/BMP signature -> Pillow. Anything else (README.txt, .csv) is not an image and is
   skipped, not reported as an error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DICOM", "PILLOW", "NIFTI", "PIL_SUFFIXES", "NIFTI_SUFFIXES", "DICOM_SUFFIXES", "IMAGE_SUFFIXES",
    "FolderScan", "image_reader", "is_image_file", "has_dicm_marker", "dicom_like_name", "scan_folder",
]

DICOM, PILLOW, NIFTI = "dicom", "pillow", "nifti"
PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic", ".ima")
IMAGE_SUFFIXES = PIL_SUFFIXES + NIFTI_SUFFIXES + DICOM_SUFFIXES
# File signatures of the formats Pillow reads here (first bytes of the file).
_PIL_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"BM")


def image_reader(path: str | Path) -> str | None:
    """DICOM, PILLOW or NIFTI for an image file (module docstring), None for anything else.

    Reads at most the first 132 bytes, and only when the name does not decide.
    """
    name = os.path.basename(str(path)).lower()
    if name.endswith(PIL_SUFFIXES):
        return PILLOW
    if name.endswith(NIFTI_SUFFIXES):
        return NIFTI
    if dicom_like_name(name):
        return DICOM
    head = _head(path)
    if head[128:132] == b"DICM":
        return DICOM
    if head.startswith(_PIL_MAGIC):
        return PILLOW
    return None


def is_image_file(path: str | Path) -> bool:
    """True when `image_reader` knows a reader for `path`."""
    return image_reader(path) is not None


def dicom_like_name(name: str | Path) -> bool:
    """No suffix, a DICOM suffix, or a UID-like name whose last dot part is digits ('1.2.840.10008.1')."""
    suffix = os.path.splitext(os.path.basename(str(name)).lower())[1]
    return suffix in ("", *DICOM_SUFFIXES) or suffix[1:].isdigit()


def has_dicm_marker(path: str | Path) -> bool:
    """True when the file carries the DICOM Part 10 'DICM' marker at byte 128."""
    return _head(path)[128:132] == b"DICM"


def _head(path: str | Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(132)
    except OSError:
        return b""


@dataclass
class FolderScan:
    """The image files under a folder, the folders that could not be listed, and the rest."""

    images: list[Path] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)  # {"path": folder, "reason": ...}
    skipped: list[Path] = field(default_factory=list)  # files that are not images


def walk_files(root: str | Path, *, skip_dirs: tuple[str, ...] = ()) -> tuple[list[Path], list[dict[str, str]]]:
    """All regular files under `root` (sorted), hidden files and folders and `skip_dirs` left out.

    Folders are not followed through symlinks (no loops). A folder that cannot be listed is an
    error row ({"path": folder, "reason": ...}), not an exception: a long job goes on with the rest.
    """
    files: list[Path] = []
    errors: list[dict[str, str]] = []
    stack = [Path(root)]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.name.startswith("."):  # .DS_Store, AppleDouble ._ files, .git
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        if entry.name not in skip_dirs:
                            stack.append(Path(entry.path))
                    elif entry.is_file():
                        files.append(Path(entry.path))
        except OSError as exc:
            errors.append({"path": str(folder), "reason": f"folder cannot be listed ({exc.strerror})"})
    return sorted(files), errors


def scan_folder(root: str | Path) -> FolderScan:
    """Every image file under `root` (sorted), hidden files and folders and Mac zip folders left out."""
    files, errors = walk_files(root, skip_dirs=("__MACOSX",))  # __MACOSX: zip archives made on a Mac
    out = FolderScan(errors=errors)
    for path in files:
        (out.images if is_image_file(path) else out.skipped).append(path)
    return out
