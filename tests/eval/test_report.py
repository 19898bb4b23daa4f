"""build_report and the CLI on synthetic run folders written the way medrec.finetune writes them."""

import base64
import json
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from medrec.errors import ImageError
from medrec.eval.metrics import choose_threshold
from medrec.eval.report import build_report
from medrec.report import main

from . import RUN_INFO, oof_table, write_run

NAME = "demo <script>alert(1)</script>"
REPO = Path(__file__).resolve().parents[2]


def _fake_images_module(calls: list):
    """Stands in for medrec.io.images: every other read fails, as a corrupt file would."""

    def read_image(path, *, frame=None, window=None, slice_index=None, **_options):  # color=..., future options
        calls.append((path, window))
        if len(calls) % 2 == 0:
            raise ImageError(f"{path}: cannot decode")
        return np.linspace(0, 1, 64 * 48, dtype=np.float32).reshape(64, 48), {}

    return types.SimpleNamespace(read_image=read_image)


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory):
    table = oof_table("binary", ("effusion",), n_patients=45, folds=3, seed=0)
    run = write_run(tmp_path_factory.mktemp("bin") / "run", table, "binary", ("effusion",), name=NAME,
                    eval_cfg={"temperature_scaling": True})
    calls: list = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "medrec.io.images", _fake_images_module(calls))
        doc = build_report(run)
    return run, table, doc, calls


def _crossfit(table: pd.DataFrame, rule: str = "youden") -> np.ndarray:
    fold, y, s = table["fold"].to_numpy(), table["label"].to_numpy(), table["score"].to_numpy()
    per_fold = {k: choose_threshold(y[fold != k], s[fold != k], rule) for k in np.unique(fold)}
    return np.array([per_fold[k] for k in fold])


