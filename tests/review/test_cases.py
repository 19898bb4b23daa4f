"""medrec.review.cases: predictions -> cases, filters and sorting, safe paths, display images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image
from pydicom.pixels import apply_modality_lut

from medrec.errors import CheckpointError, DataError, ImageError
from medrec.review import cases as C
from medrec.review import display as D
from medrec.review import paths as P

from .conftest import IDENTIFIERS, THRESHOLD, build_run


def _oof(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "oof_predictions.csv")


def test_load_run_reads_threshold_roots_and_cases(run_dir: Path):
    run = C.load_run(run_dir)
    oof = _oof(run_dir)
    assert run.task == "binary"
    assert run.thresholds == {"label": THRESHOLD} and run.threshold_source == "run.json"
    assert run.data_root == (run_dir.parent / "data").resolve()
    assert run.allowed_roots == (run_dir.resolve(), run.data_root)
    assert run.cases["image_id"].tolist() == oof["image_id"].tolist()
    np.testing.assert_allclose(run.cases["score_label"], oof["score"])
    assert "patient_id" not in run.cases.columns  # pseudonymous, but the app has no use for it


def test_load_run_errors_name_the_fix(tmp_path: Path, run_dir: Path):
    with pytest.raises(CheckpointError, match="run.json not found"):
        C.load_run(tmp_path)
    with pytest.raises(DataError, match="not found"):
        C.load_run(run_dir, predictions=tmp_path / "nope.csv")


@pytest.mark.parametrize(
    ("kind", "truth"),
    [
        ("false_negatives", lambda d, t, b: (d.label == 1) & (d.score < t)),
        ("false_positives", lambda d, t, b: (d.label == 0) & (d.score >= t)),
        ("uncertain", lambda d, t, b: (d.score - t).abs() <= b),
        ("all", lambda d, t, b: d.score == d.score),
    ],
)
def test_filters_match_their_definition(run_dir: Path, kind, truth):
    run = C.load_run(run_dir)
    oof = _oof(run_dir)
    got = C.select(C.view(run, "label"), kind=kind, band=0.08)
    expected = oof.loc[truth(oof, THRESHOLD, 0.08), "image_id"].tolist()
    assert got["image_id"].tolist() == expected
    assert len(expected) > 0


def test_fold_and_unreviewed_filters(run_dir: Path):
    run = C.load_run(run_dir)
    oof = _oof(run_dir)
    cases = C.view(run, "label")
    got = C.select(cases, folds=[1])
    assert got["image_id"].tolist() == oof.loc[oof.fold == 1, "image_id"].tolist()
    got = C.select(cases, kind="unreviewed", reviewed={"img0", "img3"})
    assert got["image_id"].tolist() == [i for i in oof.image_id if i not in ("img0", "img3")]
    with pytest.raises(DataError, match="valid: all, false_positives"):
        C.select(cases, kind="typo")


def test_sorting_by_score_and_uncertainty(run_dir: Path):
    run = C.load_run(run_dir)
    oof = _oof(run_dir)
    cases = C.view(run, "label")
    assert (
        C.select(cases, sort="score_desc")["image_id"].tolist()
        == oof.sort_values("score", ascending=False).image_id.tolist()
    )
    assert C.select(cases, sort="score_asc")["image_id"].tolist() == oof.sort_values("score").image_id.tolist()
    margin = (oof.score - THRESHOLD).abs()
    assert (
        C.select(cases, sort="uncertain")["image_id"].tolist()
        == oof.image_id[np.argsort(margin.to_numpy(), kind="stable")].tolist()
    )


def test_multilabel_filters_use_each_labels_own_threshold(multilabel_run: Path):
    run = C.load_run(multilabel_run)
    oof = _oof(multilabel_run)
    assert run.targets == ("effusion", "nodule")
    assert run.target_key("nodule") == "nodule"
    for label, thr in (("effusion", THRESHOLD), ("nodule", 0.6)):
        got = C.select(C.view(run, label), kind="false_negatives")["image_id"].tolist()
        expected = oof.loc[(oof[f"label_{label}"] == 1) & (oof[f"score_{label}"] < thr), "image_id"].tolist()
        assert got == expected
    assert C.select(C.view(run, "nodule"), kind="false_negatives")["image_id"].tolist() != []


def test_repeats_are_averaged_with_their_spread(tmp_path: Path):
    run_dir = build_run(tmp_path, repeats=2)
    oof = _oof(run_dir)
    run = C.load_run(run_dir)
    by_image = oof.groupby("image_id", sort=False)["score"]
    assert len(run.cases) == oof.image_id.nunique()
    np.testing.assert_allclose(run.cases["score_label"], by_image.mean().loc[run.cases.image_id])
    np.testing.assert_allclose(
        run.cases["spread_label"], by_image.apply(lambda s: np.std(s.to_numpy())).loc[run.cases.image_id]
    )


def test_spread_column_from_predictions_file(run_dir: Path, tmp_path: Path):
    oof = _oof(run_dir).drop(columns=["fold", "repeat"])
    oof["spread"] = np.linspace(0.01, 0.07, len(oof))
    pred = tmp_path / "predictions.csv"
    oof.to_csv(pred, index=False)
    run = C.load_run(run_dir, predictions=pred)
    np.testing.assert_allclose(run.cases["spread_label"], oof["spread"])
    assert run.cases["fold"].isna().all()
    assert C.select(C.view(run, "label"), sort="spread_desc")["image_id"].iloc[0] == oof.image_id.iloc[-1]


# ---------------------------------------------------------------- safe paths


def test_path_resolution_refuses_escapes(evil_run: Path, tmp_path: Path):
    run = C.load_run(evil_run)
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"secret")
    (tmp_path / "data" / "escape").symlink_to(tmp_path)  # a folder symlink leading out of data/
    for raw in (
        "../../etc/passwd",
        "../" * 12 + "etc/passwd",
        "/etc/passwd",
        str(tmp_path / "data" / "link.png"),  # symlink to /etc/passwd
        str(tmp_path / "data" / "escape" / "outside.png"),
        str(tmp_path / "data" / ".." / "outside.png"),
        str(tmp_path / "nope" / "missing.png"),  # outside and missing: refused, not "not found"
        "",
        float("nan"),
    ):
        with pytest.raises(P.PathRefused):
            P.case_path(run, raw)


def test_path_resolution_accepts_files_in_the_roots(evil_run: Path, tmp_path: Path):
    run = C.load_run(evil_run)
    png = tmp_path / "data" / "img0.png"
    assert P.case_path(run, str(png)) == Path(os.path.realpath(png))
    assert P.case_path(run, "img0.png") == Path(os.path.realpath(png))  # relative: under data_root
    assert P.case_path(run, str(evil_run / "run.json")) == (evil_run / "run.json").resolve()
    with pytest.raises(ImageError, match="not found"):
        P.case_path(run, str(tmp_path / "data" / "missing.png"))


def _set_data_root(run_dir: Path, value: str) -> None:
    import json

    info = json.loads((run_dir / "run.json").read_text())
    info["data_root"] = value
    (run_dir / "run.json").write_text(json.dumps(info))


@pytest.mark.parametrize("where", ["/", "home", "cwd_parent"])
def test_too_wide_data_root_is_refused_with_a_message(run_dir: Path, where: str):
    value = {"/": "/", "home": str(Path.home()), "cwd_parent": str(Path.cwd().parent)}[where]
    _set_data_root(run_dir, value)
    run = C.load_run(run_dir)
    assert run.data_root is None and run.allowed_roots == (run_dir.resolve(),)
    assert len(run.notes) == 1 and "refused" in run.notes[0] and value in run.notes[0]
    with pytest.raises(P.PathRefused):
        P.case_path(run, "/etc/passwd")
    with pytest.raises(P.PathRefused):  # the images it would have opened are refused too
        P.case_path(run, run.cases["path"].iloc[0])


def test_data_root_outside_the_trained_paths_is_refused(run_dir: Path, tmp_path: Path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "secret.png").write_bytes(b"x")
    _set_data_root(run_dir, str(elsewhere))
    run = C.load_run(run_dir)
    assert run.data_root is None and "not among the paths the run was trained on" in run.notes[0]
    with pytest.raises(P.PathRefused):
        P.case_path(run, str(elsewhere / "secret.png"))
    _set_data_root(run_dir, str(run_dir.parent / "data"))  # config.yaml's data.root: accepted
    run = C.load_run(run_dir)
    assert run.data_root == (run_dir.parent / "data").resolve() and run.notes == ()


def test_cam_lookup_refuses_crafted_image_ids(run_dir: Path):
    run = C.load_run(run_dir)
    cam = D.load_cam(run, "img0")
    expected = np.load(run_dir / "predictions" / "cams" / "img0.npy").astype(np.float32)
    np.testing.assert_array_equal(cam, expected)
    assert D.load_cam(run, "img2") is None
    for bad in ("../run", "../../etc/passwd", "a/b", ".hidden"):
        with pytest.raises(P.PathRefused):
            D.load_cam(run, bad)


# ---------------------------------------------------------------- display images


def test_dicom_display_is_in_modality_units(run_dir: Path):
    run = C.load_run(run_dir)
    path = P.case_path(run, run.cases.set_index("image_id").loc["ct6", "path"])
    img = D.prepare_display(path)
    ds = pydicom.dcmread(path)
    np.testing.assert_allclose(img.pixels, apply_modality_lut(ds.pixel_array, ds).astype(np.float32))
    assert D.file_window(img.meta) == (40.0, 400.0) == D.auto_window(img.pixels, img.meta)
    shown = D.safe_meta(img.meta)
    assert shown["modality"] == "CT" and shown["body_part"] == "CHEST"
    text = repr(shown)
    for value in IDENTIFIERS.values():
        assert value not in text
    assert "uid" not in text.lower()


def test_windowing_follows_the_dicom_linear_formula():
    x = np.linspace(-1200, 1200, 97, dtype=np.float32)[None, :]
    center, width = -600.0, 1500.0
    # PS3.3 C.11.2.1.2.1, written out independently of medrec.io
    lo, hi = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
    expected = np.where(x <= lo, 0.0, np.where(x > hi, 1.0, ((x - (center - 0.5)) / (width - 1) + 0.5)))
    got = D.to_gray8(x, center, width)
    np.testing.assert_allclose(got, np.round(expected * 255), atol=1)
    assert D.window_presets()["lung"] == (-600.0, 1500.0)


def test_large_images_are_area_averaged(tmp_path: Path):
    rng = np.random.default_rng(0)
    big = rng.integers(0, 65535, (2048, 1536)).astype(np.uint16)
    path = tmp_path / "big.png"
    Image.fromarray(big).save(path)
    img = D.prepare_display(path, max_side=1024)
    assert img.native_shape == (2048, 1536) and img.pixels.shape == (1024, 768)
    blocks = big.astype(np.float64).reshape(1024, 2, 768, 2).mean(axis=(1, 3))  # exact 2x2 means
    np.testing.assert_allclose(img.pixels, blocks, rtol=1e-5)
    small = D.prepare_display(path, max_side=4096)
    np.testing.assert_array_equal(small.pixels, big.astype(np.float32))


def test_compose_cam_and_zoom():
    gray = np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))
    plain = D.compose(gray)
    assert plain.shape == (64, 64, 3) and (plain == gray[..., None]).all()
    cold = D.compose(gray, np.zeros((32, 32), np.float32), opacity=1.0)
    assert (cold == plain).all()  # a zero map tints nothing
    from matplotlib import colormaps

    top = np.round(255 * np.array(colormaps["inferno"](1.0)[:3]))  # the overlay predict --cam saves
    hot = D.compose(gray, np.ones((64, 64), np.float32), opacity=1.0)
    assert (hot == top.astype(np.uint8)).all()  # full map at full opacity: top colour
    half = D.compose(gray, np.ones((64, 64), np.float32), opacity=0.5)
    np.testing.assert_allclose(half[..., 0], np.round(0.5 * gray + 0.5 * top[0]), atol=1)
    zoomed = D.compose(gray, zoom=2.0, pan=(0.5, 0.5))
    assert zoomed.shape == (32, 32, 3) and (zoomed[..., 0] == gray[16:48, 16:48]).all()
    corner = D.compose(gray, zoom=4.0, pan=(0.0, 1.0))
    assert (corner[..., 0] == gray[:16, 48:]).all()


def test_multiclass_rows_with_bad_class_indices_are_listed(tmp_path: Path):
    import json

    run = build_run(tmp_path)
    table = pd.read_csv(run / "oof_predictions.csv").drop(columns=["score"])
    table["label"] = [0, 1, 2, 3, 1.5, 0, 2]  # 3 classes: 3 and 1.5 are not class indices
    table["score_a"], table["score_b"], table["score_c"] = 0.5, 0.3, 0.2
    table.to_csv(run / "oof_predictions.csv", index=False)
    info = json.loads((run / "run.json").read_text())
    info.update(task="multiclass", class_names=["a", "b", "c"], threshold=None)
    (run / "run.json").write_text(json.dumps(info))
    loaded = C.load_run(run)
    problems = dict(zip(loaded.cases["image_id"], loaded.cases["problem"]))
    assert problems["img3"] == "label '3.0' is not a class index (0 to 2) or empty"
    assert problems["img4"] == "label '1.5' is not a whole number"
    assert [k for k, p in problems.items() if p] == ["img3", "img4"] and len(loaded.bad_rows) == 2
    truth = C.view(loaded, "c").set_index("image_id")["truth"]
    assert truth["img2"] == 1.0 and truth["img0"] == 0.0 and np.isnan(truth["img3"])
