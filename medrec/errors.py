"""Exceptions that medrec raises for problems a user can fix.

Each message names the thing, the bad value and the fix, so that a CLI front end can
print it as it is, without a traceback.
"""


class MedrecError(Exception):
    """Base class for every user-facing medrec error."""


class ConfigError(MedrecError):
    """The experiment config is invalid (unknown key, wrong type, bad value)."""


class DicomError(MedrecError):
    """A DICOM (or other image) file cannot be read into a usable array."""


class ImageError(DicomError):
    """A non-DICOM image file (PNG, JPEG, NIfTI, npz entry) cannot be read."""


class LeakageError(MedrecError):
    """A patient would appear on both sides of a split."""


class WeightsError(MedrecError):
    """Pretrained weights cannot be found, verified or loaded."""


class CheckpointError(MedrecError):
    """A checkpoint or run folder cannot be loaded or resumed."""


class DataError(MedrecError):
    """A manifest or data source violates the manifest contract."""
