"""Read any supported image file (DICOM, PNG, JPEG, NIfTI) as one float32 2-D array.

`read_image` dispatches by suffix and follows `read_dicom`'s window semantics:

- DICOM (``.dcm``, ``.dicom``, no suffix, a numeric suffix as in ``1.2.840.1234``, or any
  file with the 'DICM' marker): see `medrec.io.dicom.read_dicom`.
- PNG / JPEG via Pillow, 8-bit (0..255) or 16-bit PNG (0..65535). Colour files are
  rejected unless their three channels are equal (a gray image saved as RGB); JPEG
  allows a difference of `JPEG_GRAY_TOLERANCE` levels, which lossy chroma coding can
  introduce. An alpha channel is dropped. window=None gives the raw values;
  window="auto" divides by the bit-depth maximum (255 or 65535), not by the image's own
  range: an exported PNG is already windowed for display, so its bit depth is its
  display range, and per-image min-max would stretch a faint image to full contrast and
  erase exactly the brightness differences the exporter kept. Use "minmax" or
  "percentile" for per-image scaling.
- NIfTI (``.nii``, ``.nii.gz``) via nibabel: the 2-D slice ``data[:, :, slice_index]``
  (default the middle slice; `frame` picks the volume of a 4-D file, default the middle
  one), returned transposed so that rows follow the second voxel axis. No reorientation
  is done: slices are treated as images, consistent within one conversion tool.
  Scaling (scl_slope/scl_inter) is applied; window="auto" is percentile scaling.

`LoadMedicalImaged` wraps `read_image` as a MONAI dictionary transform; it is built on
first use so that importing this module does not import MONAI (and torch).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import numpy as np

from medrec.errors import ImageError
from medrec.io.dicom import read_dicom
from medrec.io.windows import (
    PERCENTILES,
    WINDOW_NAMES,
    WINDOW_PRESETS,
    apply_window,
    check_window,
    scale_minmax,
    scale_percentile,
    scale_window,
)

__all__ = [
    "WINDOW_PRESETS",
    "WINDOW_NAMES",
    "PERCENTILES",
    "apply_window",
    "scale_minmax",
    "scale_percentile",
    "read_image",
    "read_png_jpeg",
    "read_nifti",
    "count_slices",
]  # LoadMedicalImaged is left out so that `import *` does not import MONAI

log = logging.getLogger(__name__)

PIL_SUFFIXES = (".png", ".jpg", ".jpeg")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic", "")
JPEG_GRAY_TOLERANCE = 2


def read_image(
    path: str | Path,
    *,
    frame: int | None = None,
    window: Any = None,
    slice_index: int | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Read one 2-D grayscale image as float32, with de-identified metadata.

    Args:
        path: DICOM, PNG, JPEG or NIfTI file, recognised by suffix (module docstring).
        frame: DICOM multi-frame frame, or NIfTI 4-D volume; default the middle one.
        window: None (raw / modality units), "auto", "minmax", "percentile", a preset
            name or (center, width); with a window the output is in [0, 1].
        slice_index: the slice of a volume: NIfTI third axis, or the frame of a multi-frame
            DICOM file (then `frame` is ignored); default the middle one. Ignored for
            PNG/JPEG, so that one config serves every format.

    Raises:
        DicomError: an unreadable DICOM file; ImageError (a DicomError) for the others.
        ConfigError: `window` is not a valid window.
    """
    path = Path(path)
    check_window(window)
    name = path.name.lower()
    if name.endswith(PIL_SUFFIXES):
        return read_png_jpeg(path, window=window)
    if name.endswith(NIFTI_SUFFIXES):
        return read_nifti(path, slice_index=slice_index, frame=frame, window=window)
    if _looks_like_dicom(path):
        return read_dicom(path, frame=frame if slice_index is None else slice_index, window=window)
    raise ImageError(
        f"{path}: unsupported file type '{path.suffix}'; supported: DICOM "
        f"({', '.join(s or 'no suffix' for s in DICOM_SUFFIXES)}), "
        f"{', '.join(PIL_SUFFIXES + NIFTI_SUFFIXES)}"
    )


