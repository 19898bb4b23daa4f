"""One DICOM file's header -> one manifest row (or the reason it cannot be one).

Only headers are parsed. Values longer than a kilobyte (pixel data, private blobs) are
skipped with a seek (pydicom's `defer_size`) instead of `stop_before_pixels`, because the
skipped pixel element still tells its declared length and offset: a file whose pixel data
is shorter than Rows x Columns x BitsAllocated/8 x frames x samples, or that ends before
its pixel data does, is reported as truncated without reading a single pixel.
Compressed (encapsulated) pixel data is walked to its closing delimiter, so a cut-off
compressed file is caught as well.

Identifiers (PatientID, PatientName, birth date, AccessionNumber, the UIDs) are decoded from
their raw bytes by `medrec.privacy.read_identifiers` (honouring SpecificCharacterSet), so
pydicom's value validation never quotes them in a warning or log line. They leave this
module only as keyed pseudonyms, as the kinds of identifier a path carries
(`medrec.privacy.path_identifies`), or as a 10-year age band.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

from medrec.io import series
from medrec.io.subgroups import subgroups
from medrec.privacy import IDENTIFYING_KEYWORDS, PseudonymKey, path_identifies, read_identifiers

MANIFEST_COLUMNS = (
    "path", "image_id", "patient_id", "study_id", "series_id", "modality", "body_part", "view_position",
    "sex", "age_band", "instance_number", "slice_position", "slice_thickness", "rows", "columns",
    "pixel_spacing", "photometric_interpretation", "transfer_syntax", "number_of_frames",
)
# Attributes a label file may be joined on besides the file-name stem; matched raw, never written.
MATCH_ATTRIBUTES = ("SOPInstanceUID", "StudyInstanceUID", "AccessionNumber", "PatientID")
UID_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
DICOM_SUFFIXES = {"", ".dcm", ".dicom", ".dic", ".ima"}
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_DEFER_BYTES = 1024
_UNDEFINED_LENGTH = 0xFFFFFFFF


class BadFile(Exception):
    """A file that cannot be indexed; the message is the reason written to the errors CSV."""


def dicom_like_name(path: Path) -> bool:
    """Names DICOM files usually have: no suffix, .dcm/.dicom/.dic/.ima, or a UID's digits."""
    suffix = path.suffix.lower()
    return suffix in DICOM_SUFFIXES or suffix[1:].isdigit()


def file_stem(name: str) -> str:
    """The name without a DICOM suffix ('IM-0001.dcm' -> 'IM-0001'; UID names stay whole)."""
    stem, suffix = os.path.splitext(name)
    return stem if suffix.lower() in DICOM_SUFFIXES - {""} else name


def index_file(
    path: Path, root: Path, key: PseudonymKey, match_on: str | None = None
) -> tuple[str, dict[str, Any]]:
    """Index one file: ("row", manifest row) | ("error", {path, reason}) | ("skip", {path}).

    With `match_on` (one of MATCH_ATTRIBUTES) the row carries `_match`, the keyed
    pseudonym of that attribute, for `medrec.io.labels.join_labels`.
    """
    rel = path.relative_to(root).as_posix()
    # pydicom warns about odd values; the warnings are kept out of the console (they may
    # quote header values) and only used to tell a truncated file from a broken one.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = read_header(path, rel)
            if ds is None:
                return "skip", {"path": rel}
            row = _row(ds, path, rel, key, match_on, caught)
        except BadFile as exc:
            return "error", {"path": rel, "reason": str(exc)}
        except Exception as exc:  # noqa: BLE001 - any parser failure is a per-file error
            return "error", {"path": rel, "reason": f"unreadable header ({type(exc).__name__}: {scrub(exc)})"}
    return "row", row


