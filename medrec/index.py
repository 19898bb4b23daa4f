"""`python -m medrec.index DIR --out manifest.csv`: index a DICOM tree into a manifest CSV.

Front end only: parse arguments, load the pseudonym key, call `medrec.io.index.index_tree`
(and `join_labels`), write the manifest and the errors CSV, print a summary.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import pandas as pd

from medrec.errors import DataError
from medrec.exitcodes import handle_errors
from medrec.fileio import atomic_write_text
from medrec.io.index import MATCH_ATTRIBUTES, IndexResult, index_tree, join_labels
from medrec.privacy import KEY_ENV, identifying_paths_message, load_key

EPILOG = f"""\
examples:
  python -m medrec.index /data/cxr --out cxr/manifest.csv
  python -m medrec.index /data/cxr --out manifest.csv --workers 4 --errors bad_files.csv
  python -m medrec.index /data/cxr --out manifest.csv --labels labels.csv --label-key file --label-columns pneumonia
  python -m medrec.index /data/cxr --out manifest.csv --labels ris.csv --label-key AccessionNumber --label-columns label

Rows hold pseudonymous patient_id/study_id/image_id: HMAC-SHA256 with the key in ${KEY_ENV}
(or --key-env NAME); without it, a per-installation key file is made and used (see
medrec/privacy.py); series_id likewise. PatientName, birth date, accession number and raw
PatientID are never written (age only as a 10-year age_band); paths are, so a tree whose folder
or file names contain a file's PatientID, name parts, birth date (any common form) or
AccessionNumber is refused unless --allow-identifying-paths.
--label-key names the label CSV's key column; it is matched against the file-name stem
unless --match-on (or the column's own name) is one of {', '.join(MATCH_ATTRIBUTES)},
which are compared raw in memory and never written.
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m medrec.index", description=__doc__.splitlines()[0],
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", type=Path, metavar="DIR", help="top folder of the DICOM tree")
    p.add_argument("--out", type=Path, required=True, help="manifest CSV to write (paths relative to DIR)")
    p.add_argument("--errors", type=Path, help="CSV of unreadable files (default: <out>_errors.csv)")
    p.add_argument("--labels", type=Path, help="CSV with labels to join onto the images")
    p.add_argument("--label-key", help="the label CSV's key column")
    p.add_argument("--match-on", choices=["stem", *MATCH_ATTRIBUTES],
                   help="what the key column holds (default: the column's name if it is a DICOM keyword "
                        "listed here, else the file-name stem)")
    p.add_argument("--label-columns", help="comma-separated label columns to copy (default: label)")
    p.add_argument("--keep-unlabelled", action="store_true",
                   help="keep images without a label row (empty labels) instead of dropping them")
    p.add_argument("--key-env", default=KEY_ENV, metavar="NAME",
                   help=f"environment variable holding the pseudonym key (default {KEY_ENV})")
    p.add_argument("--allow-identifying-paths", action="store_true",
                   help="write the manifest even when folder or file names contain the PatientID or name")
    p.add_argument("--workers", type=int, default=1, help="processes reading headers (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.labels and not args.label_key:
        p.error("--labels needs --label-key COLUMN")
    if args.label_key and not args.labels:
        p.error("--label-key needs --labels FILE")
    if args.labels and not args.match_on:
        args.match_on = args.label_key if args.label_key in MATCH_ATTRIBUTES else "stem"
    return args


def run(args: argparse.Namespace) -> IndexResult:
    """Index, join labels, write both CSVs; returns the result for the summary."""
    key = load_key(args.key_env)
    match_on = args.match_on if args.match_on in MATCH_ATTRIBUTES else None
    result = index_tree(args.dir, key=key, workers=args.workers, progress=not args.quiet, match_on=match_on)
    if result.identifying_paths and not args.allow_identifying_paths:
        raise DataError(identifying_paths_message(result.identifying_paths, result.identifying_kinds, args.dir,
                                                  "the manifest's path column would carry them"))
    if args.labels:
        columns = [c.strip() for c in args.label_columns.split(",") if c.strip()] if args.label_columns else None
        result.manifest, stats = join_labels(
            result.manifest, args.labels, key_column=args.label_key, label_columns=columns,
            match_on=args.match_on, key=key, keep_unlabelled=args.keep_unlabelled,
        )
        dropped = "kept with empty labels" if args.keep_unlabelled else "dropped"
        print(f"labels: {stats['labelled']} image(s) labelled, {stats['unlabelled']} without a label row "
              f"({dropped}), {stats['unused_label_rows']} label row(s) matched no image")
    _write_csv(result.manifest, args.out)
    _write_csv(result.errors, errors_path(args))
    return result


def errors_path(args: argparse.Namespace) -> Path:
    return args.errors or args.out.with_name(f"{args.out.stem}_errors.csv")


def _write_csv(table: pd.DataFrame, path: Path) -> None:
    """Atomically (medrec.fileio), so an interrupted run never leaves half a manifest behind."""
    atomic_write_text(path, table.to_csv(index=False))


def summary(args: argparse.Namespace, result: IndexResult) -> str:
    m = result.manifest
    lines = [
        f"indexed {len(m)} image(s) of {m['patient_id'].nunique() if len(m) else 0} patient(s) in "
        f"{result.seconds:.1f} s ({result.files_per_second:.0f} files/s) -> {args.out}",
        f"unreadable: {len(result.errors)} file(s) -> {errors_path(args)}",
    ]
    if result.skipped:
        lines.append(f"skipped: {result.skipped} non-DICOM file(s) (by name and content) and DICOMDIRs")
    if args.out.resolve().parent != args.dir.resolve():
        lines.append(f"paths are relative to {args.dir}: set data.root: {args.dir.resolve()} in the config")
    return "\n".join(lines)


@handle_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr)
    # pydicom logs every odd header value of every file; the errors CSV has what matters.
    pydicom_log = logging.getLogger("pydicom")
    level = pydicom_log.level
    pydicom_log.setLevel(logging.ERROR)
    try:
        result = run(args)
    finally:
        pydicom_log.setLevel(level)
    print(summary(args, result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