def count_slices(path: str | Path) -> int:
    """Number of 2-D slices `read_image(path, slice_index=k)` can read: the third axis of a NIfTI
    volume, the frames of a multi-frame DICOM file, 1 for anything else.

    Reads headers only. A file that cannot be read counts as 1, so that reading it later reports
    the real error (and `skip_bad_images` can skip it).
    """
    path = Path(path)
    name = path.name.lower()
    try:
        if name.endswith(NIFTI_SUFFIXES):
            import nibabel as nib

            shape = nib.load(str(path)).shape
            return int(shape[2]) if len(shape) >= 3 else 1
        if not name.endswith(PIL_SUFFIXES) and _looks_like_dicom(path):
            import pydicom

            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["NumberOfFrames"])
            return max(1, int(getattr(ds, "NumberOfFrames", 1) or 1))
    except Exception as exc:  # the later read reports it properly
        log.debug("%s: cannot count slices (%s); counted as one", path, exc)
    return 1


def _looks_like_dicom(path: Path) -> bool:
    """DICOM by suffix (incl. UID-like names such as 1.2.840.1234) or by 'DICM' marker."""
    suffix = path.suffix.lower()
    return suffix in DICOM_SUFFIXES or suffix[1:].isdigit() or has_dicm_marker(path)


def has_dicm_marker(path: Path) -> bool:
    """True when the file carries the DICOM Part 10 'DICM' marker at byte 128."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


# --------------------------------------------------------------------------- PNG / JPEG


def read_png_jpeg(path: str | Path, *, window: Any = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Read an 8/16-bit grayscale PNG or an 8-bit JPEG (module docstring for the rules)."""
    from PIL import Image

    path = Path(path)
    check_window(window)
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    try:
        with Image.open(path) as im:
            im.load()
            fmt, mode = im.format, im.mode
            gray, max_value = _pil_gray(im, path)
    except ImageError:
        raise
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, ...
        raise ImageError(f"{path}: not a readable PNG/JPEG image: {exc}") from exc
    if window is None:
        image, applied = gray, "none"
    elif window == "auto":
        image, applied = gray / max_value, f"bit depth (/{max_value:g})"
    else:
        image, applied = scale_window(gray, window)
    meta = {
        "format": (fmt or path.suffix.lstrip(".")).lower(),
        "mode": mode,
        "bit_depth": int(max_value).bit_length(),
        "rows": int(gray.shape[0]),
        "columns": int(gray.shape[1]),
        "pixel_spacing": None,
        "window": applied,
    }
    return np.asarray(image, dtype=np.float32), meta


def _pil_gray(im: Any, path: Path) -> tuple[np.ndarray, float]:
    """Pillow image -> (float64 gray array, maximum of its bit depth)."""
    mode, fmt = im.mode, im.format
    if mode == "1":
        return np.asarray(im, dtype=np.float64), 1.0
    if mode in ("L", "LA", "La"):
        return np.asarray(im.getchannel(0), dtype=np.float64), 255.0
    if mode.startswith("I;16") or (mode == "I" and fmt == "PNG"):
        # PNG grayscale is at most 16 bits; Pillow may open it as 32-bit "I".
        return np.asarray(im, dtype=np.float64), 65535.0
    if mode == "P":
        im = im.convert("RGBA")
    elif mode not in ("RGB", "RGBA", "RGBX"):
        if mode in ("I", "F"):
            raise ImageError(f"{path}: {mode}-mode (32-bit) images are not supported")
        im = im.convert("RGB")
    rgb = np.asarray(im, dtype=np.int32)[..., :3]
    tolerance = JPEG_GRAY_TOLERANCE if fmt == "JPEG" else 0
    spread = int((rgb.max(axis=2) - rgb.min(axis=2)).max())
    if spread > tolerance:
        raise ImageError(
            f"{path}: colour image (mode {mode}, channels differ by up to {spread}); "
            "medrec reads grayscale images only: convert it to grayscale first"
        )
    return rgb.mean(axis=2), 255.0


# --------------------------------------------------------------------------- NIfTI