def read_header(path: Path, rel: str | None = None) -> Any | None:
    """The header (pixel values skipped), or None for a file that is not DICOM by content or name.

    Which files are DICOM is `medrec.io.formats.image_reader`'s call; a file without a suffix
    that it does not recognise is still tried (and reported as "not a DICOM file" if it is not
    one), so that a damaged slice of a series is listed in the errors, not silently skipped.
    Its declared size is checked against `medrec.io.limits` (a deflated file is inflated within
    them), so a header that declares a 46000 x 46000 image is an error row, never a manifest row.
    """
    from medrec.errors import ImageError
    from medrec.io.formats import DICOM, image_reader
    from medrec.io.limits import check_dicom_frame, dcmread_bounded

    reader = image_reader(path)
    if reader != DICOM and (reader is not None or path.suffix):
        return None
    marked = _head(path)[128:132] == b"DICM"
    if path.stat().st_size == 0:
        raise BadFile("empty file")
    with open(path, "rb") as fp:
        try:
            # force: files without the preamble (ACR-NEMA, some modalities' exports) still parse
            ds = dcmread_bounded(rel or path, fp, force=not marked, defer_size=_DEFER_BYTES)
        except ImageError as exc:
            raise BadFile(str(exc)) from None
        except EOFError as exc:
            raise BadFile(f"truncated header ({scrub(exc)})") from None
        except Exception as exc:
            what = "unreadable DICOM header" if marked else "not a DICOM file"
            raise BadFile(f"{what} ({type(exc).__name__}: {scrub(exc)})") from None
    meta = getattr(ds, "file_meta", None)
    if meta is not None and str(meta.get("MediaStorageSOPClassUID", "")) == DICOMDIR_CLASS:
        return None
    # Forced parsing turns any bytes into "elements": insist on a recognisable image header.
    if not marked and "Rows" not in ds and "SOPClassUID" not in ds:
        raise BadFile("not a DICOM file (no 'DICM' marker and no image header)")
    try:
        check_dicom_frame(ds, path, rel)  # medrec decodes one frame at a time; the codestream's size too
    except ImageError as exc:
        raise BadFile(str(exc)) from None
    return ds


def _head(path: Path) -> bytes:
    with open(path, "rb") as fp:
        return fp.read(132)


def _row(ds: Any, path: Path, rel: str, key: PseudonymKey, match_on: str | None, caught: list) -> dict[str, Any]:
    if any("End of file" in str(w.message) for w in caught):
        # pydicom keeps going after a cut-off value of undefined length (compressed pixel
        # data, a sequence) and only warns; what it returns then is incomplete.
        raise BadFile("truncated: the file ends inside a value of undefined length (compressed pixel data?)")
    image = _image_fields(ds, path)
    ids = read_identifiers(ds, (*IDENTIFYING_KEYWORDS, *UID_KEYWORDS))
    row: dict[str, Any] = {
        "path": rel, **_pseudonyms(ids, rel, key), **image, **series.geometry(ds),
        **subgroups(ds, ids.get("PatientBirthDate")),
        "_no_patient_id": ids["PatientID"] is None,
        "_identifying_path": path_identifies(rel, ids),
    }
    if match_on:
        raw = ids.get(match_on)
        row["_match"] = key.pseudonym(raw, "match") if raw else None
    return row


def _pseudonyms(ids: dict[str, str | None], rel: str, key: PseudonymKey) -> dict[str, str]:
    study, series_uid = ids["StudyInstanceUID"], ids["SeriesInstanceUID"]
    # Without a PatientID, a study still belongs to one patient: grouping by it keeps a
    # study's images on one side of a split.
    patient = ids["PatientID"] or f"no-patient-id\x00{study or ids['SOPInstanceUID'] or rel}"
    # The image id is the keyed SOP Instance UID, else the keyed relative path: never a path
    # component, which may be a name or an MRN.
    return {
        "image_id": key.pseudonym(ids["SOPInstanceUID"] or f"path\x00{rel}", "image"),
        "patient_id": key.pseudonym(patient, "patient"),
        "study_id": key.pseudonym(study, "study") if study else "",
        "series_id": key.pseudonym(series_uid, "series") if series_uid else "",
    }


def _image_fields(ds: Any, path: Path) -> dict[str, Any]:
    """What the image is (size, encoding, geometry); raises BadFile for what cannot be read."""
    rows, columns = _int(ds, "Rows"), _int(ds, "Columns")
    if not rows or not columns:
        raise BadFile("no Rows/Columns: not an image")
    pixel_keyword = next((k for k in _PIXEL_KEYWORDS if k in ds), None)
    if pixel_keyword is None:
        raise BadFile(f"no pixel data (SOP class {_text(ds, 'SOPClassUID') or 'unknown'})")
    syntax = _transfer_syntax(ds)
    _check_pixel_length(ds, pixel_keyword, path, syntax, rows, columns)
    return {
        "modality": _text(ds, "Modality"),
        "body_part": _text(ds, "BodyPartExamined"),
        "rows": rows,
        "columns": columns,
        "pixel_spacing": _spacing(ds),
        "photometric_interpretation": _text(ds, "PhotometricInterpretation"),
        "transfer_syntax": str(syntax),
        "number_of_frames": frames(ds),
    }


