"""Walk a DICOM tree into a manifest: one row per readable image, one error row per bad file.

Each file's header becomes a row in `medrec.io.headers` (pseudonymous ids, image, series and
subgroup columns); this module walks the tree, runs that over every file (in worker processes
if asked), and assembles the manifest and the errors table. Labels are joined by
`medrec.io.labels.join_labels`.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from medrec.errors import DataError
from medrec.io.headers import MANIFEST_COLUMNS, MATCH_ATTRIBUTES, dicom_like_name, file_stem, index_file
from medrec.io.labels import join_labels
from medrec.privacy import PseudonymKey

__all__ = ["ERROR_COLUMNS", "IndexResult", "MANIFEST_COLUMNS", "MATCH_ATTRIBUTES", "dicom_like_name", "file_stem",
           "index_file", "index_tree", "join_labels", "walk_files"]

log = logging.getLogger(__name__)

ERROR_COLUMNS = ("path", "reason")


@dataclass
class IndexResult:
    """What `index_tree` found: the manifest rows, the unreadable files, and the rest."""

    manifest: pd.DataFrame
    errors: pd.DataFrame
    skipped: int  # files that are neither DICOM by content nor by name (README.txt, .jpg, DICOMDIR)
    seconds: float
    missing_patient_id: int = 0  # images without PatientID (grouped by study instead)
    identifying_paths: int = 0  # paths that carry an identifier of their file (medrec.privacy.path_identifies)
    # how many paths carry each kind of identifier (keyword -> count), never the values
    identifying_kinds: dict[str, int] = field(default_factory=dict)

    @property
    def files_per_second(self) -> float:
        n = len(self.manifest) + len(self.errors) + self.skipped
        return n / self.seconds if self.seconds > 0 else float("nan")


def walk_files(root: Path) -> tuple[list[Path], list[dict[str, str]]]:
    """All regular files under `root` (medrec.io.formats.walk_files), folder errors relative to `root`."""
    from medrec.io.formats import walk_files as walk

    files, errors = walk(root)
    for row in errors:
        folder = Path(row["path"])
        row["path"] = folder.relative_to(root).as_posix() if folder != Path(root) else "."
    return files, errors


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
        key: pseudonym key for patient, study, series and image ids.
        workers: processes reading headers (1: in this process).
        progress: show a tqdm bar on stderr.
        match_on: a MATCH_ATTRIBUTES name whose pseudonym rows carry for `join_labels`.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; give the top folder of the DICOM tree")
    if match_on is not None and match_on not in MATCH_ATTRIBUTES:
        raise DataError(f"match attribute '{match_on}' unknown; valid: {', '.join(MATCH_ATTRIBUTES)}")
    start = time.perf_counter()
    files, errors = walk_files(root)
    rows, file_errors, skipped = _index_files(files, root, key, match_on, workers, progress)
    manifest = _frame(rows, with_match=match_on is not None)
    missing = int(manifest.pop("_no_patient_id").astype(bool).sum())
    kinds = manifest.pop("_identifying_path")
    counts = Counter(k for found in kinds for k in found)
    if missing:
        log.warning("%d image(s) have no PatientID; they are grouped by study instead", missing)
    errors_df = pd.DataFrame(errors + file_errors, columns=list(ERROR_COLUMNS)).sort_values("path", ignore_index=True)
    return IndexResult(manifest, errors_df, skipped, time.perf_counter() - start, missing,
                       int(kinds.map(bool).sum()), dict(counts))


def _index_files(files: list[Path], root: Path, key: PseudonymKey, match_on: str | None, workers: int,
                 progress: bool) -> tuple[list[dict[str, Any]], list[dict[str, str]], int]:
    """(rows, error rows, skipped count) of `files`, read by `workers` processes."""
    from tqdm import tqdm

    job = functools.partial(index_file, root=root, key=key, match_on=match_on)
    rows: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
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
    return rows, errors, skipped


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
    for column in ("instance_number", "number_of_frames", "rows", "columns"):
        table[column] = pd.to_numeric(table[column], errors="coerce").astype("Int64")
    for column in ("slice_position", "slice_thickness"):  # empty cells when the header has no geometry
        table[column] = pd.to_numeric(table[column], errors="coerce").astype(float)
    return table