def read_nifti(
    path: str | Path,
    *,
    slice_index: int | None = None,
    frame: int | None = None,
    window: Any = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Read one 2-D slice of a NIfTI volume (module docstring for the conventions)."""
    try:
        import nibabel as nib
    except ImportError as exc:  # pragma: no cover - nibabel is a dependency
        raise ImageError(f"{path}: reading NIfTI needs nibabel: pip install nibabel") from exc
    path = Path(path)
    check_window(window)
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    try:
        img = nib.load(str(path))
        shape = tuple(int(n) for n in img.shape)
        index, chosen = _nifti_index(shape, slice_index, frame, path)
        data = np.asarray(img.dataobj[index], dtype=np.float64).T
        zooms = [float(z) for z in img.header.get_zooms()[:2]]
    except ImageError:
        raise
    except Exception as exc:  # nibabel raises ImageFileError, EOFError, OSError, ...
        raise ImageError(f"{path}: not a readable NIfTI file: {exc}") from exc
    data = _finite(data, path)
    if window is None:
        image, applied = data, "none"
    elif window == "auto":
        image, applied = scale_percentile(data), f"percentile {PERCENTILES[0]}-{PERCENTILES[1]}"
    else:
        image, applied = scale_window(data, window)
    meta = {
        "format": "nifti",
        "shape": list(shape),
        "rows": int(data.shape[0]),
        "columns": int(data.shape[1]),
        "pixel_spacing": [zooms[1], zooms[0]] if len(zooms) == 2 else None,
        "window": applied,
        **chosen,
    }
    return np.asarray(image, dtype=np.float32), meta


def _nifti_index(
    shape: tuple[int, ...], slice_index: int | None, frame: int | None, path: Path
) -> tuple[tuple[Any, ...], dict[str, int | None]]:
    """The index tuple for one 2-D slice, and the chosen slice/frame for the metadata."""
    if len(shape) < 2 or any(n != 1 for n in shape[4:]):
        raise ImageError(f"{path}: NIfTI with shape {shape}; expected 2-D, 3-D or 4-D")
    padded = shape + (1,) * max(0, 4 - len(shape))
    k = _pick(slice_index, padded[2], "slice_index", path)
    t = _pick(frame, padded[3], "frame", path)
    index = ((slice(None), slice(None), k, t) + (0,) * (len(shape) - 4))[: len(shape)]
    chosen = {"slice_index": k, "number_of_slices": padded[2], "frame": t,
              "number_of_frames": padded[3]}
    return index, chosen


def _pick(value: int | None, n: int, name: str, path: Path) -> int:
    if value is None:
        return n // 2
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < n:
        raise ImageError(f"{path}: {name} {value!r} out of range; valid: 0..{n - 1}")
    return int(value)


def _finite(data: np.ndarray, path: Path) -> np.ndarray:
    """Replace NaN/inf (common outside a mask) by the finite minimum, with a log line."""
    finite = np.isfinite(data)
    if finite.all():
        return data
    if not finite.any():
        raise ImageError(f"{path}: the slice has no finite values")
    log.warning("%s: %d non-finite voxels set to the slice minimum", path, int((~finite).sum()))
    return np.where(finite, data, data[finite].min())


# --------------------------------------------------------------------------- MONAI


def __getattr__(name: str) -> Any:
    # PEP 562: build the MONAI transform only when asked for, so that reading an image
    # (the app, the indexer) does not pay for importing MONAI and torch.
    if name == "LoadMedicalImaged":
        return _load_medical_imaged_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _load_medical_imaged_class() -> type:
    from monai.transforms import MapTransform

    class LoadMedicalImaged(MapTransform):
        """Replace the path under each key by a float32 (1, H, W) image (`read_image`).

        De-identified metadata goes to ``f"{key}{meta_suffix}"`` as a plain dict, or
        nowhere with ``meta_suffix=None``: its None values and format-specific keys do
        not pass torch's default collate, so a DataLoader needs that (or a collate_fn
        that keeps dicts as lists). Other args follow `read_image`: window (default
        "auto"), frame, slice_index.
        """

        def __init__(
            self,
            keys: Any,
            window: Any = "auto",
            frame: int | None = None,
            slice_index: int | None = None,
            meta_suffix: str | None = "_meta",
            allow_missing_keys: bool = False,
        ) -> None:
            super().__init__(keys, allow_missing_keys)
            check_window(window)
            self.window, self.frame, self.slice_index = window, frame, slice_index
            self.meta_suffix = meta_suffix

        def __call__(self, data: Any) -> dict[str, Any]:
            d = dict(data)
            for key in self.key_iterator(d):
                image, meta = read_image(
                    d[key], frame=self.frame, window=self.window, slice_index=self.slice_index
                )
                d[key] = image[np.newaxis].astype(np.float32, copy=False)
                if self.meta_suffix is not None:
                    d[f"{key}{self.meta_suffix}"] = meta
            return d

    LoadMedicalImaged.__module__ = __name__
    LoadMedicalImaged.__qualname__ = "LoadMedicalImaged"
    return LoadMedicalImaged
