"""Paired comparison: DeLong against a brute-force implementation, and the run-level comparison."""

import json
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medrec.errors import MedrecError
from medrec.eval import compare
from medrec.report import main

from . import oof_table, write_run


def _brute_force_delong(y, s1, s2):
    """DeLong, DeLong & Clarke-Pearson (1988) straight from the definition, O(n*m)."""
    y = np.asarray(y, dtype=bool)

    def psi(x, z):  # x: positives' scores, z: negatives' scores
        return (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])

    comps = []
    for s in (s1, s2):
        kernel = psi(s[y], s[~y])
        comps.append((kernel.mean(axis=1), kernel.mean(axis=0), kernel.mean()))
    m, n = y.sum(), (~y).sum()
    v10 = np.vstack([c[0] for c in comps])  # per positive
    v01 = np.vstack([c[1] for c in comps])  # per negative
    s10 = np.cov(v10)
    s01 = np.cov(v01)
    cov = s10 / m + s01 / n
    aucs = np.array([c[2] for c in comps])
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    z = (aucs[0] - aucs[1]) / math.sqrt(var)
    return aucs, cov, 2 * (1 - 0.5 * (1 + math.erf(abs(z) / math.sqrt(2))))


@pytest.mark.parametrize("ties", [False, True])
def test_delong_matches_brute_force_structural_components(ties):
    rng = np.random.default_rng(0)
    n = 150
    y = rng.random(n) < 0.4
    base = rng.normal(0, 1, n) + 1.0 * y
    s1 = base + rng.normal(0, 0.5, n)
    s2 = base + rng.normal(0, 1.0, n)  # correlated with s1, as two models on the same cases are
    if ties:
        s1, s2 = np.round(s1, 0), np.round(s2, 0)
    aucs, cov = compare.delong_covariance(y, np.vstack([s1, s2]))
    ref_aucs, ref_cov, ref_p = _brute_force_delong(y, s1, s2)
    np.testing.assert_allclose(aucs, ref_aucs, atol=1e-12)
    np.testing.assert_allclose(aucs, [roc_auc_score(y, s1), roc_auc_score(y, s2)], atol=1e-12)
    np.testing.assert_allclose(cov, ref_cov, atol=1e-14)
    res = compare.delong_test(y, s1, s2)
    assert res["p_value"] == pytest.approx(ref_p, rel=1e-9)
    assert res["diff"] == pytest.approx(ref_aucs[0] - ref_aucs[1])


def test_delong_identical_scores_and_too_few_cases():
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    assert compare.delong_test(y, s, s)["p_value"] == 1.0
    with pytest.raises(MedrecError, match="at least 2 positive"):
        compare.delong_test(np.array([0, 0, 1]), s[:3], s[:3])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("cmp")
    strong = oof_table("binary", ("nodule",), n_patients=60, seed=1, signal=0.6)
    weak = strong.copy()
    rng = np.random.default_rng(2)
    weak["score"] = rng.random(len(weak))  # same cases and labels, useless scores
    a = write_run(base / "a", strong, "binary", ("nodule",), name="strong")
    b = write_run(base / "b", weak, "binary", ("nodule",), name="weak")
    fewer = write_run(base / "c", strong.iloc[3:], "binary", ("nodule",), name="fewer")
    return a, b, fewer, strong


def test_compare_runs_finds_a_real_difference(runs):
    a, b, _, table = runs
    result = compare.compare_runs(a, b)
    auroc = result["metrics"]["auroc"]
    assert auroc["a"] == pytest.approx(roc_auc_score(table["label"], table["score"]), abs=1e-6)
    assert auroc["diff"] == pytest.approx(auroc["a"] - auroc["b"], abs=1e-6)
    assert 0 < auroc["ci_low"] < auroc["diff"] < auroc["ci_high"]
    assert auroc["p_value"] < 0.01
    delong = result["delong"][0]
    assert delong["diff"] == pytest.approx(auroc["diff"], abs=1e-6)
    assert delong["p_value"] < 0.01
    assert result["unit"] == "patient" and result["n_units"] == 60
    same = compare.compare_runs(a, a)
    assert all(m["diff"] == 0 and m["ci_low"] == m["ci_high"] == 0 for m in same["metrics"].values()
               if m["diff"] is not None)