def _check_pixel_length(ds: Any, keyword: str, path: Path, syntax: Any, rows: int, columns: int) -> None:
    from pydicom.dataelem import RawDataElement

    elem = ds.get_item(keyword, keep_deferred=True)
    length = elem.length if isinstance(elem, RawDataElement) else len(elem.value or b"")
    if syntax.is_encapsulated:
        # The parser walked the fragments to the sequence delimiter; a cut-off file lost
        # the element above. Only an empty element is left to catch.
        if length == 0:
            raise BadFile("empty pixel data")
        return
    if length == _UNDEFINED_LENGTH:
        raise BadFile(f"pixel data of undefined length in the uncompressed transfer syntax {syntax.name}")
    expected = _expected_bytes(ds, keyword, rows, columns)
    if length < expected:
        raise BadFile(
            f"pixel data holds {length} bytes, Rows x Columns x BitsAllocated/8 x frames x samples "
            f"needs {expected}"
        )
    if isinstance(elem, RawDataElement) and not syntax.is_deflated:
        size = path.stat().st_size
        end = elem.value_tell + length
        if end > size:
            raise BadFile(f"truncated: the file has {size} bytes, its pixel data ends at byte {end}")


def _expected_bytes(ds: Any, keyword: str, rows: int, columns: int) -> int:
    default_bits = {"FloatPixelData": 32, "DoubleFloatPixelData": 64}.get(keyword, 8)
    bits = _int(ds, "BitsAllocated") or default_bits
    samples = _int(ds, "SamplesPerPixel") or 1
    if _text(ds, "PhotometricInterpretation") == "YBR_FULL_422":
        samples = 2  # 4:2:2 chroma subsampling stores two values per pixel
    return (rows * columns * frames(ds) * samples * bits + 7) // 8


def _transfer_syntax(ds: Any) -> Any:
    from pydicom import uid

    meta = getattr(ds, "file_meta", None)
    value = meta.get("TransferSyntaxUID") if meta is not None else None
    # No file meta (ACR-NEMA style): the DICOM default, implicit VR little endian.
    return uid.UID(str(value)) if value else uid.ImplicitVRLittleEndian


def _text(ds: Any, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _int(ds: Any, keyword: str) -> int | None:
    value = ds.get(keyword)
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def frames(ds: Any) -> int:
    return _int(ds, "NumberOfFrames") or 1


def _spacing(ds: Any) -> str:
    """Row and column spacing in mm as 'r\\c' (PixelSpacing, else ImagerPixelSpacing for X-ray)."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value is not None and not isinstance(value, str) and len(value) == 2:
            return "\\".join(f"{float(v):g}" for v in value)
    return ""


def scrub(exc: BaseException) -> str:
    """An exception message with quoted values removed and its length capped."""
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", str(exc))
    return text[:200]


def file_identifiers(path: Path) -> dict[str, str | None] | None:
    """The identifying attributes of one DICOM file, decoded by `medrec.privacy.read_identifiers`;
    None for a file that is not DICOM or cannot be read (its pixel read reports why)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's warnings may quote header values
            ds = read_header(Path(path), Path(path).name)
    except (BadFile, OSError):
        return None
    return None if ds is None else read_identifiers(ds)


def patient_pseudonyms(files: list[Path], root: Path | None, key_env: str, *,
                       allow_identifying_paths: bool = False) -> tuple[list[str | None], str | None]:
    """Keyed PatientID pseudonym of each file (None: not DICOM or no id) and the key's id, as the indexer
    makes them, after the indexer's identifying-path check (`check_identifying_paths`).

    Raises:
        DataError: identifying paths (how many, of which kinds, never the values) and the fix.
    """
    from medrec.privacy import load_key

    identities = [file_identifiers(f) or {} for f in files]
    check_identifying_paths(files, root, allow_identifying_paths, identities)
    key, out = None, []
    for ids in identities:
        if ids.get("PatientID"):
            key = key or load_key(key_env)
            out.append(key.pseudonym(ids["PatientID"], "patient"))
        else:
            out.append(None)
    return out, key.key_id if key else None


def check_identifying_paths(files: list[Path], root: Path | None, allow: bool,
                            identities: list[dict[str, str | None]] | None = None) -> None:
    """Refuse (unless `allow`) DICOM files whose path, relative to `root` when under it (else whole),
    carries one of their own identifiers (`medrec.privacy.path_identifies`), as the indexer does.

    Raises:
        DataError: how many paths carry which kinds of identifier (never the values) and the fix.
    """
    from collections import Counter

    from medrec.errors import DataError
    from medrec.privacy import identifying_paths_message

    if allow:
        return
    identities = identities if identities is not None else [file_identifiers(f) or {} for f in files]
    kinds, n_identifying = Counter(), 0
    for f, ids in zip(files, identities):
        found = path_identifies(_relative(Path(f), root), ids) if ids else ()
        kinds.update(found)
        n_identifying += bool(found)
    if n_identifying:
        raise DataError(identifying_paths_message(n_identifying, dict(kinds), root or "the input",
                                                  "the predictions' path column would carry them"))


def _relative(path: Path, root: Path | None) -> str:
    if root is not None and path.is_relative_to(root):
        return path.relative_to(root).as_posix()
    return path.as_posix().lstrip("/")
