"""Walk a DICOM tree into a manifest: one row per readable image, one error row per bad file.

Only headers are parsed. Values longer than a kilobyte (pixel data, private blobs) are
skipped with a seek (pydicom's `defer_size`) instead of `stop_before_pixels`, because the
skipped pixel element still tells its declared length and offset: a file whose pixel data
is shorter than Rows x Columns x BitsAllocated/8 x frames x samples, or that ends before
its pixel data does, is reported as truncated without reading a single pixel.
Compressed (encapsulated) pixel data is walked to its closing delimiter, so a cut-off
compressed file is caught as well.

Identifiers (PatientID, StudyInstanceUID, SOPInstanceUID, AccessionNumber) are read as
raw bytes, so that pydicom's value validation never quotes them in a warning or log line,
and leave this module only as keyed pseudonyms (`medrec.privacy`). PatientName is read
raw only to tell whether a file's path contains it (`path_identifies`); the birth date is
never read.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import re
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from medrec.errors import DataError
from medrec.privacy import PseudonymKey

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = (
    "path", "image_id", "patient_id", "study_id", "modality", "body_part", "view_position", "rows",
    "columns", "pixel_spacing", "photometric_interpretation", "transfer_syntax", "number_of_frames",
)
ERROR_COLUMNS = ("path", "reason")
# Attributes a label file may be joined on besides the file-name stem; matched raw, never written.
MATCH_ATTRIBUTES = ("SOPInstanceUID", "StudyInstanceUID", "AccessionNumber", "PatientID")
# Label-file columns that are never copied into a manifest, whatever --label-columns says.
IDENTIFYING_COLUMNS = {"patientname", "patientid", "patientbirthdate", "accessionnumber", "patient name",
                       "patient id", "birthdate", "birth date", "dob", "mrn"}
DICOM_SUFFIXES = {"", ".dcm", ".dicom", ".dic", ".ima"}
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_DEFER_BYTES = 1024
_UNDEFINED_LENGTH = 0xFFFFFFFF


@dataclass
class IndexResult:
    """What `index_tree` found: the manifest rows, the unreadable files, and the rest."""

    manifest: pd.DataFrame
    errors: pd.DataFrame
    skipped: int  # files that are neither DICOM by content nor by name (README.txt, .jpg, DICOMDIR)
    seconds: float
    missing_patient_id: int = 0  # images without PatientID (grouped by study instead)
    identifying_paths: int = 0  # paths that contain their file's PatientID or PatientName

    @property
    def files_per_second(self) -> float:
        n = len(self.manifest) + len(self.errors) + self.skipped
        return n / self.seconds if self.seconds > 0 else float("nan")


class _Bad(Exception):
    """A file that cannot be indexed; the message is the reason written to the errors CSV."""


# --------------------------------------------------------------------------- walking


def walk_files(root: Path) -> tuple[list[Path], list[dict[str, str]]]:
    """All regular files under `root` (hidden files and folders skipped), sorted.

    Folders are not followed through symlinks (no loops). Returns the files and one error
    row for each folder that could not be listed.
    """
    files: list[Path] = []
    errors: list[dict[str, str]] = []
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.name.startswith("."):  # .DS_Store, AppleDouble ._ files, .git
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    elif entry.is_file():
                        files.append(Path(entry.path))
        except OSError as exc:
            errors.append({"path": _rel(folder, root), "reason": f"folder cannot be listed ({exc.strerror})"})
    return sorted(files), errors


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path != root else "."


def dicom_like_name(path: Path) -> bool:
    """Names DICOM files usually have: no suffix, .dcm/.dicom/.dic/.ima, or a UID's digits."""
    suffix = path.suffix.lower()
    return suffix in DICOM_SUFFIXES or suffix[1:].isdigit()


def file_stem(name: str) -> str:
    """The name without a DICOM suffix ('IM-0001.dcm' -> 'IM-0001'; UID names stay whole)."""
    stem, suffix = os.path.splitext(name)
    return stem if suffix.lower() in DICOM_SUFFIXES - {""} else name


