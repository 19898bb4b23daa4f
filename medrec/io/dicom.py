"""Read DICOM files into float32 arrays in modality units (windows: `medrec.io.windows`).

`read_dicom` returns one 2-D frame. Without a window the values are in modality units
(Modality LUT or RescaleSlope/RescaleIntercept applied), with MONOCHROME1 inverted as
``C - x`` (C constant per file) so that a higher value always means a brighter pixel.
With a window the values are in [0, 1].

Every failure (unreadable, truncated, colour, segmentation, no pixel data, no decoder)
is a `DicomError` that names the file and the reason. Identifying attributes never
reach the returned metadata, the logs or the error messages; `dicom_identifiers` is the
one place that reads them, for an indexer that pseudonymises them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from medrec.errors import ConfigError, DicomError, ImageError, ImageTooLargeError
from medrec.io.limits import check_dicom_frame, dcmread_bounded
from medrec.io.reduce import box_reduce, reduction_factor
from medrec.io.windows import (  # noqa: F401 - re-exported: callers import windows from here too
    PERCENTILES,
    WINDOW_NAMES,
    WINDOW_PRESETS,
    apply_voi_lut,
    apply_window,
    check_window,
    has_voi_lut,
    named_windows,
    scale_minmax,
    scale_percentile,
    scale_window,
)

log = logging.getLogger(__name__)

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_SEGMENTATION_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation Storage
    "1.2.840.10008.5.1.4.1.1.66.7",  # Label Map Segmentation Storage
}
# Enhanced multi-frame files keep rescale, window and spacing in functional groups.
_FRAME_GROUP_SEQUENCES = (
    "PixelValueTransformationSequence",
    "FrameVOILUTSequence",
    "PixelMeasuresSequence",
)
# (metadata key, DICOM keyword): non-identifying attributes only.
_META_FIELDS = (
    ("modality", "Modality"),
    ("body_part", "BodyPartExamined"),
    ("view_position", "ViewPosition"),
    ("laterality", "ImageLaterality"),
    ("rows", "Rows"),
    ("columns", "Columns"),
    ("photometric_interpretation", "PhotometricInterpretation"),
    ("bits_allocated", "BitsAllocated"),
    ("bits_stored", "BitsStored"),
    ("pixel_representation", "PixelRepresentation"),
    ("rescale_slope", "RescaleSlope"),
    ("rescale_intercept", "RescaleIntercept"),
    ("rescale_type", "RescaleType"),
    ("voi_lut_function", "VOILUTFunction"),
    ("slice_thickness", "SliceThickness"),
    ("manufacturer", "Manufacturer"),
    ("manufacturer_model_name", "ManufacturerModelName"),
    ("sop_class_uid", "SOPClassUID"),
)
_IDENTIFIER_FIELDS = (
    ("patient_id", "PatientID"),
    ("study_instance_uid", "StudyInstanceUID"),
    ("series_instance_uid", "SeriesInstanceUID"),
    ("sop_instance_uid", "SOPInstanceUID"),
    ("accession_number", "AccessionNumber"),
)
_warned_presets: set[str] = set()


# --------------------------------------------------------------------------- reading


def read_dicom(
    path: str | Path, *, frame: int | None = None, window: Any = None, reduce_to: int | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Read one frame of a DICOM file as a float32 2-D array plus de-identified metadata.

    Args:
        path: the DICOM file.
        frame: frame index of a multi-frame file; default the middle frame.
        window: None -> modality units (MONOCHROME1 inverted); "auto" -> the file's VOI
            LUT, else its first WindowCenter/WindowWidth, else percentile scaling;
            "minmax", "percentile", a preset name or (center, width) -> that window.
            Windows act on modality values before the MONOCHROME1 inversion, as in DICOM,
            so a window copied from the header or a viewer means the same thing here.
        reduce_to: the caller's target size: the frame is box-reduced right after the modality LUT
            (before windows and percentiles) by `medrec.io.reduce.reduction_factor`.

    Returns:
        (image, metadata); the image in [0, 1] whenever a window is given.

    Raises:
        DicomError: the file cannot be read into a grayscale image (the message says why).
        ConfigError: `window` is not a valid window.
    """
    path = Path(path)
    check_window(window)
    # Large values (the pixel data) stay on disk until needed: a multi-frame file then
    # only has the chosen frame read (see _decode_frame).
    ds = _read_dataset(path, defer_size="1 MB")
    try:
        _check_image(ds, path)
        _ensure_transfer_syntax(ds)
        index, n_frames = _select_frame(ds, frame, path)
        check_dicom_frame(ds, path)  # one frame is decoded; before any pixel is
        _flatten_frame_groups(ds, index)
        stored = _decode_frame(ds, index, n_frames, path)
        modality, sample, k = _modality(stored, ds, reduce_to)
        inverted = ds.PhotometricInterpretation == "MONOCHROME1"
        if window is None:
            image = _mono1_constant(ds, modality) - modality if inverted else modality
            applied = "none"
        else:
            image, applied = _window_dataset(modality, ds, window, path, sample)
            image = 1.0 - image if inverted else image
        meta = {**_metadata(ds, index, n_frames, applied, inverted), "reduction": k}
    except (ImageError, ConfigError):
        raise
    except Exception as exc:  # pydicom, numpy and decoder plugins raise many types
        raise DicomError(f"{path}: cannot read pixel data: {_describe(exc)}") from exc
    return image.astype(np.float32), meta


