"""`python -m medrec.predict` on a real (tiny) run of data_samples: it reproduces the out-of-fold
scores, ensembles and mirrors as stated, survives bad files, pseudonymises DICOM patients, reads
npz inputs and scores labelled inputs with the run's operating point."""

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
import torch
from PIL import Image
from sklearn.metrics import accuracy_score, roc_auc_score

from medrec.predict import main as predict_main
from medrec.privacy import load_key

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data_samples" / "chest_xray"
KEY = "test-key-0123456789abcdef"
IDS = {"path": str, "image_id": str, "patient_id": str}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # The machine's cores are shared: one thread each is faster than oversubscribing them.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def pseudonym_key(monkeypatch):
    monkeypatch.setenv("MEDREC_PSEUDONYM_KEY", KEY)


@pytest.fixture(scope="module")
def run(samples_run) -> Path:
    """The suite's shared short run of data_samples (3 patient-grouped folds, 64 px)."""
    return samples_run[0]


def oof(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / "oof_predictions.csv", dtype=IDS)


def predict(run: Path, input_path, out: Path, *args) -> int:
    return predict_main(["--run", str(run), "--input", str(input_path), "--out", str(out), "--quiet", *args])


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=IDS)


def test_each_fold_reproduces_its_out_of_fold_scores(run, tmp_path):
    """Fold k's model on fold k's own validation images (manifest CSV, no TTA) gives the scores
    training wrote for them; the metrics file agrees with scikit-learn at the run's threshold."""
    table = oof(run)
    threshold = json.loads((run / "run.json").read_text())["threshold"]
    for k in sorted(table["fold"].unique()):
        held = table[table["fold"] == k]
        manifest = tmp_path / f"fold{k}.csv"
        held[["path", "patient_id", "label"]].to_csv(manifest, index=False)
        out = tmp_path / f"fold{k}" / "preds.csv"
        assert predict(run, manifest, out, "--folds", str(k)) == 0
        preds = read(out)
        assert len(preds) == len(held)
        both = preds.merge(held, on="path", suffixes=("", "_oof"))
        assert len(both) == len(held)
        assert np.abs(both["score"] - both["score_oof"]).max() < 1e-5
        assert (both["image_id"] == both["image_id_oof"]).all()
        assert (both["patient_id"] == both["patient_id_oof"]).all()
        assert (both["score_std"] == 0).all()  # one model
        assert (preds["pred"] == (preds["score"] >= threshold).astype(int)).all()
        metrics = json.loads((out.parent / "preds.metrics.json").read_text())
        assert metrics["operating_point"]["threshold"] == pytest.approx(threshold, abs=1e-6)  # stored rounded to 6 decimals
        assert metrics["metrics"]["auroc"]["value"] == pytest.approx(roc_auc_score(preds["label"], preds["score"]),
                                                                      abs=1e-6)
        assert metrics["metrics"]["accuracy"]["value"] == pytest.approx(accuracy_score(preds["label"], preds["pred"]),
                                                                         abs=1e-6)
        assert metrics["bootstrap"]["unit"] == "patient"


def test_ensemble_is_the_mean_of_the_fold_models_and_spread_their_std(run, tmp_path):
    table = oof(run)
    manifest = tmp_path / "manifest.csv"
    table[["path", "patient_id", "label"]].to_csv(manifest, index=False)
    out = tmp_path / "all" / "preds.csv"
    assert predict(run, manifest, out, "--fold-scores") == 0
    preds = read(out).merge(table, on="path", suffixes=("", "_oof"))
    folds = sorted(table["fold"].unique())
    per_fold = preds[[f"fold_{k}_score" for k in folds]].to_numpy()
    for k in folds:  # each fold column is that model, checked against training's own scores
        held = preds["fold"] == k
        assert np.abs(preds.loc[held, f"fold_{k}_score"] - preds.loc[held, "score_oof"]).max() < 1e-5
    assert np.allclose(preds["score"], per_fold.mean(axis=1), atol=1e-7)
    assert np.allclose(preds["score_std"], per_fold.std(axis=1), atol=1e-7)
    assert (preds["score_std"] > 0).all()
    meta = json.loads((out.parent / "preds.meta.json").read_text())
    assert meta["models"] == [f"fold_{k}" for k in folds] and meta["n_predicted"] == len(table)