# --------------------------------------------------------------------------- one file


def index_file(
    path: Path, root: Path, key: PseudonymKey, match_on: str | None = None
) -> tuple[str, dict[str, Any]]:
    """Index one file: ("row", manifest row) | ("error", {path, reason}) | ("skip", {path}).

    With `match_on` (one of MATCH_ATTRIBUTES) the row carries `_match`, the keyed
    pseudonym of that attribute, for `join_labels`.
    """
    rel = _rel(path, root)
    # pydicom warns about odd values; the warnings are kept out of the console (they may
    # quote header values) and only used to tell a truncated file from a broken one.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = _read_header(path)
            if ds is None:
                return "skip", {"path": rel}
            row = _row(ds, path, rel, key, match_on, caught)
        except _Bad as exc:
            return "error", {"path": rel, "reason": str(exc)}
        except Exception as exc:  # noqa: BLE001 - any parser failure is a per-file error
            return "error", {"path": rel, "reason": f"unreadable header ({type(exc).__name__}: {_scrub(exc)})"}
    return "row", row


def _read_header(path: Path) -> Any | None:
    """The header (pixel values skipped), or None for a file that is not DICOM by content or name."""
    import pydicom

    with open(path, "rb") as fp:
        head = fp.read(132)
        marked = head[128:132] == b"DICM"
        if not marked and not dicom_like_name(path):
            return None
        if not head:
            raise _Bad("empty file")
        fp.seek(0)
        try:
            # force: files without the preamble (ACR-NEMA, some modalities' exports) still parse
            ds = pydicom.dcmread(fp, force=not marked, defer_size=_DEFER_BYTES)
        except EOFError as exc:
            raise _Bad(f"truncated header ({_scrub(exc)})") from None
        except Exception as exc:
            what = "unreadable DICOM header" if marked else "not a DICOM file"
            raise _Bad(f"{what} ({type(exc).__name__}: {_scrub(exc)})") from None
    meta = getattr(ds, "file_meta", None)
    if meta is not None and str(meta.get("MediaStorageSOPClassUID", "")) == DICOMDIR_CLASS:
        return None
    # Forced parsing turns any bytes into "elements": insist on a recognisable image header.
    if not marked and "Rows" not in ds and "SOPClassUID" not in ds:
        raise _Bad("not a DICOM file (no 'DICM' marker and no image header)")
    return ds


def _row(ds: Any, path: Path, rel: str, key: PseudonymKey, match_on: str | None, caught: list) -> dict[str, Any]:
    if any("End of file" in str(w.message) for w in caught):
        # pydicom keeps going after a cut-off value of undefined length (compressed pixel
        # data, a sequence) and only warns; what it returns then is incomplete.
        raise _Bad("truncated: the file ends inside a value of undefined length (compressed pixel data?)")
    rows, columns = _int(ds, "Rows"), _int(ds, "Columns")
    if not rows or not columns:
        raise _Bad("no Rows/Columns: not an image")
    pixel_keyword = next((k for k in _PIXEL_KEYWORDS if k in ds), None)
    if pixel_keyword is None:
        raise _Bad(f"no pixel data (SOP class {_text(ds, 'SOPClassUID') or 'unknown'})")
    syntax = _transfer_syntax(ds)
    _check_pixel_length(ds, pixel_keyword, path, syntax, rows, columns)
    ids = {k: _raw_text(ds, k) for k in ("PatientID", "StudyInstanceUID", "SOPInstanceUID")}
    study = ids["StudyInstanceUID"]
    # Without a PatientID, a study still belongs to one patient: grouping by it keeps a
    # study's images on one side of a split.
    patient = ids["PatientID"] or f"no-patient-id\x00{study or ids['SOPInstanceUID'] or rel}"
    row: dict[str, Any] = {
        "path": rel,
        "image_id": key.pseudonym(ids["SOPInstanceUID"] or f"path\x00{rel}", "image"),
        "patient_id": key.pseudonym(patient, "patient"),
        "study_id": key.pseudonym(study, "study") if study else "",
        "modality": _text(ds, "Modality"),
        "body_part": _text(ds, "BodyPartExamined"),
        "view_position": _text(ds, "ViewPosition"),
        "rows": rows,
        "columns": columns,
        "pixel_spacing": _spacing(ds),
        "photometric_interpretation": _text(ds, "PhotometricInterpretation"),
        "transfer_syntax": str(syntax),
        "number_of_frames": _frames(ds),
        "_no_patient_id": ids["PatientID"] is None,
        "_identifying_path": path_identifies(rel, ids["PatientID"], _raw_text(ds, "PatientName")),
    }
    if match_on:
        raw = ids.get(match_on) if match_on in ids else _raw_text(ds, match_on)
        row["_match"] = key.pseudonym(raw, "match") if raw else None
    return row