def _modality(stored: np.ndarray, ds: Any, reduce_to: int | None) -> tuple[np.ndarray, Any, int]:
    """Modality values (float64), reduced by k when asked (medrec.io.reduce), and a strided
    full-resolution sample of them for percentiles and min/max, which averaging would pull inwards.

    A rescale (slope, intercept) is linear, so the stored values are reduced first and only the
    small array is rescaled; a Modality LUT Sequence need not be, so it is applied first.
    """
    from pydicom.pixels import apply_modality_lut

    k = reduction_factor(*stored.shape, reduce_to)
    if k == 1:
        return np.asarray(apply_modality_lut(stored, ds), dtype=np.float64), None, 1
    if "ModalityLUTSequence" in ds:
        full = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
        return np.asarray(box_reduce(full, k), dtype=np.float64), full[::k, ::k], k
    sample = np.asarray(apply_modality_lut(np.ascontiguousarray(stored[::k, ::k]), ds), dtype=np.float64)
    reduced = box_reduce(stored, k)  # float32 box means: relative rounding ~1e-7
    return np.asarray(apply_modality_lut(reduced, ds), dtype=np.float64), sample, k


def dicom_identifiers(path: str | Path) -> dict[str, str | None]:
    """Read the identifying keys (PatientID, Study/Series/SOP Instance UID, accession).

    For an indexer that pseudonymises them before they go anywhere; never log them.
    Pixel data is not read. The values are decoded from the raw bytes, not through
    pydicom's value conversion, whose validation warnings (and pydicom's log) would
    quote a malformed identifier verbatim.
    """
    path = Path(path)
    keywords = ["SpecificCharacterSet", *(keyword for _, keyword in _IDENTIFIER_FIELDS)]
    ds = _read_dataset(path, stop_before_pixels=True, specific_tags=keywords)
    try:
        from medrec.privacy import read_identifiers  # the one decoder of identifier text (index, predict)

        ids = read_identifiers(ds, tuple(keyword for _, keyword in _IDENTIFIER_FIELDS))
        return {key: ids[keyword] for key, keyword in _IDENTIFIER_FIELDS}
    except Exception as exc:  # a damaged header; the message never quotes values
        raise DicomError(f"{path}: cannot read identifiers: {type(exc).__name__}") from exc


def _read_dataset(path: Path, **kwargs: Any) -> Any:
    """dcmread, retrying without the 'DICM' preamble check; errors become DicomError."""
    from pydicom.errors import InvalidDicomError

    if not path.is_file():
        raise DicomError(f"{path}: no such file")
    try:
        return dcmread_bounded(path, **kwargs)
    except InvalidDicomError:
        pass  # no 'DICM' marker: old ACR-NEMA style files are still readable with force
    except ImageTooLargeError:
        raise
    except Exception as exc:
        raise DicomError(f"{path}: not a readable DICOM file: {_describe(exc)}") from exc
    try:
        ds = dcmread_bounded(path, force=True, **kwargs)
    except ImageTooLargeError:
        raise
    except Exception as exc:
        raise DicomError(f"{path}: not a DICOM file: {_describe(exc)}") from exc
    # Forced parsing turns any bytes into "elements": insist on a recognisable image header.
    if "specific_tags" not in kwargs and "SOPClassUID" not in ds and "Rows" not in ds:
        raise DicomError(f"{path}: not a DICOM file (no 'DICM' marker, no SOP class, no Rows)")
    return ds


