"""medrec.explain_run: each out-of-fold image's Grad-CAM comes from its own fold's model."""

from __future__ import annotations

import numpy as np
import pandas as pd

from medrec.explain_run import AUTO_MAX_IMAGES, cams_after_training, cams_wanted, main
from medrec.predict import main as predict_main

from .test_explain import cam_inputs, fake_run, one_thread, pd_read  # noqa: F401  (fixtures by name)


def _fold_maps(run, cam_inputs, tmp_path, k: int) -> dict[str, np.ndarray]:
    """Maps of every input from fold k's model alone, as `medrec.predict --cam --folds k` writes them."""
    out = tmp_path / f"fold{k}" / "preds.csv"
    assert predict_main(["--run", str(run), "--input", str(cam_inputs), "--out", str(out), "--cam",
                         "--folds", str(k), "--quiet"]) == 0
    table = pd_read(out)
    names = table["path"].map(lambda p: p.rsplit("/", 1)[-1].removesuffix(".png"))
    return {n: np.load(out.parent / "cams" / f"{i}.npy").astype(np.float32) for n, i in zip(names, table["image_id"])}


def test_oof_cams_come_from_each_images_own_fold_model(tmp_path, cam_inputs):
    run = fake_run(tmp_path / "run")
    folds = {"wide": 0, "square": 1}
    rows = [{"path": str(cam_inputs / f"{n}.png"), "image_id": f"{n}-oof", "patient_id": f"p{k}", "fold": k,
             "repeat": 0, "label": 1, "score": 0.5} for n, k in folds.items()]
    ghost = {**rows[0], "path": str(tmp_path / "gone.png"), "image_id": "ghost-oof"}  # deleted since training
    pd.DataFrame([rows[0], ghost, rows[1]]).to_csv(run / "oof_predictions.csv", index=False)
    cams_after_training(run, False)  # eval.cams: false
    assert not (run / "cams").exists()
    assert main([str(run)]) == 0  # one unreadable image costs only its own map
    assert not (run / "cams" / "ghost-oof.npy").exists()
    per_fold = [_fold_maps(run, cam_inputs, tmp_path, k) for k in (0, 1)]
    for name, k in folds.items():
        cam = np.load(run / "cams" / f"{name}-oof.npy")
        assert cam.dtype == np.float16 and (run / "cams" / f"{name}-oof.png").is_file()
        own, other = per_fold[k][name], per_fold[1 - k][name]
        assert cam.shape == own.shape
        assert np.abs(cam.astype(np.float32) - own).max() < 1e-3  # its own fold's model
        assert np.abs(own - other).max() > 0.05  # ... which is a different map from the other fold's


def test_auto_setting_and_a_run_without_folds(tmp_path, capsys):
    assert cams_wanted("auto", AUTO_MAX_IMAGES) and not cams_wanted("auto", AUTO_MAX_IMAGES + 1)
    assert cams_wanted(True, 10**6) and not cams_wanted(False, 1)
    assert main([str(tmp_path)]) == 2  # no run: one line naming the file, no traceback
    err = capsys.readouterr().err
    assert "oof_predictions.csv" in err and "Traceback" not in err
    cams_after_training(tmp_path, True)  # never raises after training