def test_flip_tta_averages_the_image_and_its_mirror(run, tmp_path):
    """Two PNGs, one the left-right mirror of the other: without TTA each gets its own score,
    with TTA both get the mean of the two (128 -> 64 px halves exactly, so mirroring commutes
    with the preprocessing)."""
    gray, _ = _dicom_gray(SAMPLES / "images" / "P001_1.dcm")
    assert gray.shape == (128, 128)  # square: no padding, which could break the symmetry by a pixel
    folder = tmp_path / "pngs"
    folder.mkdir()
    Image.fromarray(gray).save(folder / "a.png")
    Image.fromarray(np.ascontiguousarray(gray[:, ::-1])).save(folder / "b_mirrored.png")
    plain, tta = tmp_path / "plain" / "p.csv", tmp_path / "tta" / "p.csv"
    assert predict(run, folder, plain) == 0 and predict(run, folder, tta, "--tta", "flip") == 0
    s = read(plain).set_index(read(plain)["path"].map(lambda p: Path(p).name))["score"]
    t = read(tta).set_index(read(tta)["path"].map(lambda p: Path(p).name))["score"]
    assert abs(s["a.png"] - s["b_mirrored.png"]) > 1e-6  # the networks are not mirror-symmetric
    expected = (s["a.png"] + s["b_mirrored.png"]) / 2
    assert t["a.png"] == pytest.approx(expected, abs=1e-6) and t["b_mirrored.png"] == pytest.approx(expected, abs=1e-6)


def _dicom_gray(path: Path) -> tuple[np.ndarray, str]:
    ds = pydicom.dcmread(path)
    px = ds.pixel_array.astype(np.float64)
    gray = np.round(255 * (px - px.min()) / (px.max() - px.min())).astype(np.uint8)
    return gray, str(ds.PatientID)


def test_bad_files_are_listed_and_the_rest_predicted(run, tmp_path):
    """A folder tree with DICOM (one without suffix, in a subfolder), PNG, NIfTI, a corrupt DICOM,
    a colour PNG and a README: the two bad files go to the errors file with their reasons, the
    README is skipped, everything else is predicted; exit 0, or 3 with --strict."""
    folder = tmp_path / "scans"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(SAMPLES / "images" / "P001_1.dcm", folder / "P001_1.dcm")
    shutil.copy(SAMPLES / "images" / "P002_1.dcm", folder / "sub" / "IM0001")
    gray, _ = _dicom_gray(SAMPLES / "images" / "P003_1.dcm")
    Image.fromarray(gray).save(folder / "gray.png")
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((40, 30, 3)).astype(np.float32), np.eye(4)),
             str(folder / "volume.nii.gz"))
    (folder / "broken.dcm").write_bytes(b"\x00" * 200 + b"not a dicom file")
    Image.fromarray(np.stack([gray, np.roll(gray, 5, axis=1), 255 - gray], axis=-1)).save(folder / "colour.png")
    (folder / "README.txt").write_text("scans from the ward\n")
    out = tmp_path / "out" / "preds.csv"
    assert predict(run, folder, out) == 0
    preds, errors = read(out), pd.read_csv(out.parent / "preds.errors.csv")
    names = {Path(p).name for p in preds["path"]}
    assert names == {"P001_1.dcm", "IM0001", "gray.png", "volume.nii.gz"}
    reasons = dict(zip(errors["path"].map(lambda p: Path(p).name), errors["reason"]))
    assert set(reasons) == {"broken.dcm", "colour.png"}
    assert "DICOM" in reasons["broken.dcm"] and "colour" in reasons["colour.png"]
    assert preds["score"].between(0, 1).all() and preds["score"].notna().all()
    assert json.loads((out.parent / "preds.meta.json").read_text())["input"]["n_skipped_not_images"] == 1
    strict = tmp_path / "strict" / "preds.csv"
    assert predict(run, folder, strict, "--strict") == 3
    assert len(read(strict)) == 4  # still written