def _check_image(ds: Any, path: Path) -> None:
    """Reject what is not one grayscale image, with the reason and what to do."""
    sop_class = str(ds.get("SOPClassUID", ""))
    if not any(keyword in ds for keyword in _PIXEL_KEYWORDS):
        name = getattr(ds.get("SOPClassUID"), "name", sop_class) or "unknown SOP class"
        raise DicomError(f"{path}: no pixel data ({name}); not an image")
    if sop_class in _SEGMENTATION_SOP_CLASSES:
        raise DicomError(
            f"{path}: a segmentation object (SEG), not an image; use it as a mask "
            "(e.g. with highdicom), not as an input image"
        )
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if not photometric:
        raise DicomError(
            f"{path}: no PhotometricInterpretation (0028,0004); cannot tell grayscale from "
            "colour"
        )
    samples = ds.get("SamplesPerPixel", 1)
    if photometric not in ("MONOCHROME1", "MONOCHROME2") or samples != 1:
        raise DicomError(
            f"{path}: colour image (PhotometricInterpretation '{photometric}', "
            f"SamplesPerPixel {samples}); medrec reads grayscale images only: convert it "
            "to grayscale (MONOCHROME2) first or leave it out of the manifest"
        )


def _ensure_transfer_syntax(ds: Any) -> None:
    """Files without file meta: take the transfer syntax from how the file was read."""
    from pydicom import uid
    from pydicom.dataset import FileMetaDataset

    if "TransferSyntaxUID" in getattr(ds, "file_meta", {}):
        return
    implicit, little = ds.original_encoding
    if implicit is None:
        return  # let the decoder report the missing transfer syntax
    syntax = (
        uid.ImplicitVRLittleEndian
        if implicit
        else uid.ExplicitVRLittleEndian if little else uid.ExplicitVRBigEndian
    )
    if not hasattr(ds, "file_meta"):
        ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    log.debug("no transfer syntax in file meta; inferred %s", syntax.name)


def _select_frame(ds: Any, frame: int | None, path: Path) -> tuple[int, int]:
    """Return (frame index, number of frames); default the middle frame."""
    n_frames = int(ds.get("NumberOfFrames") or 1)
    if frame is None:
        return n_frames // 2, n_frames
    if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)):
        raise DicomError(f"{path}: frame {frame!r} must be an integer")
    if not 0 <= frame < n_frames:
        raise DicomError(
            f"{path}: frame {frame} out of range; the file has {n_frames} frame(s), "
            f"valid: 0..{n_frames - 1}"
        )
    return int(frame), n_frames


def _flatten_frame_groups(ds: Any, index: int) -> None:
    """Copy an enhanced file's shared, then per-frame, functional groups to the top level.

    Rescale, window and pixel spacing then read the same way as in a classic file; the
    per-frame group wins over the shared one, as in the standard.
    """
    groups = []
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        groups.append(shared[0])
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame and index < len(per_frame):
        groups.append(per_frame[index])
    for group in groups:
        for keyword in _FRAME_GROUP_SEQUENCES:
            sequence = group.get(keyword)
            if sequence:
                for elem in sequence[0]:
                    ds[elem.tag] = elem


def _decode_frame(ds: Any, index: int, n_frames: int, path: Path) -> np.ndarray:
    """Decode only the requested frame (pydicom 3 decodes a single frame by index).

    Multi-frame files go through `pydicom.pixels.pixel_array(path, index=...)`, which
    reads just that frame from disk; files without a preamble (read with force) and
    single-frame files use the dataset already in memory.
    """
    from pydicom.pixels import get_decoder

    syntax = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
    if syntax is None:
        raise DicomError(f"{path}: no Transfer Syntax UID; the pixel encoding is unknown")
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as exc:
        raise DicomError(
            f"{path}: no decoder for transfer syntax {syntax} ({syntax.name}) in pydicom; "
            "convert the file (e.g. `dcmdjpeg`, `gdcmconv --raw`) first"
        ) from exc
    if not decoder.is_available:
        raise DicomError(
            f"{path}: cannot decode {syntax.name}: no decoder plugin installed; "
            f"install one of: {'; '.join(decoder.missing_dependencies)}"
        )
    if n_frames > 1 and getattr(ds, "preamble", None) is not None and not syntax.is_deflated:
        from pydicom.pixels import pixel_array

        # Reads and decodes only this frame's bytes (native offset or encapsulated item).
        arr = np.asarray(pixel_array(path, index=index))
    else:
        ds.pixel_array_options(index=index if n_frames > 1 else None)
        arr = np.asarray(ds.pixel_array)
    if arr.ndim != 2:
        raise DicomError(f"{path}: decoded frame has shape {arr.shape}, expected 2-D")
    return arr


