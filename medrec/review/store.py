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
import sqlite3
from collections.abc import Iterable
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from itertools import combinations
from pathlib import Path
from typing import IO, Any

from medrec.errors import DataError

log = logging.getLogger(__name__)

VERDICTS = ("agree", "disagree", "unsure")
DB_NAME = "review.sqlite"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 30_000

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
        sql, args = "SELECT * FROM verdicts", []
        clauses = []
        if image_id is not None:
            clauses.append("image_id = ?")
            args.append(image_id)
        if target is not None:
            clauses.append("target = ?")
            args.append(target)
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        return self._query(sql + " ORDER BY id", args)

    def latest(self, image_id: str | None = None, target: str | None = None) -> list[Verdict]:
        """The latest verdict of each reviewer on each (case, target), ordered by case then reviewer."""
        sql = (
            "SELECT v.* FROM verdicts v JOIN (SELECT MAX(id) AS id FROM verdicts "
            "GROUP BY image_id, target, reviewer) last ON v.id = last.id"
        )
        clauses, args = [], []
        if image_id is not None:
            clauses.append("v.image_id = ?")
            args.append(image_id)
        if target is not None:
            clauses.append("v.target = ?")
            args.append(target)
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        return self._query(sql + " ORDER BY v.image_id, v.target, v.reviewer", args)

    def reviewed_ids(self, reviewer: str | None = None, target: str | None = None) -> set[str]:
        """Image ids with at least one verdict (by `reviewer` if given, on `target` if given)."""
        sql, clauses, args = "SELECT DISTINCT image_id FROM verdicts", [], []
        if reviewer:
            clauses.append("reviewer = ?")
            args.append(reviewer.strip())
        if target is not None:
            clauses.append("target = ?")
            args.append(target)
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        with self._connect() as conn:
            return {r[0] for r in conn.execute(sql, args)}

    def count(self) -> int:
        with self._connect() as conn:
            return conn.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]

    def _query(self, sql: str, args: Iterable[Any]) -> list[Verdict]:
        with self._connect() as conn:
            return [Verdict(**dict(r)) for r in conn.execute(sql, list(args))]

    def export_csv(self, out: str | Path | IO[str] | None = None, *, latest_only: bool = False) -> str:
        """Write every verdict (or only the latest per reviewer) as CSV; returns the CSV text.

        `out` may be a path, an open text file, or None (only return the text).
        """
        rows = self.latest() if latest_only else self.history()
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for v in rows:
            writer.writerow(asdict(v))
        text = buf.getvalue()
        if isinstance(out, (str, Path)):
            Path(out).write_text(text, encoding="utf-8")
        elif out is not None:
            out.write(text)
        return text


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


def agreement(latest: list[Verdict]) -> dict[str, Any]:
    """Agreement summary from the latest verdicts.

    Returns {"model_vs_reviewer": [...], "reviewer_vs_reviewer": [...]}: per reviewer the number
    of verdicts, agree/disagree/unsure counts, the share of "agree" among decided verdicts and
    Cohen's kappa between the model's decision and the reviewer's label; per pair of reviewers
    who both labelled the same (case, target), n, raw agreement and Cohen's kappa.
    """
    by_reviewer: dict[str, dict[tuple[str, str], Verdict]] = {}
    for v in latest:
        by_reviewer.setdefault(v.reviewer, {})[(v.image_id, v.target)] = v
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
    pair_rows = []
    for a, b in combinations(sorted(by_reviewer), 2):
        shared = sorted(set(by_reviewer[a]) & set(by_reviewer[b]))
        la = [reviewer_label(by_reviewer[a][k]) for k in shared]
        lb = [reviewer_label(by_reviewer[b][k]) for k in shared]
        both = [(x, y) for x, y in zip(la, lb) if x is not None and y is not None]
        if not shared:
            continue
        pair_rows.append(
            {
                "reviewer_a": a,
                "reviewer_b": b,
                "n_shared": len(shared),
                "n_labelled": len(both),
                "agreement": sum(x == y for x, y in both) / len(both) if both else None,
                "kappa": _kappa([x for x, _ in both], [y for _, y in both]),
            }
        )
    return {"model_vs_reviewer": model_rows, "reviewer_vs_reviewer": pair_rows}