def _check_pixel_length(ds: Any, keyword: str, path: Path, syntax: Any, rows: int, columns: int) -> None:
    from pydicom.dataelem import RawDataElement

    elem = ds.get_item(keyword, keep_deferred=True)
    length = elem.length if isinstance(elem, RawDataElement) else len(elem.value or b"")
    if syntax.is_encapsulated:
        # The parser walked the fragments to the sequence delimiter; a cut-off file lost
        # the element above. Only an empty element is left to catch.
        if length == 0:
            raise _Bad("empty pixel data")
        return
    if length == _UNDEFINED_LENGTH:
        raise _Bad(f"pixel data of undefined length in the uncompressed transfer syntax {syntax.name}")
    expected = _expected_bytes(ds, keyword, rows, columns)
    if length < expected:
        raise _Bad(
            f"pixel data holds {length} bytes, Rows x Columns x BitsAllocated/8 x frames x samples "
            f"needs {expected}"
        )
    if isinstance(elem, RawDataElement) and not syntax.is_deflated:
        size = path.stat().st_size
        end = elem.value_tell + length
        if end > size:
            raise _Bad(f"truncated: the file has {size} bytes, its pixel data ends at byte {end}")


def _expected_bytes(ds: Any, keyword: str, rows: int, columns: int) -> int:
    default_bits = {"FloatPixelData": 32, "DoubleFloatPixelData": 64}.get(keyword, 8)
    bits = _int(ds, "BitsAllocated") or default_bits
    samples = _int(ds, "SamplesPerPixel") or 1
    if _text(ds, "PhotometricInterpretation") == "YBR_FULL_422":
        samples = 2  # 4:2:2 chroma subsampling stores two values per pixel
    return (rows * columns * _frames(ds) * samples * bits + 7) // 8


def _transfer_syntax(ds: Any) -> Any:
    from pydicom import uid

    meta = getattr(ds, "file_meta", None)
    value = meta.get("TransferSyntaxUID") if meta is not None else None
    # No file meta (ACR-NEMA style): the DICOM default, implicit VR little endian.
    return uid.UID(str(value)) if value else uid.ImplicitVRLittleEndian


def _raw_text(ds: Any, keyword: str) -> str | None:
    """An attribute's text without pydicom's conversion (which can quote it in a warning)."""
    from pydicom.dataelem import RawDataElement

    if keyword not in ds:
        return None
    elem = ds.get_item(keyword, keep_deferred=True)
    value = elem.value if isinstance(elem, RawDataElement) else str(elem.value or "").encode()
    if not value:
        return None
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        text = value.decode("latin-1")
    return text.strip(" \x00") or None


