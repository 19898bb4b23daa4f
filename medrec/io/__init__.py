"""Clinical image I/O: DICOM, PNG/JPEG/TIFF/BMP and NIfTI files as float32 2-D arrays.

`read_dicom` and `read_image` return ``(image, metadata)``; metadata is de-identified.
Which files are images: `medrec.io.formats`; size limits: `medrec.io.limits`; colour: `medrec.io.color`.
`medrec.io.images.LoadMedicalImaged` is the MONAI transform for training pipelines
(imported from `medrec.io.images`, so that this package does not import MONAI).
"""

from medrec.io.dicom import dicom_identifiers, read_dicom
from medrec.io.formats import image_reader, is_image_file, scan_folder
from medrec.io.images import read_image
from medrec.io.limits import Limits, set_limits, use_limits
from medrec.io.windows import WINDOW_PRESETS, apply_window, scale_minmax, scale_percentile

__all__ = [
    "Limits",
    "WINDOW_PRESETS",
    "apply_window",
    "dicom_identifiers",
    "image_reader",
    "is_image_file",
    "read_dicom",
    "read_image",
    "scale_minmax",
    "scale_percentile",
    "scan_folder",
    "set_limits",
    "use_limits",
]
