"""medrec.review.store: verdict history in SQLite, concurrency, export, agreement."""

from __future__ import annotations

import csv
import io
import multiprocessing
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pytest

from medrec.errors import DataError
from medrec.review.store import Verdict, VerdictStore, agreement, reviewer_label


def _v(image_id: str, reviewer: str, verdict: str, decision: str = "1", **kw) -> Verdict:
    return Verdict(image_id=image_id, reviewer=reviewer, verdict=verdict, model_decision=decision, **kw)


def test_history_keeps_every_verdict_and_latest_is_per_reviewer(tmp_path: Path):
    store = VerdictStore(tmp_path)
    assert store.path == tmp_path / "review.sqlite"
    store.add(_v("a", "alice", "agree"))
    store.add(_v("a", "bob", "unsure", comment="motion blur"))
    store.add(_v("a", "alice", "disagree", corrected_label="0", comment="changed my mind"))
    store.add(_v("b", "alice", "agree"))

    history = store.history("a")
    assert [(v.reviewer, v.verdict) for v in history] == [("alice", "agree"), ("bob", "unsure"), ("alice", "disagree")]
    stamps = [datetime.fromisoformat(v.created_utc) for v in history]
    assert all(t.tzinfo is not None and t.utcoffset().total_seconds() == 0 for t in stamps)
    assert stamps == sorted(stamps)
    assert abs((datetime.now(timezone.utc) - stamps[-1]).total_seconds()) < 60

    latest = {v.reviewer: v for v in store.latest("a")}
    assert latest["alice"].verdict == "disagree" and latest["alice"].comment == "changed my mind"
    assert latest["bob"].verdict == "unsure"
    assert store.reviewed_ids("alice") == {"a", "b"} and store.reviewed_ids("bob") == {"a"}
    assert store.reviewed_ids() == {"a", "b"}

    # an independent reader sees the same rows, and the file is in WAL mode
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0] == 4


def test_targets_keep_multilabel_verdicts_apart(tmp_path: Path):
    store = VerdictStore(tmp_path / "r.sqlite")
    store.add(_v("a", "alice", "agree", target="effusion"))
    store.add(_v("a", "alice", "disagree", target="nodule"))
    assert [v.verdict for v in store.latest("a", "effusion")] == ["agree"]
    assert [v.verdict for v in store.latest("a", "nodule")] == ["disagree"]
    assert store.reviewed_ids("alice", "effusion") == {"a"} and store.reviewed_ids("alice", "") == set()


def test_bad_verdicts_are_refused(tmp_path: Path):
    store = VerdictStore(tmp_path)
    with pytest.raises(DataError, match="valid: agree, disagree, unsure"):
        store.add(_v("a", "alice", "maybe"))
    with pytest.raises(DataError, match="reviewer name"):
        store.add(_v("a", "  ", "agree"))
    assert store.count() == 0


def test_unwritable_location_names_the_file(tmp_path: Path):
    with pytest.raises(DataError, match="cannot open the verdict database"):
        VerdictStore(tmp_path / "missing" / "review.sqlite")


def test_export_csv_matches_the_database(tmp_path: Path):
    store = VerdictStore(tmp_path)
    store.add(_v("a", "alice", "agree", model_score=0.9, truth="1"))
    store.add(_v("a", "alice", "disagree", corrected_label="0", comment='says "no", really'))
    store.add(_v("b", "bob", "unsure", comment="line one\nline two"))
    out = tmp_path / "verdicts.csv"
    text = store.export_csv(out)
    assert out.read_bytes().decode() == text
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    with sqlite3.connect(store.path) as conn:
        conn.row_factory = sqlite3.Row
        db = [dict(r) for r in conn.execute("SELECT * FROM verdicts ORDER BY id")]
    assert len(rows) == len(db) == 3
    for got, want in zip(rows, db):
        for key, value in want.items():
            assert got[key] == ("" if value is None else str(value))
    latest = list(csv.DictReader(io.StringIO(store.export_csv(latest_only=True), newline="")))
    assert [(r["image_id"], r["verdict"]) for r in latest] == [("a", "disagree"), ("b", "unsure")]


def _kappa_by_hand(a: list[str], b: list[str]) -> float:
    labels = sorted(set(a) | set(b))
    n = len(a)
    po = sum(x == y for x, y in zip(a, b)) / n
    pe = sum((a.count(k) / n) * (b.count(k) / n) for k in labels)
    return (po - pe) / (1 - pe)


def test_agreement_summary(tmp_path: Path):
    store = VerdictStore(tmp_path)
    # model decisions for cases c0..c5; alice and bob review c0..c4, carol only c5
    decisions = ["1", "0", "1", "0", "1", "1"]
    alice = ["agree", "agree", "disagree", "agree", "unsure"]
    bob = ["agree", "disagree", "disagree", "agree", "agree"]
    for i, (va, vb) in enumerate(zip(alice, bob)):
        store.add(_v(f"c{i}", "alice", va, decisions[i]))
        store.add(_v(f"c{i}", "bob", vb, decisions[i]))
    store.add(_v("c5", "carol", "disagree", decisions[5], corrected_label="0"))
    store.add(_v("c0", "alice", "agree", decisions[0]))  # a repeated verdict counts once

    summary = agreement(store.latest())
    per = {r["reviewer"]: r for r in summary["model_vs_reviewer"]}
    assert per["alice"]["n"] == 5 and (per["alice"]["agree"], per["alice"]["disagree"], per["alice"]["unsure"]) == (
        3,
        1,
        1,
    )
    assert per["alice"]["agree_rate"] == pytest.approx(3 / 4)
    # reviewer labels implied by the verdicts: agree -> decision, disagree -> the other label
    alice_labels = ["1", "0", "0", "0"]  # c4 unsure: no label
    assert per["alice"]["kappa_vs_model"] == pytest.approx(_kappa_by_hand(decisions[:4], alice_labels))
    assert per["carol"]["kappa_vs_model"] is None  # one case: undefined

    pairs = summary["reviewer_vs_reviewer"]
    assert [(p["reviewer_a"], p["reviewer_b"]) for p in pairs] == [("alice", "bob")]  # carol shares nothing
    pair = pairs[0]
    bob_labels = ["1", "1", "0", "0"]
    assert pair["n_shared"] == 5 and pair["n_labelled"] == 4
    assert pair["agreement"] == pytest.approx(3 / 4)
    assert pair["kappa"] == pytest.approx(_kappa_by_hand(alice_labels, bob_labels))