def _text(ds: Any, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _int(ds: Any, keyword: str) -> int | None:
    value = ds.get(keyword)
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _frames(ds: Any) -> int:
    return _int(ds, "NumberOfFrames") or 1


def _spacing(ds: Any) -> str:
    """Row and column spacing in mm as 'r\\c' (PixelSpacing, else ImagerPixelSpacing for X-ray)."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value is not None and not isinstance(value, str) and len(value) == 2:
            return "\\".join(f"{float(v):g}" for v in value)
    return ""


def path_identifies(rel: str, patient_id: str | None, patient_name: str | None) -> bool:
    """Whether a relative path carries the file's PatientID or a part of its PatientName.

    PACS exports are often filed under MRN/ or NAME^FIRST/ folders; the manifest's path
    column would then hold the identifiers that the pseudonyms keep out. Short values
    count only as a whole folder or file name, to avoid matching by chance.
    """
    parts = {p.lower() for part in rel.split("/") for p in (part, file_stem(part))}
    text = rel.lower()
    names = re.split(r"[\^=]", patient_name or "")
    for value, min_substring in [(patient_id, 6), *((n, 4) for n in names)]:
        value = (value or "").strip().lower()
        if value and (value in parts or (len(value) >= min_substring and value in text)):
            return True
    return False


def _scrub(exc: BaseException) -> str:
    """An exception message with quoted values removed and its length capped."""
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", str(exc))
    return text[:200]


# --------------------------------------------------------------------------- the tree


def index_tree(
    root: str | Path,
    *,
    key: PseudonymKey,
    workers: int = 1,
    progress: bool = False,
    match_on: str | None = None,
) -> IndexResult:
    """Index every file under `root`; unreadable files become error rows, the run goes on.

    Args:
        root: the folder to walk; manifest paths are relative to it.
        key: pseudonym key for patient, study and image ids.
        workers: processes reading headers (1: in this process).
        progress: show a tqdm bar on stderr.
        match_on: a MATCH_ATTRIBUTES name whose pseudonym rows carry for `join_labels`.
    """
    from tqdm import tqdm

    root = Path(root).resolve()
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; give the top folder of the DICOM tree")
    if match_on is not None and match_on not in MATCH_ATTRIBUTES:
        raise DataError(f"match attribute '{match_on}' unknown; valid: {', '.join(MATCH_ATTRIBUTES)}")
    start = time.perf_counter()
    files, errors = walk_files(root)
    job = functools.partial(index_file, root=root, key=key, match_on=match_on)
    rows: list[dict[str, Any]] = []
    skipped = 0
    with _mapper(workers, len(files)) as imap:
        for kind, payload in tqdm(imap(job, files), total=len(files), unit="file", desc="indexing",
                                  disable=not progress, mininterval=0.5):
            if kind == "row":
                rows.append(payload)
            elif kind == "error":
                errors.append(payload)
            else:
                skipped += 1
    manifest = _frame(rows, with_match=match_on is not None)
    missing = int(manifest.pop("_no_patient_id").astype(bool).sum())
    identifying = int(manifest.pop("_identifying_path").astype(bool).sum())
    if missing:
        log.warning("%d image(s) have no PatientID; they are grouped by study instead", missing)
    errors_df = pd.DataFrame(errors, columns=list(ERROR_COLUMNS)).sort_values("path", ignore_index=True)
    return IndexResult(manifest, errors_df, skipped, time.perf_counter() - start, missing, identifying)


@contextmanager
def _mapper(workers: int, n: int) -> Iterator[Callable[..., Iterator[Any]]]:
    if workers <= 1 or n < 2 * workers:
        yield map
        return
    # Small chunks keep the progress bar moving; large enough to amortise the pickling.
    chunk = max(1, min(64, n // (workers * 8)))
    with multiprocessing.get_context().Pool(workers) as pool:
        yield functools.partial(pool.imap_unordered, chunksize=chunk)


def _frame(rows: list[dict[str, Any]], with_match: bool) -> pd.DataFrame:
    extra = ["_no_patient_id", "_identifying_path", *(["_match"] if with_match else [])]
    table = pd.DataFrame(rows, columns=[*MANIFEST_COLUMNS, *extra])
    table = table.sort_values("path", ignore_index=True)
    dup = table["image_id"].duplicated(keep=False)
    if dup.any():
        # Copies of one SOP instance: keep them apart with a suffix (same study, same patient).
        log.warning("%d file(s) share a SOPInstanceUID with another file; their image_id gets a suffix", int(dup.sum()))
        n = table.groupby("image_id").cumcount()
        table.loc[n > 0, "image_id"] = table.loc[n > 0, "image_id"] + "-" + n[n > 0].astype(str)
    return table


# --------------------------------------------------------------------------- labels


def join_labels(
    manifest: pd.DataFrame,
    labels: str | Path,
    *,
    key_column: str,
    label_columns: list[str] | None,
    match_on: str,
    key: PseudonymKey,
    keep_unlabelled: bool = False,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Copy `label_columns` from a label CSV onto the manifest rows they belong to.

    `match_on` is "stem" (the column holds file names, with or without .dcm) or one of
    MATCH_ATTRIBUTES, whose raw values are compared through their keyed pseudonyms, so the
    raw identifiers of either side never meet the output. The key column itself is never
    copied, nor is any column named like an identifier.

    Returns:
        the labelled manifest (unlabelled images dropped unless `keep_unlabelled`) and
        counts: labelled, unlabelled, unused_label_rows.

    Raises:
        DataError: missing columns, a key that repeats, an identifying label column.
    """
    labels = Path(labels)
    try:
        table = pd.read_csv(labels, dtype={key_column: str})
    except FileNotFoundError:
        raise DataError(f"label file {labels} not found") from None
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{labels} is not a readable CSV: {exc}") from None
    columns = _label_columns(table, labels, key_column, label_columns)
    clash = [c for c in columns if c in manifest.columns]
    if clash:
        raise DataError(f"{labels}: label column(s) {clash} clash with manifest columns; rename them in the CSV")
    keys = table[key_column].fillna("").astype(str).str.strip()
    if match_on == "stem":
        keys = keys.map(file_stem)
        image_keys = manifest["path"].map(lambda p: file_stem(Path(p).name))
    else:
        keys = keys.map(lambda v: key.pseudonym(v, "match") if v else "")
        image_keys = manifest["_match"]
    present = keys != ""
    repeated = keys[present].duplicated(keep=False)
    if repeated.any():
        where = (keys[present][repeated].index[:2] + 2).tolist()  # CSV line numbers, never the values
        raise DataError(
            f"{labels}: the key column '{key_column}' repeats a value (lines {where[0]} and {where[1]}); "
            "one label row per key"
        )
    by_key = table.loc[present, columns].set_index(keys[present])
    joined = by_key.reindex(image_keys.fillna("").to_numpy())
    out = manifest.drop(columns=["_match"], errors="ignore").reset_index(drop=True)
    hit = joined.index.isin(by_key.index) & (image_keys.fillna("").to_numpy() != "")
    for c in columns:
        out[c] = joined[c].to_numpy()
    stats = {"labelled": int(hit.sum()), "unlabelled": int((~hit).sum()),
             "unused_label_rows": int((~by_key.index.isin(image_keys.dropna())).sum())}
    if not keep_unlabelled:
        out = out.loc[hit].reset_index(drop=True)
    return out, stats


def _label_columns(table: pd.DataFrame, source: Path, key_column: str, wanted: list[str] | None) -> list[str]:
    if key_column not in table.columns:
        raise DataError(f"{source}: no key column '{key_column}'; present: {', '.join(map(str, table.columns))}")
    if not wanted:
        if "label" not in table.columns:
            raise DataError(f"{source}: name the label columns with --label-columns; present: "
                            f"{', '.join(map(str, table.columns))}")
        wanted = ["label"]
    missing = [c for c in wanted if c not in table.columns]
    if missing:
        raise DataError(f"{source}: no label column(s) {missing}; present: {', '.join(map(str, table.columns))}")
    identifying = [c for c in wanted if c == key_column or c.strip().lower() in IDENTIFYING_COLUMNS]
    if identifying:
        raise DataError(f"{source}: refusing to copy identifying column(s) {identifying} into a manifest")
    return list(wanted)
