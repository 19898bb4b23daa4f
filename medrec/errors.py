"""Exceptions that medrec raises for problems a user can fix.

Each message names the thing, the bad value and the fix, so that a CLI front end can
print it as it is, without a traceback.
"""


class MedrecError(Exception):
    """Base class for every user-facing medrec error."""


class ConfigError(MedrecError):
    """The experiment config is invalid (unknown key, wrong type, bad value)."""


class ImageError(MedrecError):
    """An image file (any format) cannot be read into a usable grey array.

    Catch this one to skip any unreadable image: DICOM errors, the size limits and the
    colour refusal are all subclasses.
    """


class DicomError(ImageError):
    """A DICOM file cannot be read into a usable array (the message says why)."""


class ImageTooLargeError(ImageError):
    """An image whose header declares more pixels or decoded bytes than `io.max_pixels` /
    `io.max_bytes` allow; refused before any pixel is decoded."""


class ColourImageError(ImageError):
    """A colour image where medrec reads grey images (`data.color` says what to do)."""


class LeakageError(MedrecError):
    """A patient would appear on both sides of a split."""


class WeightsError(MedrecError):
    """Pretrained weights cannot be found, verified or loaded."""


class CheckpointError(MedrecError):
    """A checkpoint or run folder cannot be loaded or resumed."""


class DataError(MedrecError):
    """A manifest or data source violates the manifest contract."""
