"""Read any supported image file (DICOM, PNG, JPEG, TIFF, BMP, NIfTI) as one float32 2-D array.

`read_image` asks `medrec.io.formats` which reader reads a file, checks the decoded size from the
header (`medrec.io.limits`) and follows `read_dicom`'s window semantics:

- DICOM (a DICOM suffix, a UID-like name, no suffix, or the 'DICM' marker): `medrec.io.dicom`.
- PNG / JPEG / TIFF / BMP via Pillow, in modes 1, L, I;16, I, F, LA, RGB, RGBA, P, PA: alpha is
  dropped, palettes go through their palette, grey saved as RGB becomes grey and real colour is
  refused or converted as `data.color` says (`medrec.io.color`). window=None gives the stored
  values; window="auto" divides by the bit-depth maximum (255 or 65535; the data maximum for
  32-bit I/F images), not by the image's own range: an exported PNG is already windowed for
  display, so its bit depth is its display range, and per-image min-max would stretch a faint
  image to full contrast and erase exactly the brightness differences the exporter kept. Use
  "minmax" or "percentile" for per-image scaling.
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

from medrec.errors import ConfigError, ImageError, ImageTooLargeError
from medrec.io.color import Conversion, pillow_to_grey
from medrec.io.dicom import read_dicom
from medrec.io.formats import (  # noqa: F401 - has_dicm_marker re-exported for older callers
    DICOM,
    DICOM_SUFFIXES,
    NIFTI,
    NIFTI_SUFFIXES,
    PIL_SUFFIXES,
    PILLOW,
    has_dicm_marker,
    image_reader,
)
from medrec.io.limits import check_nifti_header, check_pillow_image, pillow_limits
from medrec.io.reduce import PILLOW_REDUCE_MODES, box_reduce, jpeg_draft, reduction_factor
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
    "read_pillow",
    "read_png_jpeg",
    "read_nifti",
    "count_slices",
]  # LoadMedicalImaged is left out so that `import *` does not import MONAI

log = logging.getLogger(__name__)

def read_image(
    path: str | Path,
    *,
    frame: int | None = None,
    window: Any = None,
    slice_index: int | None = None,
    color: str = "auto",
    reduce_to: int | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Read one 2-D grayscale image as float32, with de-identified metadata.

    Every reader checks the decoded size from the header first (`medrec.io.limits`).
    Args:
        path: an image file; `medrec.io.formats.image_reader` decides which reader reads it.
        frame: DICOM multi-frame frame, or NIfTI 4-D volume; default the middle one.
        window: None (raw / modality units), "auto", "minmax", "percentile", a preset
            name or (center, width); with a window the output is in [0, 1].
        slice_index: the slice of a volume: NIfTI third axis, or the frame of a multi-frame
            DICOM file (then `frame` is ignored); default the middle one. Ignored for
            PNG/JPEG, so that one config serves every format.
        color: `data.color` for images stored in colour: auto, convert or strict (medrec.io.color).
        reduce_to: the longest side the caller will resize to; the reader may then return the image
            reduced by an integer factor (longest side still >= 2 x reduce_to; JPEG/PNG/TIFF/BMP and
            DICOM, `medrec.io.reduce`); metadata["reduction"] says by how much. None: full resolution.

    Returns:
        (image, metadata); metadata["conversion"] says how the image became grey
        (medrec.io.color.Conversion.kind; "grey" for DICOM and NIfTI).

    Raises:
        ImageError: the file cannot be read (subclasses DicomError, ImageTooLargeError, ColourImageError).
        ConfigError: `window` or `color` is not valid.
    """
    path = Path(path)
    check_window(window)
    reader = image_reader(path)
    if reader == PILLOW:
        return read_pillow(path, window=window, color=color, reduce_to=reduce_to)
    if reader == NIFTI:
        return read_nifti(path, slice_index=slice_index, frame=frame, window=window)
    if reader == DICOM:
        image, meta = read_dicom(path, frame=frame if slice_index is None else slice_index, window=window,
                                 reduce_to=reduce_to)
        return image, {**meta, "conversion": "grey"}
    raise ImageError(
        f"{path}: not an image file medrec reads (suffix '{path.suffix}', no DICOM or image signature); "
        f"supported: DICOM ({', '.join(DICOM_SUFFIXES)}, UID-like names, no suffix, or the 'DICM' marker), "
        f"{', '.join(PIL_SUFFIXES + NIFTI_SUFFIXES)}"
    )