def _mono1_constant(ds: Any, modality: np.ndarray) -> float:
    """C in `C - x` for MONOCHROME1: modality min + max over the representable range.

    Maps the representable range onto itself, reversed, so that the output stays in the
    modality's range and `read_dicom + apply_modality_lut` is one constant per file.
    Float pixel data has no representable range: then the frame's own min + max.
    """
    from pydicom.pixels import apply_modality_lut

    if "PixelData" not in ds:
        return float(modality.min() + modality.max())
    bits = int(ds.BitsStored)
    if int(ds.PixelRepresentation) == 1:
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    else:
        lo, hi = 0, 2**bits - 1
    # A Modality LUT need not be monotonic: evaluate every stored value when that is cheap.
    stored = np.arange(lo, hi + 1) if bits <= 16 else np.array([lo, hi])
    values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
    return float(values.min() + values.max())


def _window_dataset(
    modality: np.ndarray, ds: Any, window: Any, path: Path, sample: np.ndarray | None = None
) -> tuple[np.ndarray, str]:
    """Window modality values (not yet inverted) onto [0, 1]; returns (image, description)."""
    if window != "auto":
        if isinstance(window, str) and window in WINDOW_PRESETS:
            _warn_preset_modality(window, str(ds.get("Modality", "")))
        return scale_window(modality, window, sample)
    if has_voi_lut(ds):
        return apply_voi_lut(modality, ds), "file VOI LUT"
    if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
        function = str(ds.get("VOILUTFunction") or "LINEAR")
        try:
            image = apply_window(modality, center, width, function)
            return image, f"file window ({center:g}, {width:g}) {function}"
        except ValueError as exc:
            log.warning("%s: unusable file window (%s); using percentile scaling", path, exc)
    return scale_window(modality, "percentile", sample)


def _warn_preset_modality(preset: str, modality: str) -> None:
    """Presets are Hounsfield windows: say so once per modality when it is not CT."""
    if modality != "CT" and modality not in _warned_presets:
        _warned_presets.add(modality)
        log.warning(
            "window preset '%s' is in Hounsfield units but modality is '%s'", preset, modality
        )


def _first(value: Any) -> float:
    """First value of a possibly multi-valued DS element."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0]
    return float(value)


def _plain(value: Any) -> Any:
    """A pydicom value as a JSON-friendly Python value (None when it cannot be read)."""
    if value is None or value == "":
        return None
    try:
        if type(value).__name__ == "MultiValue" or isinstance(value, (list, tuple)):
            return [_plain(v) for v in value]
        if isinstance(value, float) or type(value).__name__ in ("DSfloat", "DSdecimal"):
            return float(value)
        if isinstance(value, int):
            return int(value)
        return str(value).strip() or None
    except (TypeError, ValueError):
        return None


def _metadata(
    ds: Any, index: int, n_frames: int, applied: str, inverted: bool
) -> dict[str, Any]:
    """De-identified metadata: acquisition facts only, nothing about the patient."""
    meta: dict[str, Any] = {"format": "dicom"}
    for key, keyword in _META_FIELDS:
        meta[key] = _plain(ds.get(keyword))
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    meta["pixel_spacing"] = _plain(spacing)
    syntax = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
    meta["transfer_syntax"] = str(syntax) if syntax else None
    meta["transfer_syntax_name"] = syntax.name if syntax else None
    meta["window_center"] = _plain(_safe_first(ds.get("WindowCenter")))
    meta["window_width"] = _plain(_safe_first(ds.get("WindowWidth")))
    meta.update(number_of_frames=n_frames, frame=index, window=applied, inverted=inverted)
    return meta


def _safe_first(value: Any) -> float | None:
    try:
        return None if value is None else _first(value)
    except (TypeError, ValueError, IndexError):
        return None


def _describe(exc: BaseException) -> str:
    """One line for an exception: its type and its message (decoders list one per plugin)."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    if len(text) > 400:
        text = text[:400] + " ..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
