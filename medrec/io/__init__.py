"""Clinical image I/O: DICOM, PNG/JPEG and NIfTI files as float32 2-D arrays.

`read_dicom` and `read_image` return ``(image, metadata)``; metadata is de-identified.
`medrec.io.images.LoadMedicalImaged` is the MONAI transform for training pipelines
(imported from `medrec.io.images`, so that this package does not import MONAI).
"""

from medrec.io.dicom import dicom_identifiers, read_dicom
from medrec.io.images import read_image
from medrec.io.windows import WINDOW_PRESETS, apply_window, scale_minmax, scale_percentile

__all__ = [
    "WINDOW_PRESETS",
    "apply_window",
    "dicom_identifiers",
    "read_dicom",
    "read_image",
    "scale_minmax",
    "scale_percentile",
]