def test_html_is_one_file_with_embedded_plots_and_the_header(binary_run):
    run, _, _, _ = binary_run
    html = (run / "report.html").read_text()
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)
    assert len(images) >= 4  # roc, pr, reliability, confusion (+ thumbnails)
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    assert "<link" not in html and "<script" not in html and "http" not in html  # nothing fetched
    for field in (RUN_INFO["weights_sha256"], RUN_INFO["data_fingerprint"]["manifest_sha256"],
                  RUN_INFO["git_commit"], "torch: 2.14.1", "fold_seeds", "cpu_count", "imagenet", "1h 02m 03s"):
        assert field in html, field
    assert "bootstrap over patients" in html
    assert "modality cxr · window auto · middle slice · 224 px" in html  # how images were preprocessed
    for name in ("roc", "pr", "reliability", "confusion"):
        assert (run / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    md = (run / "report.md").read_text()
    assert "plots/roc.png" in md and RUN_INFO["git_commit"] in md


def test_html_escapes_strings(binary_run):
    run, _, _, _ = binary_run
    html = (run / "report.html").read_text()
    assert "<script>alert(1)" not in html
    assert "demo &lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_metrics_json_has_cis_bootstrap_settings_and_matches_sklearn(binary_run):
    run, table, doc, _ = binary_run
    saved = json.loads((run / "metrics.json").read_text())
    assert saved == doc
    assert saved["bootstrap"]["n_resamples"] == 200 and saved["bootstrap"]["seed"] == 3
    assert saved["bootstrap"]["unit"] == "patient" and saved["bootstrap"]["n_units"] == 45
    y, s = table["label"], table["score"]
    auroc = saved["metrics"]["auroc"]
    assert auroc["value"] == pytest.approx(skm.roc_auc_score(y, s), abs=1e-6)
    assert auroc["ci_low"] < auroc["value"] < auroc["ci_high"] and auroc["n_valid"] == 200
    pred = s >= _crossfit(table)
    assert saved["metrics"]["accuracy"]["value"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-6)
    assert saved["metrics"]["sensitivity"]["value"] == pytest.approx(skm.recall_score(y, pred), abs=1e-6)
    assert saved["operating_point"]["selection"] == "cross-fitted"
    assert saved["operating_point"]["threshold"] == pytest.approx(choose_threshold(y, s, "youden"), abs=1e-6)
    assert [f["fold"] for f in saved["per_fold"]] == [0, 1, 2]
    (tn, fp), (fn, tp) = saved["confusion_matrix"]["effusion"]
    assert [tn, fp, fn, tp] == skm.confusion_matrix(y, pred).ravel().tolist()
    ts = saved["calibration"]["temperature_scaling"]
    assert set(ts["before"]["effusion"]) == {"ece", "brier"} and len(ts["per_fold"]) == 3


def test_worst_cases_are_the_highest_scoring_false_positives_with_thumbnail_fallback(binary_run):
    run, table, _, calls = binary_run
    html = (run / "report.html").read_text()
    assert calls and all(window == "auto" for _, window in calls)
    assert 'alt="thumbnail"' in html and "thumbnail unavailable" in html
    fp = table[(table["label"] == 0) & (table["score"] >= _crossfit(table))]
    expected = fp.sort_values("score", ascending=False)["image_id"].iloc[0]
    section = html.split("Worst false positives")[1]
    first = re.search(r'<div class="case">.*?<div>([^<]+)</div>', section).group(1)
    assert first == expected


def test_metrics_json_is_byte_identical_for_identical_runs(binary_run, tmp_path):
    run, table, _, _ = binary_run
    again = write_run(tmp_path / "again", table, "binary", ("effusion",), name=NAME,
                      eval_cfg={"temperature_scaling": True},
                      info={"created": "2027-05-05T00:00:00", "finished": "2027-05-05T00:09:00", "wall_time_s": 540.0,
                            "git_commit": "fedcba98" * 5, "hardware": {"device": "cuda:0", "gpu": "H200"}})
    build_report(again)
    texts = [(d / "metrics.json").read_text() for d in (run, again)]
    docs = [json.loads(t) for t in texts]
    assert texts[0] == json.dumps(docs[0], sort_keys=True, indent=2) + "\n"  # canonical form
    assert docs[0]["volatile"] != docs[1]["volatile"]
    assert docs[0]["volatile_fields"] == sorted(docs[0]["volatile"]) == [
        "built", "created", "finished", "git_commit", "hardware", "run_dir", "wall_time_s"]
    for d in docs:
        d.pop("volatile")
    assert json.dumps(docs[0], sort_keys=True, indent=2) == json.dumps(docs[1], sort_keys=True, indent=2)
    assert "wall_time_s" in (run / "report.html").read_text()


def test_fixed_validation_set_without_patient_ids_is_labelled(tmp_path):
    table = oof_table("binary", ("effusion",), n_patients=80, images=1, folds=1, seed=4)
    table["patient_id"] = table["image_id"]  # how sources without patient ids (MedMNIST) fill it
    run = write_run(tmp_path / "fixed", table, "binary", ("effusion",), eval_cfg={"worst_cases": 0})
    doc = build_report(run)
    assert doc["bootstrap"]["unit"] == "image" and doc["data"]["image_level_folds"] is True
    assert doc["operating_point"]["selection"] == "same data (optimistic)"
    assert doc["metrics"]["accuracy"]["note"] == "threshold chosen on this data (optimistic)"
    assert "note" not in doc["metrics"]["auroc"]
    y, s = table["label"], table["score"]
    assert doc["operating_point"]["threshold"] == pytest.approx(choose_threshold(y, s, "youden"), abs=1e-6)
    html = (run / "report.html").read_text()
    assert "threshold chosen on this data (optimistic)" in html
    assert "no patient ids" in html and "Image-level folds" in html


@pytest.mark.parametrize("task,names", [("multiclass", ("normal", "benign", "malignant")),
                                        ("multilabel", ("atelectasis", "edema", "mass"))])
def test_multiclass_and_multilabel_reports_match_sklearn(tmp_path, task, names):
    table = oof_table(task, names, n_patients=40, folds=3, repeats=1, seed=2)
    doc = build_report(write_run(tmp_path / task, table, task, names, eval_cfg={"worst_cases": 2}))
    scores = table[[f"score_{n}" for n in names]].to_numpy()
    labels = table[[f"label_{n}" for n in names]].to_numpy()
    if task == "multiclass":
        expected = skm.roc_auc_score(labels.argmax(axis=1), scores, multi_class="ovr")
    else:
        expected = np.mean([skm.roc_auc_score(labels[m, j], scores[m, j])
                            for j in range(len(names)) for m in [~np.isnan(labels[:, j])]])
    assert doc["metrics"]["auroc_macro"]["value"] == pytest.approx(expected, abs=1e-6)
    assert set(doc["per_label"]) == set(names)
    assert doc["metrics"]["auroc_macro"]["ci_low"] <= doc["metrics"]["auroc_macro"]["value"]
    assert (tmp_path / task / "report.html").read_text().count("data:image/png;base64,") >= 4


def test_cli_builds_without_torch_and_reports_errors(tmp_path, capsys):
    table = oof_table("binary", ("effusion",), n_patients=30, folds=3, seed=5)
    run = write_run(tmp_path / "cli", table, "binary", ("effusion",), eval_cfg={"bootstrap": 50})
    code = ("import runpy, sys; sys.argv = ['medrec.report', sys.argv[1]]\n"
            "try:\n    runpy.run_module('medrec.report', run_name='__main__')\n"
            "except SystemExit as e:\n    assert e.code == 0, e.code\n"
            "assert 'torch' not in sys.modules, 'report imported torch'\n")
    proc = subprocess.run([sys.executable, "-c", code, str(run)], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "auroc" in proc.stdout and (run / "report.html").exists()
    assert main([str(tmp_path / "nowhere")]) == 2  # MedrecError: exit 2 (medrec.exitcodes)
    assert "missing oof_predictions.csv" in capsys.readouterr().err


# ---------------------------------------------------------------- CT / MRI volumes

def _write_ct_volume(path: Path, offset: int = 0) -> np.ndarray:
    """A NIfTI CT volume in HU, every voxel different; slice k spans 10k - 20 .. 10k + 111 (+ offset):
    some of each slice below, inside and above the brain window (40/80)."""
    import nibabel as nib

    i, j, k = np.meshgrid(np.arange(32), np.arange(24), np.arange(5), indexing="ij")
    hu = (10 * k + 4 * i + j - 20 + offset).astype(np.int16)
    nib.save(nib.Nifti1Image(hu, np.eye(4)), path)
    return hu


def _png_pixels(b64: str) -> np.ndarray:
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def _brain(hu_slice: np.ndarray) -> np.ndarray:
    """The independent truth: the slice as read_nifti returns it (transposed) through the brain window."""
    from medrec.io.dicom import apply_window

    return (apply_window(hu_slice.T.astype(float), 40, 80) * 255).round().astype(np.uint8)


def _ct_cfg(**data):
    from medrec.config import DataConfig

    return DataConfig(modality="ct", channels=("brain", "bone"), **data)


def test_ct_thumbnail_is_the_right_slice_through_the_first_window(tmp_path):
    from medrec.eval.report import thumbnail

    hu = _write_ct_volume(tmp_path / "head.nii.gz")
    cfg = _ct_cfg(slice="all")
    got = {k: _png_pixels(thumbnail(str(tmp_path / "head.nii.gz"), f"s{k}", data_cfg=cfg, slice_index=k))
           for k in (1, 3)}
    for k, pixels in got.items():
        np.testing.assert_array_equal(pixels, _brain(hu[:, :, k]))
        s = hu[:, :, k].T.astype(float)
        assert not np.array_equal(pixels, ((s - s.min()) / (s.max() - s.min()) * 255).round())  # not min-max
    assert not np.array_equal(got[1], got[3])
    # A fixed data.slice is the default; without a config, the old display (percentile window).
    fixed = _png_pixels(thumbnail(str(tmp_path / "head.nii.gz"), "x", data_cfg=_ct_cfg(slice=4)))
    np.testing.assert_array_equal(fixed, _brain(hu[:, :, 4]))
    plain = _png_pixels(thumbnail(str(tmp_path / "head.nii.gz"), "x", slice_index=3))
    assert plain.shape == got[3].shape and not np.array_equal(plain, got[3])


def test_thumbnail_falls_back_when_the_preprocessing_cannot_read_the_file(tmp_path):
    from PIL import Image

    from medrec.eval.report import thumbnail

    Image.fromarray(np.arange(48 * 64, dtype=np.uint32).reshape(48, 64).astype(np.uint8)).save(tmp_path / "a.png")
    # data.modality ct refuses a PNG (no HU): the thumbnail still comes, read with window auto.
    assert _png_pixels(thumbnail(str(tmp_path / "a.png"), "a", data_cfg=_ct_cfg())).shape == (48, 64)
    assert thumbnail(str(tmp_path / "missing.nii.gz"), "m", data_cfg=_ct_cfg()) is None


def test_ct_report_shows_slices_of_one_volume_and_its_preprocessing(tmp_path):
    from medrec.config import ExperimentConfig, save_config

    table = oof_table("binary", ("bleed",), n_patients=20, images=5, folds=2, seed=1)
    data = tmp_path / "data"
    data.mkdir()
    table["slice"] = table.index % 5  # each patient's five images are the five slices of one volume
    table["path"] = [str(data / f"{p}.nii.gz") for p in table["patient_id"]]
    table["image_id"] = [f"{p}-s{k}" for p, k in zip(table["patient_id"], table["slice"])]
    negative = table.loc[table["label"] == 0, "patient_id"].iloc[0]
    mine = table["patient_id"] == negative
    table.loc[mine, "score"] = 0.999 - 0.001 * table.loc[mine, "slice"]
    volumes = {p: _write_ct_volume(Path(p), offset=7 * i) for i, p in enumerate(table["path"].unique())}
    run = write_run(tmp_path / "run", table, "binary", ("bleed",), eval_cfg={"bootstrap": 20, "worst_cases": 3})
    cfg = ExperimentConfig.model_validate({
        "name": "demo-run", "data": {"task": "binary", "label_columns": ["bleed"], "modality": "ct",
                                     "channels": ["brain", "bone"], "slice": "all", "root": str(data)},
        "eval": {"bootstrap": 20, "bootstrap_seed": 3, "worst_cases": 3}})
    save_config(cfg, run / "config.yaml")
    doc = build_report(run)
    html = (run / "report.html").read_text()
    assert "modality ct · CT windows (C/W): brain (40/80), bone (400/1800) · all slices · 224 px" in html
    # The unit of the metrics is stated, with slices and volumes counted apart (issue 15 item 7).
    assert doc["data"]["unit"] == "slice" and doc["data"]["n_images"] == 100 and doc["data"]["n_volumes"] == 20
    assert "<td>Slices / volumes / patients / rows</td><td>100 / 20 / 20 / 100</td>" in html
    assert ("Unit of the metrics: the slice (100 slices of 20 volumes). Folds and CIs are patient-grouped: all "
            "slices of a volume and all volumes of a patient sit in one fold and are resampled together "
            "(20 patients).") in html
    cards = re.findall(r'<div class="case"><img alt="thumbnail" src="data:image/png;base64,([^"]+)"><div>([^<]+)</div>',
                       html)
    assert len(cards) >= 4 and "thumbnail unavailable" not in html
    # The worst false positives are three slices of one volume: one path, three cases.
    assert [i for _, i in cards[:3]] == [f"{negative}-s{k}" for k in range(3)]
    by_id = table.set_index("image_id")
    for b64, image_id in cards:
        path, k = by_id.loc[image_id, "path"], int(by_id.loc[image_id, "slice"])
        np.testing.assert_array_equal(_png_pixels(b64), _brain(volumes[path][:, :, k]))


@pytest.mark.parametrize("data,text", [
    ({"modality": "mri", "intensity": "percentile", "slice": 7}, "modality mri · intensity percentile · slice 7"),
    ({"window": [40, 400], "frame": 2}, "modality cxr · window C/W 40/400 · middle slice · frame 2"),
    ({"modality": "ct", "channels": ["subdural", [50, 350]]},
     "modality ct · CT windows (C/W): subdural (80/200), window 2 (50/350) · middle slice"),
])
def test_preprocessing_line_names_modality_windows_intensity_and_slice(data, text):
    from medrec.config import DataConfig
    from medrec.eval.report import preprocessing_text

    assert preprocessing_text(DataConfig(**data)) == f"{text} · 224 px"


def test_header_states_image_flow_and_model_selection_from_run_json(tmp_path):
    from medrec.data.reading import ReadCounts, ReadInfo

    counts = ReadCounts()
    for _ in range(5):
        counts.add(ReadInfo())
    counts.add(ReadInfo("rgb_near_grey"))
    counts.add(error="x.png: colour image refused")
    counts.add(error="y.dcm: cannot decode")
    selection = {"rule": "best auroc", "monitored_on": "inner", "inner_fraction": 0.15,
                 "note": "epoch chosen on an inner patient-grouped split of each training fold",
                 "epochs": [{"fold": 0, "repeat": 0, "epoch": 3, "epochs_trained": 9},
                            {"fold": 1, "repeat": 0, "epoch": 5}]}
    table = oof_table("binary", ("effusion",), n_patients=20, seed=3)
    run = write_run(tmp_path / "run", table, "binary", ("effusion",), eval_cfg={"bootstrap": 10, "worst_cases": 0},
                    info={"images": counts.to_dict(), "model_selection": selection})
    build_report(run)
    html = (run / "report.html").read_text()
    assert f"<td>Image flow</td><td>{counts.summary()}</td>" in html
    assert "8 images listed, 6 read" in counts.summary()  # the line the io helper's ReadCounts writes
    assert ("<td>Model selection</td><td>epoch chosen on an inner patient-grouped split of each training fold "
            "(epochs chosen, counted from 1: 4 of 9, 6)</td>") in html  # run.json's indices are 0-based


def test_thumbnails_are_read_only_inside_the_runs_data_folder(tmp_path):
    from PIL import Image

    data, elsewhere = tmp_path / "data", tmp_path / "private"
    data.mkdir()
    elsewhere.mkdir()
    table = oof_table("binary", ("effusion",), n_patients=12, images=1, folds=2, seed=0)
    negatives = table.index[table["label"] == 0][:2]
    table.loc[negatives, "score"] = [0.99, 0.98]  # the two worst false positives
    pixels = np.arange(32 * 32, dtype=np.uint8).reshape(32, 32)
    Image.fromarray(pixels).save(data / "inside.png")
    Image.fromarray(pixels).save(elsewhere / "secret.png")
    # a crafted predictions file: one path inside the data folder, one outside, one escaping it with ..
    table.loc[negatives, "path"] = [str(data / "inside.png"), str(elsewhere / "secret.png")]
    run = write_run(tmp_path / "run", table, "binary", ("effusion",), eval_cfg={"bootstrap": 10, "worst_cases": 2},
                    data_cfg={"root": str(data)})
    build_report(run)
    html = (run / "report.html").read_text()
    cards = html.split("Worst false positives")[1].split("<h3>")[0]
    first, second = cards.split('<div class="case">')[1:3]
    assert "data:image/png;base64," in first and table.loc[negatives[0], "image_id"] in first
    assert "thumbnail unavailable" in second and table.loc[negatives[1], "image_id"] in second
    table.loc[negatives[1], "path"] = str(data / ".." / "private" / "secret.png")
    run2 = write_run(tmp_path / "run2", table, "binary", ("effusion",), eval_cfg={"bootstrap": 10, "worst_cases": 2},
                     data_cfg={"root": str(data)})
    build_report(run2)
    second = (run2 / "report.html").read_text().split("Worst false positives")[1].split('<div class="case">')[2]
    assert "thumbnail unavailable" in second
