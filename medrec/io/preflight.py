"""Header-only size check of one image file: refuse a decompression bomb before anything is decoded.

`check_file(path)` asks the one format registry (`medrec.io.formats.image_reader`) which reader
reads the file, reads only what that reader reads first (DICOM header with the pixel data left on
disk, Pillow's lazy open, the NIfTI header) and runs the same `medrec.io.limits` checks as
`read_image`, so it raises the same `ImageTooLargeError`. No torch, no pixel decode: `medrec.predict`
runs it on every input before it loads a model.

Any other problem (not an image, damaged header, colour DICOM) is left to the reader, which
reports it with its own reason when the file is read.
"""

from __future__ import annotations

from pathlib import Path

from medrec.errors import ImageTooLargeError
from medrec.io.formats import DICOM, NIFTI, PILLOW, image_reader
from medrec.io.limits import check_dicom_frame, check_nifti_header, check_pillow_image

__all__ = ["check_file"]


def check_file(path: str | Path) -> None:
    """Raise ImageTooLargeError when `path`'s header declares more than the active io limits allow.

    Reads the header only. Files that are missing, not images or unreadable pass silently: the
    reader refuses them later with its own message.
    """
    path = Path(path)
    if not path.is_file():
        return
    check = {DICOM: _dicom, PILLOW: _pillow, NIFTI: _nifti}.get(image_reader(path))
    if check is None:
        return
    try:
        check(path)
    except ImageTooLargeError:
        raise
    except Exception:  # not this check's business: read_image reports it with its reason
        return


def _dicom(path: Path) -> None:
    from medrec.io.dicom import _read_dataset

    ds = _read_dataset(path, defer_size="1 MB")  # as read_dicom: the pixel data stays on disk
    check_dicom_frame(ds, path)


def _pillow(path: Path) -> None:
    from PIL import Image

    from medrec.io.limits import pillow_limits

    try:
        with pillow_limits(), Image.open(path) as im:  # lazy: only the header is parsed
            check_pillow_image(im, path)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"{path}: {exc}; raise io.max_pixels if the image is genuine") from exc


def _nifti(path: Path) -> None:
    import nibabel as nib

    shape = tuple(int(n) for n in nib.load(str(path)).shape)  # header only; the data stay on disk
    check_nifti_header(shape, 8, path)  # as read_nifti: the slice is read as float64