def count_slices(path: str | Path) -> int:
    """Number of 2-D slices `read_image(path, slice_index=k)` can read: the third axis of a NIfTI
    volume, the frames of a multi-frame DICOM file, 1 for anything else.

    Reads headers only. A file that cannot be read counts as 1, so that reading it later reports
    the real error (and `skip_bad_images` can skip it).
    """
    path = Path(path)
    reader = image_reader(path)
    try:
        if reader == NIFTI:
            import nibabel as nib

            shape = nib.load(str(path)).shape
            return int(shape[2]) if len(shape) >= 3 else 1
        if reader == DICOM:
            from medrec.io.limits import dcmread_bounded

            ds = dcmread_bounded(path, stop_before_pixels=True, specific_tags=["NumberOfFrames"], force=True)
            return max(1, int(getattr(ds, "NumberOfFrames", 1) or 1))
    except Exception as exc:  # the later read reports it properly
        log.debug("%s: cannot count slices (%s); counted as one", path, exc)
    return 1


# --------------------------------------------------------------------------- PNG / JPEG / TIFF / BMP


def read_pillow(
    path: str | Path, *, window: Any = None, color: str = "auto", reduce_to: int | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a PNG, JPEG, TIFF or BMP image as grey (module docstring for the rules)."""
    path = Path(path)
    check_window(window)
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    grey, top, conv, fmt, mode, k = _open_pillow(path, color, reduce_to)
    if window is None:
        image, applied = grey, "none"
    elif window == "auto":
        image, applied = np.asarray(grey, dtype=np.float32) / np.float32(top), f"bit depth (/{top:g})"
    else:
        image, applied = scale_window(grey, window)
    meta = {
        "format": (fmt or path.suffix.lstrip(".")).lower(),
        "mode": mode,
        "bit_depth": int(top).bit_length(),
        "rows": int(grey.shape[0]),
        "columns": int(grey.shape[1]),
        "pixel_spacing": None,
        "window": applied,
        "conversion": conv.kind,
        "alpha": conv.alpha,
        "colour_measure": None if conv.measure is None else conv.measure.describe(),
        "reduction": k,
    }
    if conv.alpha == "not_opaque":
        log.info("%s: alpha channel is not uniformly opaque; dropped (the grey values are read as stored)", path)
    return np.asarray(image, dtype=np.float32), meta


read_png_jpeg = read_pillow  # the name before TIFF and BMP were added


def _open_pillow(
    path: Path, color: str, reduce_to: int | None
) -> tuple[np.ndarray, float, Conversion, str | None, str, int]:
    """Open, check the declared size, decode (reduced when asked), convert to grey; failures are
    ImageErrors. Returns grey, bit-depth maximum, conversion, format, mode and the reduction."""
    from PIL import Image

    try:
        with pillow_limits(), Image.open(path) as im:
            check_pillow_image(im, path)
            fmt, mode = im.format, im.mode
            k = reduction_factor(im.size[1], im.size[0], reduce_to)
            scale = jpeg_draft(im, k)  # JPEG: the decoder itself decodes at 1/2, 1/4 or 1/8
            im.load()
            rest, top = k // scale, None
            if rest >= 2 and im.mode.startswith("I"):  # 16/32-bit: reduced as float in C, stored bit depth kept
                top = 65535.0 if im.mode.startswith("I;16") or fmt == "PNG" else None
                im = im.convert("F")
            if rest >= 2 and im.mode in PILLOW_REDUCE_MODES:
                im, scale, rest = im.reduce(rest), scale * rest, 1
            grey, stored_top, conv = pillow_to_grey(im, path, color)
            if rest >= 2:  # palette and bilevel images: reduced as grey values
                grey, scale = box_reduce(grey, rest), scale * rest
            return grey, top or stored_top, conv, fmt, mode, scale
    except (ImageError, ConfigError):
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"{path}: {exc}; raise io.max_pixels if the image is genuine") from exc
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, ...
        raise ImageError(f"{path}: not a readable {path.suffix.lstrip('.').upper() or 'image'} file: {exc}") from exc


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
        check_nifti_header(shape, 8, path)  # the slice is read as float64
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
        "conversion": "grey",
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
        "auto"), frame, slice_index, color.
        """

        def __init__(
            self,
            keys: Any,
            window: Any = "auto",
            frame: int | None = None,
            slice_index: int | None = None,
            meta_suffix: str | None = "_meta",
            allow_missing_keys: bool = False,
            color: str = "auto",
        ) -> None:
            super().__init__(keys, allow_missing_keys)
            check_window(window)
            self.window, self.frame, self.slice_index, self.color = window, frame, slice_index, color
            self.meta_suffix = meta_suffix

        def __call__(self, data: Any) -> dict[str, Any]:
            d = dict(data)
            for key in self.key_iterator(d):
                image, meta = read_image(d[key], frame=self.frame, window=self.window,
                                         slice_index=self.slice_index, color=self.color)
                d[key] = image[np.newaxis].astype(np.float32, copy=False)
                if self.meta_suffix is not None:
                    d[f"{key}{self.meta_suffix}"] = meta
            return d

    LoadMedicalImaged.__module__ = __name__
    LoadMedicalImaged.__qualname__ = "LoadMedicalImaged"
    return LoadMedicalImaged