def test_reviewer_label_rules():
    assert reviewer_label(_v("a", "r", "agree", "1")) == "1"
    assert reviewer_label(_v("a", "r", "disagree", "1")) == "0"
    assert reviewer_label(_v("a", "r", "disagree", "cat", corrected_label="dog")) == "dog"
    assert reviewer_label(_v("a", "r", "disagree", "cat")) is None
    assert reviewer_label(_v("a", "r", "unsure", "1")) is None


def _write_many(path: str, reviewer: str, n: int, start: multiprocessing.Event) -> None:
    store = VerdictStore(path)
    start.wait(30)
    for i in range(n):
        store.add(Verdict(image_id=f"case{i:04d}", reviewer=reviewer, verdict="agree", comment=f"{reviewer} {i}"))


def test_two_processes_lose_no_verdict(tmp_path: Path):
    path = str(tmp_path / "review.sqlite")
    VerdictStore(path)
    ctx = multiprocessing.get_context("spawn")  # no inherited state: two independent writers
    start = ctx.Event()
    procs = [ctx.Process(target=_write_many, args=(path, name, 500, start)) for name in ("alice", "bob")]
    for p in procs:
        p.start()
    start.set()  # both begin writing at the same moment
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT reviewer, COUNT(*), COUNT(DISTINCT comment) FROM verdicts GROUP BY reviewer"
        ).fetchall()
        order = [r[0] for r in conn.execute("SELECT reviewer FROM verdicts ORDER BY id")]
    assert sorted(rows) == [("alice", 500, 500), ("bob", 500, 500)]
    switches = sum(a != b for a, b in zip(order, order[1:]))
    assert switches >= 2, "the two writers did not overlap, so the test proved nothing"


def test_database_and_exports_are_private(tmp_path: Path):
    import os
    import stat

    old = os.umask(0o022)  # the usual umask: new files would be 0644
    try:
        store = VerdictStore(tmp_path)
        store.add(Verdict(image_id="a", reviewer="r", verdict="agree", comment="note"))
        store.export_csv(tmp_path / "export.csv")
    finally:
        os.umask(old)
    for name in ("review.sqlite", "review.sqlite-wal", "export.csv"):
        path = tmp_path / name
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
    assert (tmp_path / "review.sqlite").exists() and (tmp_path / "export.csv").exists()
    loose = tmp_path / "old"
    loose.mkdir()
    (loose / "review.sqlite").touch(mode=0o644)
    os.chmod(loose / "review.sqlite", 0o644)
    VerdictStore(loose)
    assert stat.S_IMODE((loose / "review.sqlite").stat().st_mode) == 0o600  # narrowed


def test_export_neutralises_formula_cells(tmp_path: Path):
    store = VerdictStore(tmp_path)
    comments = ['=HYPERLINK("http://evil.example","x")', "=cmd|' /C calc'!A0", "+1", "-1+2", "@SUM(A1)",
                "\tx", "\rx", "fine = text"]
    for c in comments:
        store.add(Verdict(image_id="=id", reviewer="@eve", verdict="agree", comment=c, model_score=-0.5))
    text = store.export_csv(tmp_path / "out.csv")
    assert (tmp_path / "out.csv").read_bytes().decode() == text
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert [r["comment"] for r in rows] == ["'" + c for c in comments[:-1]] + ["fine = text"]
    assert {r["image_id"] for r in rows} == {"'=id"} and {r["reviewer"] for r in rows} == {"'@eve"}
    assert {r["model_score"] for r in rows} == {"-0.5"}  # numbers stay numbers
    for line in text.splitlines()[1:]:
        assert not line.startswith(("=", "+", "-", "@"))


def test_disagreements_are_per_case_and_target():
    from medrec.review.store import disagreements, progress

    latest = [
        _v("a", "ann", "agree", decision="1", target="effusion"),
        _v("a", "ben", "disagree", decision="1", target="effusion"),  # ann says 1, ben says 0
        _v("a", "ann", "agree", decision="0", target="nodule"),
        _v("a", "ben", "agree", decision="0", target="nodule"),  # same label: no dispute
        _v("b", "ann", "unsure", decision="1", target="effusion"),
        _v("b", "ben", "agree", decision="1", target="effusion"),  # unsure asserts nothing
        _v("c", "ann", "disagree", corrected_label="1", decision="0", target="effusion"),
        _v("c", "ben", "agree", decision="0", target="effusion"),
    ]
    got = disagreements(latest)
    assert [(d["image_id"], d["target"]) for d in got] == [("a", "effusion"), ("c", "effusion")]
    assert got[0]["votes"] == {"ann": ("agree", "1"), "ben": ("disagree", "0")}
    assert progress(latest, "effusion", 4) == [
        {"reviewer": "ann", "reviewed": 3, "share": 0.75}, {"reviewer": "ben", "reviewed": 3, "share": 0.75}]