def test_how_each_input_was_read_is_counted_listed_and_printed(run, tmp_path, capsys):
    """Grey saved every which way: the same pixels as grey PNG, RGB PNG and palette PNG score the same and
    are listed with their conversion; a near-grey RGB JPEG is read, a colour PNG and a broken file refused;
    the counts in preds.meta.json and the printed line match those files."""
    gray, _ = _dicom_gray(SAMPLES / "images" / "P003_1.dcm")
    folder = tmp_path / "ward"
    folder.mkdir()
    Image.fromarray(gray).save(folder / "a_gray.png")
    Image.fromarray(gray).convert("RGB").save(folder / "b_rgb.png")  # three equal channels
    pal = Image.fromarray(gray).convert("P")
    np.testing.assert_array_equal(np.asarray(pal.convert("L")), gray)  # palette of greys holds every value
    pal.save(folder / "c_palette.png")
    noisy = np.clip(gray[..., None] + np.random.default_rng(1).normal(0, 1.0, (*gray.shape, 3)), 0, 255)
    Image.fromarray(noisy.round().astype(np.uint8)).save(folder / "d_rgb.jpg", quality=95)
    Image.fromarray(np.stack([gray, np.roll(gray, 5, axis=1), 255 - gray], axis=-1)).save(folder / "e_colour.png")
    (folder / "f_broken.dcm").write_bytes(b"\x00" * 200 + b"not a dicom file")
    out = tmp_path / "out" / "preds.csv"
    assert predict_main(["--run", str(run), "--input", str(folder), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    preds = read(out).assign(name=lambda t: t["path"].map(lambda p: Path(p).name)).set_index("name")
    assert set(preds.index) == {"a_gray.png", "b_rgb.png", "c_palette.png", "d_rgb.jpg"}
    score = preds["score"]
    assert score["b_rgb.png"] == pytest.approx(score["a_gray.png"], abs=1e-6)  # the same pixels, read as grey
    assert score["c_palette.png"] == pytest.approx(score["a_gray.png"], abs=1e-6)
    conv = pd.read_csv(out.parent / "preds.conversions.csv")
    kinds = dict(zip(conv["path"].map(lambda p: Path(p).name), conv["conversion"]))
    assert kinds["b_rgb.png"] == "rgb_identical" and kinds["c_palette.png"] == "palette"
    assert kinds["d_rgb.jpg"] in ("rgb_identical", "rgb_near_grey") and "a_gray.png" not in kinds
    images = json.loads((out.parent / "preds.meta.json").read_text())["images"]
    expect_conv = pd.Series(list(kinds.values())).value_counts().to_dict()
    assert images == {"listed": 6, "read": 4, "converted": expect_conv, "alpha_not_opaque": 0,
                      "refused": {"colour": 1, "unreadable": 1}}
    assert "images: 6 images listed, 4 read (" in printed and "2 refused (1 colour, 1 unreadable)" in printed
    assert str(out.parent / "preds.conversions.csv") in printed


def test_dicom_patients_get_keyed_pseudonyms_never_raw_ids(run, tmp_path):
    folder = tmp_path / "dicoms"
    folder.mkdir()
    raw = {}
    for name in ("P001_1.dcm", "P001_2.dcm", "P004_1.dcm"):
        shutil.copy(SAMPLES / "images" / name, folder / name)
        ds = pydicom.dcmread(folder / name, stop_before_pixels=True)
        raw[name] = (str(ds.PatientID), str(ds.PatientName), str(ds.PatientBirthDate))
    out = tmp_path / "out" / "preds.csv"
    assert predict(run, folder, out) == 0
    preds = read(out)
    key = load_key("MEDREC_PSEUDONYM_KEY")
    for path, patient in zip(preds["path"], preds["patient_id"]):
        assert patient == key.pseudonym(raw[Path(path).name][0], "patient")
    assert preds["patient_id"].nunique() == 2  # P001's two images share one pseudonym
    text = "".join(p.read_text() for p in out.parent.glob("preds.*"))
    for values in raw.values():
        for value in values:
            assert value not in text
    single = tmp_path / "one" / "preds.csv"  # one DICOM file as the input
    assert predict(run, folder / "P004_1.dcm", single) == 0
    assert read(single)["patient_id"].tolist() == [key.pseudonym(raw["P004_1.dcm"][0], "patient")]


def test_npz_split_is_predicted_with_its_labels(run, tmp_path, capsys):
    rng = np.random.default_rng(0)
    npz = tmp_path / "mnist_like.npz"
    labels = np.array([[0], [1], [0], [1], [1]])
    np.savez(npz, test_images=rng.integers(0, 256, (5, 28, 28), dtype=np.uint8), test_labels=labels,
             train_images=np.zeros((1, 28, 28), np.uint8), train_labels=np.zeros((1, 1)))
    out = tmp_path / "npz" / "preds.csv"
    assert predict(run, npz, out, "--split", "test") == 0
    preds = read(out)
    assert preds["path"].tolist() == [f"{npz}::test::{i}" for i in range(5)]
    assert preds["label"].tolist() == labels[:, 0].tolist()
    metrics = json.loads((out.parent / "preds.metrics.json").read_text())
    assert metrics["n_images"] == 5 and metrics["bootstrap"]["unit"] == "image"
    assert metrics["metrics"]["auroc"]["value"] == pytest.approx(roc_auc_score(preds["label"], preds["score"]), abs=1e-6)
    assert predict(run, npz, out, "--split", "val") == 2
    assert "valid: ['test', 'train']" in capsys.readouterr().err


def test_threshold_is_stated_as_single_model_and_can_be_tuned_on_a_separate_labelled_set(run, tmp_path):
    from sklearn.metrics import roc_curve

    table = oof(run)
    patients = sorted(table["patient_id"].unique())
    tune_rows = table[table["patient_id"].isin(patients[::2])]
    report_rows = table[~table["patient_id"].isin(patients[::2])]
    tune_csv, report_csv = tmp_path / "tune.csv", tmp_path / "report.csv"
    tune_rows[["path", "patient_id", "label"]].to_csv(tune_csv, index=False)
    report_rows[["path", "patient_id", "label"]].to_csv(report_csv, index=False)
    assert predict(run, report_csv, tmp_path / "plain" / "preds.csv") == 0
    plain = json.loads((tmp_path / "plain" / "preds.meta.json").read_text())
    assert plain["threshold_source"] == "run.json" and "single fold models" in plain["threshold_chosen_on"]
    # the ensemble's scores of the tuning set, and Youden's threshold on them computed independently
    assert predict(run, tune_csv, tmp_path / "t" / "preds.csv") == 0
    scored = read(tmp_path / "t" / "preds.csv")
    fpr, tpr, thr = roc_curve(scored["label"], scored["score"], drop_intermediate=False)
    j = tpr - fpr
    expected = thr[1:][np.isclose(j[1:], j[1:].max())].max()  # the highest threshold among ties (README rule)
    assert predict(run, report_csv, tmp_path / "tuned" / "preds.csv", "--tune-threshold", str(tune_csv)) == 0
    meta = json.loads((tmp_path / "tuned" / "preds.meta.json").read_text())
    assert meta["threshold"] == pytest.approx(expected, abs=1e-6)
    assert meta["threshold_tuning"]["n_images"] == len(tune_rows) and "tune.csv" in meta["threshold_source"]
    preds = read(tmp_path / "tuned" / "preds.csv")
    assert (preds["pred"] == (preds["score"] >= meta["threshold"]).astype(int)).all()
    metrics = json.loads((tmp_path / "tuned" / "preds.metrics.json").read_text())
    assert "tuning set" in metrics["operating_point"]["chosen_on"]
    # never on the data it then reports: overlapping patients are refused
    assert predict(run, report_csv, tmp_path / "bad" / "preds.csv", "--tune-threshold", str(report_csv)) == 2
