"""Join a label CSV onto an indexed manifest, matching raw identifiers only through their pseudonyms."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pandas as pd

from medrec.errors import DataError
from medrec.io.headers import MATCH_ATTRIBUTES, file_stem
from medrec.privacy import PseudonymKey

# Label-file columns that are never copied into a manifest, whatever --label-columns says.
IDENTIFYING_COLUMNS = {"patientname", "patientid", "patientbirthdate", "accessionnumber", "patient name",
                       "patient id", "birthdate", "birth date", "dob", "mrn"}

__all__ = ["IDENTIFYING_COLUMNS", "MATCH_ATTRIBUTES", "join_labels"]


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
    table = _read_label_csv(labels, key_column)
    columns = _label_columns(table, labels, key_column, label_columns)
    clash = [c for c in columns if c in manifest.columns]
    if clash:
        raise DataError(f"{labels}: label column(s) {clash} clash with manifest columns; rename them in the CSV")
    keys, image_keys = _keys(table[key_column], manifest, match_on, key)
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


def _read_label_csv(labels: Path, key_column: str) -> pd.DataFrame:
    try:
        return pd.read_csv(labels, dtype={key_column: str})
    except FileNotFoundError:
        raise DataError(f"label file {labels} not found") from None
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{labels} is not a readable CSV: {exc}") from None


def _keys(column: pd.Series, manifest: pd.DataFrame, match_on: str, key: PseudonymKey) -> tuple[pd.Series, pd.Series]:
    """(label-file keys, image keys) in one comparable form: file stems, or keyed pseudonyms."""
    keys = column.fillna("").astype(str).str.strip()
    if match_on == "stem":
        return keys.map(file_stem), manifest["path"].map(lambda p: file_stem(Path(p).name))
    # NFC, as the DICOM side (medrec.privacy.decode_identifier): one spelling of an accented name
    return keys.map(lambda v: key.pseudonym(unicodedata.normalize("NFC", v), "match") if v else ""), manifest["_match"]


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