def test_compare_refuses_different_case_sets(runs, tmp_path):
    a, _, fewer, table = runs
    with pytest.raises(MedrecError, match=r"different cases: 3 \(image, slice, repeat\) row\(s\) only in A, 0 only in B"):
        compare.compare_runs(a, fewer)
    other_repeat = table.assign(repeat=1)  # the same images, but another CV repeat
    b = write_run(tmp_path / "repeat1", other_repeat, "binary", ("nodule",))
    with pytest.raises(MedrecError, match="different cases"):
        compare.compare_runs(a, b)


def test_compare_refuses_different_labels(runs, tmp_path):
    a, _, _, table = runs
    flipped = table.copy()
    flipped.loc[0, "label"] = 1 - flipped.loc[0, "label"]
    other = write_run(tmp_path / "flipped", flipped, "binary", ("nodule",))
    with pytest.raises(MedrecError, match="different labels"):
        compare.compare_runs(a, other)


def test_cli_compare_writes_json_and_refuses_with_exit_code(runs, tmp_path, capsys):
    a, b, fewer, _ = runs
    out = tmp_path / "cmp.json"
    assert main(["--compare", str(a), str(b), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "DeLong" in printed and "| auroc |" in printed
    saved = json.loads(out.read_text())
    assert saved["schema_version"] == "medrec-compare/1" and "auroc" in saved["metrics"]
    assert main(["--compare", str(a), str(fewer)]) == 2  # MedrecError: exit 2 (medrec.exitcodes)
    assert "different cases" in capsys.readouterr().err


def test_runs_of_volume_slices_pair_on_path_slice_and_repeat(tmp_path):
    # data.slice: all: a volume's slices share one path; they are different images (issue 15 item 7).
    a = oof_table("binary", ("bleed",), n_patients=30, images=4, folds=3, seed=1)
    a["slice"] = a.index % 4
    a["path"] = [f"/data/{p}.nii.gz" for p in a["patient_id"]]
    b = a.copy()
    rng = np.random.default_rng(0)
    b["score"] = np.clip(a["score"] + rng.normal(0, 0.2, len(a)), 0, 1)
    b = b.sample(frac=1.0, random_state=0)  # another row order: pairing must go by (path, slice, repeat)
    run_a = write_run(tmp_path / "a", a, "binary", ("bleed",), name="a")
    run_b = write_run(tmp_path / "b", b, "binary", ("bleed",), name="b")
    result = compare.compare_runs(run_a, run_b)
    assert result["n_images"] == 120 and result["n_units"] == 30
    auc_b = roc_auc_score(b["label"], b["score"])
    assert result["metrics"]["auroc"]["b"] == pytest.approx(auc_b, abs=1e-6)
    assert result["metrics"]["auroc"]["diff"] == pytest.approx(roc_auc_score(a["label"], a["score"]) - auc_b, abs=1e-6)
    delong = result["delong"][0]
    truth = _brute_force_delong(a["label"].to_numpy(), a["score"].to_numpy(),
                                b.set_index(["path", "slice"]).loc[list(zip(a["path"], a["slice"])), "score"].to_numpy())
    assert delong["p_value"] == pytest.approx(truth[2], abs=1e-6)


def test_markdown_summary_keeps_run_names_and_labels_as_text(tmp_path):
    names = ("[x](http://evil)", "<img src=x onerror=alert(1)>")
    a = oof_table("multilabel", names, n_patients=30, seed=1)
    b = a.copy()
    for n in names:
        b[f"score_{n}"] = np.clip(b[f"score_{n}"] + 0.1, 0, 1)
    run_a = write_run(tmp_path / "a", a, "multilabel", names, name="**A** <b>bold</b>")
    run_b = write_run(tmp_path / "b", b, "multilabel", names, name="B")
    md = compare.to_markdown(compare.compare_runs(run_a, run_b))
    assert "<img" not in md and "<b>" not in md and "](http" not in md and "**A**" not in md
    assert "&lt;img src\\=x onerror\\=alert\\(1\\)&gt;" in md or "&lt;img src=x onerror=alert(1)&gt;" in md
