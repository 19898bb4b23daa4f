"""SQLite store of clinician verdicts on a run's predictions (RUN/review.sqlite).

Every verdict is a new row (full history, UTC timestamps); "the" verdict of a reviewer on a
case is their latest row. Each write is one short IMMEDIATE transaction on a fresh connection
with a busy timeout, in WAL mode, so several reviewers (Streamlit sessions, processes) can write
to one file at once without losing a verdict or blocking readers.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import sqlite3
from collections.abc import Iterable
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from itertools import combinations
from pathlib import Path
from typing import IO, Any

from medrec.errors import DataError
from medrec.fileio import atomic_write_text
from medrec.safetext import csv_cell

log = logging.getLogger(__name__)

VERDICTS = ("agree", "disagree", "unsure")
DB_NAME = "review.sqlite"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 30_000
PRIVATE = 0o600  # verdicts hold reviewers' names and free-text comments about patients' images

_SCHEMA = """
CREATE TABLE IF NOT EXISTS verdicts (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    image_id        TEXT NOT NULL,
    target          TEXT NOT NULL DEFAULT '',
    reviewer        TEXT NOT NULL,
    verdict         TEXT NOT NULL CHECK (verdict IN ('agree', 'disagree', 'unsure')),
    corrected_label TEXT,
    comment         TEXT NOT NULL DEFAULT '',
    model_score     REAL,
    model_decision  TEXT,
    truth           TEXT,
    created_utc     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS verdicts_case ON verdicts (image_id, target, reviewer, id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Verdict:
    """One reviewer's judgement of the model's decision on one case.

    `target` names the label judged (multilabel runs); it is '' for binary and multiclass runs,
    where the verdict is on the case's single decision. Labels are stored as text: "0"/"1" for
    binary and multilabel targets, the class name for multiclass.
    """

    image_id: str
    reviewer: str
    verdict: str
    target: str = ""
    corrected_label: str | None = None
    comment: str = ""
    model_score: float | None = None
    model_decision: str | None = None
    truth: str | None = None
    created_utc: str = ""
    id: int | None = None


COLUMNS = tuple(f.name for f in fields(Verdict))


def utc_now() -> str:
    """ISO 8601 UTC timestamp with microseconds, sortable as text."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


class VerdictStore:
    """Verdicts of one run, in `RUN/review.sqlite` (or any path given)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.is_dir():
            self.path = self.path / DB_NAME
        _make_private(self.path)
        with self._connect() as conn:
            # WAL lets readers proceed while one writer commits; the mode persists in the file.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    @contextmanager
    def _connect(self):
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        except sqlite3.OperationalError as exc:
            raise DataError(
                f"cannot open the verdict database {self.path}: {exc}; is the run folder writable?"
            ) from None
        with closing(conn):
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA synchronous=NORMAL")  # durable at each WAL checkpoint; safe with WAL
            conn.row_factory = sqlite3.Row
            yield conn

    def add(self, verdict: Verdict) -> Verdict:
        """Append one verdict in its own transaction; returns it with id and timestamp set.

        Raises:
            DataError: an unknown verdict or an empty reviewer name.
        """
        if verdict.verdict not in VERDICTS:
            raise DataError(f"verdict '{verdict.verdict}' unknown; valid: {', '.join(VERDICTS)}")
        if not verdict.reviewer.strip():
            raise DataError("a verdict needs a reviewer name; enter yours in the sidebar")
        row = asdict(verdict)
        row.update(reviewer=verdict.reviewer.strip(), created_utc=verdict.created_utc or utc_now())
        row.pop("id")
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self._connect() as conn:
            # IMMEDIATE takes the write lock up front, so a busy writer waits (busy_timeout)
            # instead of failing later on a read-to-write lock upgrade.
            conn.execute("BEGIN IMMEDIATE")
            try:
                new_id = conn.execute(f"INSERT INTO verdicts ({cols}) VALUES ({marks})", tuple(row.values())).lastrowid
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        log.info("verdict %s on %s by reviewer saved", verdict.verdict, verdict.image_id)
        return Verdict(**row, id=new_id)

    def history(self, image_id: str | None = None, target: str | None = None) -> list[Verdict]:
        """Every verdict, oldest first; optionally of one case (and target)."""
        where, args = _where(image_id=image_id, target=target)
        return self._query(f"SELECT * FROM verdicts{where} ORDER BY id", args)

    def latest(self, image_id: str | None = None, target: str | None = None) -> list[Verdict]:
        """The latest verdict of each reviewer on each (case, target), ordered by case then reviewer."""
        where, args = _where("v.", image_id=image_id, target=target)
        sql = (
            "SELECT v.* FROM verdicts v JOIN (SELECT MAX(id) AS id FROM verdicts "
            f"GROUP BY image_id, target, reviewer) last ON v.id = last.id{where} "
            "ORDER BY v.image_id, v.target, v.reviewer"
        )
        return self._query(sql, args)

    def reviewed_ids(self, reviewer: str | None = None, target: str | None = None) -> set[str]:
        """Image ids with at least one verdict (by `reviewer` if given, on `target` if given)."""
        where, args = _where(reviewer=reviewer.strip() if reviewer else None, target=target)
        with self._connect() as conn:
            return {r[0] for r in conn.execute(f"SELECT DISTINCT image_id FROM verdicts{where}", args)}

    def count(self) -> int:
        with self._connect() as conn:
            return conn.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]

    def _query(self, sql: str, args: Iterable[Any]) -> list[Verdict]:
        with self._connect() as conn:
            return [Verdict(**dict(r)) for r in conn.execute(sql, list(args))]

    def export_csv(self, out: str | Path | IO[str] | None = None, *, latest_only: bool = False) -> str:
        """Write every verdict (or only the latest per reviewer) as CSV; returns the CSV text.

        `out` may be a path (written atomically, mode 0600), an open text file, or None (only
        return the text). Text cells that a spreadsheet would run as a formula (starting with
        = + - @ tab CR) get a leading ' (medrec.safetext.csv_cell).
        """
        rows = self.latest() if latest_only else self.history()
        buf = io.StringIO()
        # RFC 4180 line ends: a cell holding a CR or LF is then quoted, so it cannot split a row.
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\r\n")
        writer.writeheader()
        for v in rows:
            writer.writerow({k: csv_cell(x) for k, x in asdict(v).items()})
        text = buf.getvalue()
        if isinstance(out, (str, Path)):
            atomic_write_text(out, text, mode=PRIVATE)
        elif out is not None:
            out.write(text)
        return text


def _where(prefix: str = "", **conditions: str | None) -> tuple[str, list[str]]:
    """' WHERE a = ? AND b = ?' for the conditions that are not None, and their values."""
    used = {k: v for k, v in conditions.items() if v is not None}
    if not used:
        return "", []
    return " WHERE " + " AND ".join(f"{prefix}{k} = ?" for k in used), list(used.values())


def _make_private(path: Path) -> None:
    """Create the database file 0600 before SQLite opens it (SQLite gives its -wal and -shm files
    the database file's mode), and narrow an existing one that others could read."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, PRIVATE))
        if path.stat().st_mode & 0o077:
            os.chmod(path, PRIVATE)
            log.info("%s was readable by others; narrowed to owner-only", path.name)
    except OSError as exc:
        raise DataError(f"cannot open the verdict database {path}: {exc}; is the run folder writable?") from None


def reviewer_label(v: Verdict) -> str | None:
    """The label a reviewer asserts: the correction if given, else implied by the verdict.

    agree -> the model's decision; disagree on a 0/1 decision -> the other one; unsure, or a
    disagreement with a multiclass decision and no correction -> None (no label asserted).
    """
    if v.corrected_label not in (None, ""):
        return str(v.corrected_label)
    if v.verdict == "agree":
        return v.model_decision
    if v.verdict == "disagree" and v.model_decision in ("0", "1"):
        return "1" if v.model_decision == "0" else "0"
    return None


def _kappa(a: list[str], b: list[str]) -> float | None:
    """Cohen's kappa (sklearn); None when it is undefined (fewer than 2 cases, or chance
    agreement is 1 because both raters used one and the same label throughout)."""
    if len(a) < 2 or (len(set(a)) == 1 and set(a) == set(b)):
        return None
    from sklearn.metrics import cohen_kappa_score

    return float(cohen_kappa_score(a, b))


def _by_reviewer(latest: list[Verdict]) -> dict[str, dict[tuple[str, str], Verdict]]:
    by: dict[str, dict[tuple[str, str], Verdict]] = {}
    for v in latest:
        by.setdefault(v.reviewer, {})[(v.image_id, v.target)] = v
    return by


def agreement(latest: list[Verdict]) -> dict[str, Any]:
    """Agreement summary from the latest verdicts.

    Returns {"model_vs_reviewer": [...], "reviewer_vs_reviewer": [...]}: per reviewer the number
    of verdicts, agree/disagree/unsure counts, the share of "agree" among decided verdicts and
    Cohen's kappa between the model's decision and the reviewer's label; per pair of reviewers
    who both labelled the same (case, target), n, raw agreement and Cohen's kappa.
    """
    by_reviewer = _by_reviewer(latest)
    model_rows = []
    for name in sorted(by_reviewer):
        vs = list(by_reviewer[name].values())
        counts = {k: sum(v.verdict == k for v in vs) for k in VERDICTS}
        decided = counts["agree"] + counts["disagree"]
        pairs = [(v.model_decision, reviewer_label(v)) for v in vs]
        pairs = [(m, r) for m, r in pairs if m is not None and r is not None]
        model_rows.append(
            {
                "reviewer": name,
                "n": len(vs),
                **counts,
                "agree_rate": counts["agree"] / decided if decided else None,
                "kappa_vs_model": _kappa([m for m, _ in pairs], [r for _, r in pairs]),
            }
        )
    return {"model_vs_reviewer": model_rows, "reviewer_vs_reviewer": _pair_rows(by_reviewer)}


def _pair_rows(by_reviewer: dict[str, dict[tuple[str, str], Verdict]]) -> list[dict[str, Any]]:
    rows = []
    for a, b in combinations(sorted(by_reviewer), 2):
        shared = sorted(set(by_reviewer[a]) & set(by_reviewer[b]))
        if not shared:
            continue
        la = [reviewer_label(by_reviewer[a][k]) for k in shared]
        lb = [reviewer_label(by_reviewer[b][k]) for k in shared]
        both = [(x, y) for x, y in zip(la, lb) if x is not None and y is not None]
        rows.append(
            {
                "reviewer_a": a,
                "reviewer_b": b,
                "n_shared": len(shared),
                "n_labelled": len(both),
                "agreement": sum(x == y for x, y in both) / len(both) if both else None,
                "kappa": _kappa([x for x, _ in both], [y for _, y in both]),
            }
        )
    return rows


def disagreements(latest: list[Verdict]) -> list[dict[str, Any]]:
    """The (case, target)s on which reviewers assert different labels (`reviewer_label`; an
    'unsure' asserts none), in case order: image_id, target and each reviewer's
    {reviewer: (verdict, label)}."""
    cases: dict[tuple[str, str], dict[str, Verdict]] = {}
    for v in latest:
        cases.setdefault((v.image_id, v.target), {})[v.reviewer] = v
    out = []
    for (image_id, target), votes in sorted(cases.items()):
        labels = {reviewer_label(v) for v in votes.values()} - {None}
        if len(labels) > 1:
            out.append(
                {
                    "image_id": image_id,
                    "target": target,
                    "votes": {r: (v.verdict, reviewer_label(v)) for r, v in sorted(votes.items())},
                }
            )
    return out


def progress(latest: list[Verdict], target: str, n_cases: int) -> list[dict[str, Any]]:
    """Per reviewer: cases with a current verdict on `target` and their share of `n_cases`."""
    done: dict[str, set[str]] = {}
    for v in latest:
        if v.target == target:
            done.setdefault(v.reviewer, set()).add(v.image_id)
    return [
        {"reviewer": r, "reviewed": len(ids), "share": len(ids) / n_cases if n_cases else 0.0}
        for r, ids in sorted(done.items())
    ]
