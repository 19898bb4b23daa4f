"""medrec tune: search-space validation, sampling, the study's resume logic, and a real study on
data_samples/chest_xray that is killed with SIGKILL after its first trial and resumed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from medrec.config import load_config, validate_config
from medrec.errors import ConfigError
from medrec.tune.space import Param, TuneConfig

optuna = pytest.importorskip("optuna")

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data_samples" / "chest_xray" / "manifest.csv"


def tiny_config(space: dict, **tune) -> dict:
    """The smallest useful study on the bundled chest X-ray samples: 32 px, 1 epoch, 2 folds."""
    return {
        "name": "cxr_tiny", "seed": 0,
        "data": {"manifest": str(SAMPLES), "image_size": 32, "augment": "none"},
        "model": {"arch": "resnet18", "weights": "none"},
        "cv": {"folds": 2},
        "train": {"epochs": 1, "batch_size": 16, "precise_bn_batches": 0, "threads": 1},
        "eval": {"bootstrap": 0, "worst_cases": 0},
        "tune": {"startup_trials": 2, "space": space, **tune},
    }


def write(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


# ----------------------------------------------------------------------------- search space


@pytest.mark.parametrize("key, expect", [
    ("train.lrr", ["unknown key 'train.lrr'", "did you mean 'train.lr'", "valid keys of train", "weight_decay"]),
    ("modle.arch", ["'modle.arch' cannot be searched", "data, model, train"]),
    ("train.early_stopping.patiense", ["did you mean 'train.early_stopping.patience'"]),
    ("data.manifest", ["changes which data"]),
    ("train.lr.low", ["'train.lr' is a value, not a section"]),
])
def test_unknown_or_fixed_key_fails_at_load(tmp_path, key, expect):
    path = write(tmp_path / "c.yaml", tiny_config({key: {"int": [1, 3]}}))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    for text in expect:
        assert text in str(err.value)


def test_cli_refuses_unknown_key_before_any_work(tmp_path, capsys):
    from medrec.tune import main

    path = write(tmp_path / "c.yaml", tiny_config({"train.lrr": {"log_uniform": [1e-4, 1e-2]}}))
    assert main(["--config", str(path), "--trials", "2", "--out", str(tmp_path / "study")]) == 2
    err = capsys.readouterr().err
    assert "train.lrr" in err and "did you mean 'train.lr'" in err
    assert not (tmp_path / "study").exists()


def test_cli_refuses_a_subgroup_column_the_manifest_lacks_before_the_first_trial(tmp_path, capsys):
    from medrec.tune import main

    raw = tiny_config({"train.lr": {"log_uniform": [1e-4, 1e-2]}})
    raw["eval"]["subgroups"] = ["sex", "site"]
    path = write(tmp_path / "c.yaml", raw)
    assert main(["--config", str(path), "--trials", "2", "--out", str(tmp_path / "study")]) == 2
    err = capsys.readouterr().err
    assert "eval.subgroups names column 'site'" in err and "'sex'" not in err
    assert not (tmp_path / "study").exists()  # no trial ran


@pytest.mark.parametrize("key, param, expect", [
    ("model.arch", {"choice": ["resnet18", "resnet5"]}, "tune.space.model.arch value 'resnet5'"),
    ("train.epochs", {"int": [0, 3]}, "tune.space.train.epochs value 0"),
    ("data.augment", {"choice": ["light", "cxrr"]}, "tune.space.data.augment value 'cxrr'"),
])
def test_cli_refuses_invalid_values_of_the_space(tmp_path, capsys, key, param, expect):
    from medrec.tune import main

    path = write(tmp_path / "c.yaml", tiny_config({key: param}))
    assert main(["--config", str(path), "--out", str(tmp_path / "study")]) == 2
    assert expect in capsys.readouterr().err
    assert not (tmp_path / "study").exists()


@pytest.mark.parametrize("yaml_form, kind, low, high, choices", [
    ({"log_uniform": [1e-4, 1e-2]}, "log_uniform", 1e-4, 1e-2, None),
    ({"int": [2, 8], "step": 2}, "int", 2, 8, None),
    ({"choice": ["light", "cxr"]}, "choice", None, None, ("light", "cxr")),
])
def test_param_yaml_round_trip(yaml_form, kind, low, high, choices):
    p = Param.model_validate(yaml_form)
    assert (p.kind, p.low, p.high, p.choices) == (kind, low, high, choices)
    assert Param.model_validate(p.model_dump()) == p
    assert p.model_dump() == yaml_form


@pytest.mark.parametrize("bad", [{"uniform": [1, 0]}, {"log_uniform": [0, 1]}, {"int": [1.5, 3]},
                                 {"uniform": [0, 1], "choice": [1]}, {"choice": []}, {"log_int": [1, 8], "step": 2},
                                 {"normal": [0, 1]}])
def test_param_rejects_bad_forms(bad):
    with pytest.raises(ValueError):
        Param.model_validate(bad)


def test_sampled_values_land_in_bounds_and_in_the_trial_config():
    from medrec.tune.objective import suggest, trial_raw

    space = {"train.lr": {"log_uniform": [1e-4, 1e-2]}, "train.epochs": {"int": [2, 8], "step": 2},
             "data.augment.preset": {"choice": ["none", "light"]}, "data.image_size": {"choice": [32, 64]}}
    raw = tiny_config(space, folds=3)
    raw["data"]["augment"] = {"preset": "cxr", "noise": {"std": 0.05}}
    tune = validate_config(raw).tune
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = []
    for _ in range(30):
        trial = study.ask()
        params = suggest(trial, tune.space)
        cfg = validate_config(trial_raw(raw, params, tune))
        assert 1e-4 <= cfg.train.lr <= 1e-2 and cfg.train.lr == params["train.lr"]
        assert cfg.train.epochs in (2, 4, 6, 8) and isinstance(params["train.epochs"], int)
        assert cfg.data.augment.preset == params["data.augment.preset"]
        assert cfg.data.augment.noise.std == 0.05  # searching the preset keeps the base's item overrides
        assert cfg.data.image_size == params["data.image_size"] and cfg.cv.folds == 3 and cfg.tune is None
        seen.append(params)
        study.tell(trial, 0.5)
    lrs = np.log10([p["train.lr"] for p in seen])
    assert lrs.min() < -3 < lrs.max()  # log scale: both decades are visited
    assert {p["data.augment.preset"] for p in seen} == {"none", "light"}
    whole = validate_config(trial_raw(raw, {"data.augment": "light"}, tune))  # the whole section: just the preset
    assert whole.data.augment.preset == "light" and whole.data.augment.noise is None


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_pooled_auroc_matches_sklearn(task):
    from medrec.tune.objective import pooled_auroc

    rng = np.random.default_rng(0)
    n = 200
    if task == "binary":
        y = rng.integers(0, 2, n)
        oof = pd.DataFrame({"label": y, "score": y * 0.5 + rng.random(n)})
        expect = roc_auc_score(y, oof["score"])
    elif task == "multiclass":
        y = rng.integers(0, 3, n)
        s = rng.random((n, 3)) + np.eye(3)[y] * 0.4
        s /= s.sum(1, keepdims=True)
        oof = pd.DataFrame({"label": y, **{f"score_{k}": s[:, k] for k in range(3)}})
        expect = roc_auc_score(y, s, multi_class="ovr", average="macro")
    else:
        y = rng.integers(0, 2, (n, 2)).astype(float)
        y[:10, 1] = np.nan  # unlabelled rows are left out of that label's AUROC
        s = rng.random((n, 2)) + np.nan_to_num(y) * 0.3
        oof = pd.DataFrame({"label_a": y[:, 0], "label_b": y[:, 1], "score_a": s[:, 0], "score_b": s[:, 1]})
        expect = np.mean([roc_auc_score(y[:, 0], s[:, 0]), roc_auc_score(y[10:, 1], s[10:, 1])])
    assert pooled_auroc(oof, task) == pytest.approx(expect, abs=1e-9)


# ----------------------------------------------------------------------------- study bookkeeping


def test_interrupted_trial_is_retried_in_its_folder_and_not_counted(tmp_path):
    from medrec.tune import study as st

    tune = TuneConfig(space={"train.lr": Param.model_validate({"log_uniform": [1e-4, 1e-2]})})
    study = st.open_study(tmp_path, tune, seed=0)
    t0 = study.ask()
    t0.suggest_float("train.lr", 1e-4, 1e-2, log=True)
    study.tell(t0, 0.7)
    killed = study.ask()  # left RUNNING, as a SIGKILL leaves it
    lr = killed.suggest_float("train.lr", 1e-4, 1e-2, log=True)
    killed.set_user_attr("run_dir", "trials/trial_001")
    assert st.remaining(study, 4) == 3
    study = st.open_study(tmp_path, tune, seed=0)  # a new process
    assert st.recover_interrupted(study) == [1]
    states = {t.number: (t.state.name, t.user_attrs) for t in study.trials}
    assert states[1][0] == "FAIL" and states[1][1]["interrupted"] is True
    assert states[2][0] == "WAITING" and states[2][1] == {"retry_of": 1, "resume_dir": "trials/trial_001"}
    assert st.remaining(study, 4) == 3  # the interrupted trial does not count; its retry will
    retry = study.ask()
    assert retry.number == 2 and retry.suggest_float("train.lr", 1e-4, 1e-2, log=True) == lr  # the same values
    assert st.recover_interrupted(st.open_study(tmp_path, tune, seed=0)) == [2]  # RUNNING again: retried again


def test_ctrl_c_trial_is_retried_once_and_a_real_failure_never(tmp_path):
    from optuna.trial import TrialState

    from medrec.tune import study as st

    tune = TuneConfig(space={"train.lr": Param.model_validate({"log_uniform": [1e-4, 1e-2]})})
    study = st.open_study(tmp_path, tune, seed=0)
    for interrupted in (True, False):  # Ctrl-C (the objective marks it) / a trial that failed on its values
        t = study.ask()
        t.suggest_float("train.lr", 1e-4, 1e-2, log=True)
        if interrupted:
            t.set_user_attr("interrupted", True)
        study.tell(t, state=TrialState.FAIL)
    assert st.remaining(study, 3) == 2  # the real failure counts, the interrupted one does not
    assert st.recover_interrupted(study) == [0]
    assert st.recover_interrupted(study) == []  # already retried: not enqueued twice
    waiting = [t for t in study.trials if t.state == TrialState.WAITING]
    assert len(waiting) == 1 and waiting[0].user_attrs["retry_of"] == 0


def test_a_stale_trial_folder_is_kept_aside_not_resumed(tmp_path, monkeypatch):
    from medrec.tune.objective import Objective

    raw = tiny_config({"train.lr": {"log_uniform": [1e-4, 1e-2]}})
    stale = tmp_path / "trials" / "trial_000"
    (stale / "folds" / "fold_0").mkdir(parents=True)
    (stale / "folds" / "fold_0" / "oof.csv").write_text("another study's fold\n")
    seen = {}

    def fake_folds(self, cfg, run_dir, only):  # no training: this test is about the folder only
        seen[only] = sorted(p.name for p in run_dir.iterdir())
        return 0.75

    monkeypatch.setattr(Objective, "_run_folds", fake_folds)
    study = optuna.create_study(direction="maximize")
    study.optimize(Objective(raw, validate_config(raw).tune, tmp_path, ROOT, "c.yaml"), n_trials=1)
    assert study.trials[0].value == 0.75 and seen == {0: ["config.yaml"], 1: ["config.yaml"]}
    kept = [p for p in (tmp_path / "trials").iterdir() if p.name.startswith("trial_000.stale-")]
    assert len(kept) == 1 and (kept[0] / "folds/fold_0/oof.csv").read_text() == "another study's fold\n"
    assert load_config(tmp_path / "trials/trial_000/config.yaml").train.lr == study.trials[0].params["train.lr"]


def test_second_process_on_a_study_is_refused(tmp_path):
    from medrec.tune.study import lock

    held = lock(tmp_path)
    code = ("import sys; from pathlib import Path; from medrec.tune.study import lock\n"
            "try:\n    lock(Path(sys.argv[1]))\nexcept Exception as e:\n    print(type(e).__name__, e); sys.exit(3)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60)
    held.close()
    assert out.returncode == 3 and "another medrec tune is running" in out.stdout


def test_resuming_with_another_config_is_refused(tmp_path):
    from medrec.tune.cli import store_config

    raw = tiny_config({"train.lr": {"log_uniform": [1e-4, 1e-2]}})
    store_config(tmp_path, raw, ROOT)
    store_config(tmp_path, raw, ROOT)  # the same config: fine
    other = {**raw, "seed": 1}
    with pytest.raises(ConfigError, match="different config"):
        store_config(tmp_path, other, ROOT)


def test_summary_of_a_study_without_training(tmp_path):
    from optuna.trial import TrialState

    from medrec.tune import study as st
    from medrec.tune.summary import write_summary

    raw = tiny_config({"train.lr": {"log_uniform": [1e-4, 1e-2]}, "data.augment": {"choice": ["none", "light"]}},
                      folds=3)
    cfg = validate_config(raw)
    study = st.open_study(tmp_path, cfg.tune, seed=0)
    values = {0: [0.6, 0.7], 1: [0.9, 0.8], 2: [0.5], 3: []}  # complete, complete, pruned, interrupted
    for number, steps in values.items():
        t = study.ask()
        t.suggest_float("train.lr", 1e-4, 1e-2, log=True)
        t.suggest_categorical("data.augment", ["none", "light"])
        for k, v in enumerate(steps):
            t.report(v, k)
        if number < 2:
            study.tell(t, steps[-1])
        elif number == 2:
            study.tell(t, state=TrialState.PRUNED)
    st.recover_interrupted(study)  # trial 3 was left running
    info = write_summary(study, raw, cfg, tmp_path, str(SAMPLES))
    table = pd.read_csv(tmp_path / "trials.csv")
    assert list(table["state"]) == ["complete", "complete", "pruned", "fail (interrupted)", "waiting"]
    assert table["objective"].iloc[:2].tolist() == [0.7, 0.8] and table["objective"].iloc[2:].isna().all()
    assert table["last_value"].iloc[2] == 0.5 and table["per_fold"].iloc[1] == "0.9000 0.8000"
    assert info["best_trial"] == 1 and info["trials"] == 3  # the interrupted trial does not count
    best = load_config(tmp_path / "best_config.yaml")
    assert best.train.lr == study.trials[1].params["train.lr"] and best.cv.folds == 2  # the base's CV, not tune.folds
    assert best.tune.tuned_from.folds == 3 and best.tune.tuned_from.best_value == 0.8 and best.name == "cxr_tiny-tuned"
    assert (tmp_path / "trials.md").read_text().count("\n") == 2 + 5
    for png in ("plots/objective.png", "plots/params.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- a real study, killed and resumed


def _trials(study_dir: Path):
    try:
        return optuna.load_study(study_name="medrec-tune", storage=f"sqlite:///{study_dir / 'study.db'}").trials
    except Exception:  # the child has not created the storage yet
        return []


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.glob("folds/*/*"))}


def _kill_after_first_trial(cmd: list[str], study_dir: Path, env: dict) -> None:
    """Start the study, SIGKILL it once trial 0 is complete and trial 1 has finished its first fold."""
    child = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    try:
        while time.time() < deadline and child.poll() is None:
            trials = _trials(study_dir)
            if len(trials) > 1 and trials[0].state.name == "COMPLETE" and trials[1].intermediate_values:
                break
            time.sleep(0.2)
        assert child.poll() is None, "the study ended before it could be killed"
    finally:
        os.kill(child.pid, signal.SIGKILL)  # the child we started, by its pid
        child.wait()


def _check_best_config_and_summary(study_dir: Path, trials: list):
    """Objectives against sklearn, best_config.yaml, trials.csv, plots; returns (best config, best trial)."""
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    for t in complete:  # the objective is the pooled OOF AUROC of the trial's own run folder
        oof = pd.read_csv(study_dir / t.user_attrs["run_dir"] / "oof_predictions.csv")
        assert len(oof) == 96 and oof["path"].is_unique
        assert t.value == pytest.approx(roc_auc_score(oof["label"], oof["score"]), abs=1e-9)
    best = load_config(study_dir / "best_config.yaml")
    top = max(complete, key=lambda t: t.value)
    marker = best.tune.tuned_from
    assert (marker.trials, marker.best_trial, marker.best_value) == (4, top.number, pytest.approx(top.value))
    assert best.train.lr == top.params["train.lr"] and best.data.augment.preset == top.params["data.augment"]
    assert best.tune.space == {} and "optimistic" in marker.summary() and best.cv.folds == 2
    table = pd.read_csv(study_dir / "trials.csv")
    assert list(table["trial"]) == [0, 1, 2, 3, 4] and table["state"].iloc[1] == "fail (interrupted)"
    for png in ("plots/objective.png", "plots/params.png"):
        assert (study_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return best, top


def _check_tuned_report(study_dir: Path, best, top, run: Path) -> None:
    """The report of a run of the best config says it was tuned, on what, and that its CV is optimistic."""
    import shutil

    from medrec.config import save_config
    from medrec.eval.report import build_report

    shutil.copytree(study_dir / top.user_attrs["run_dir"], run)  # the best trial's folds = the best config's
    save_config(best, run / "config.yaml")
    build_report(run)
    tuned = [line for line in (run / "report.md").read_text().splitlines() if line.startswith("| Tuned |")]
    assert len(tuned) == 1 and f"best of 4 trials (trial {top.number}" in tuned[0]
    assert "2-fold patient-grouped CV (seed 0)" in tuned[0] and "optimistic" in tuned[0]


def test_study_on_samples_resumes_after_sigkill_without_repeating_trials(tmp_path):
    space = {"train.lr": {"log_uniform": [1e-4, 1e-2]}, "data.augment": {"choice": ["none", "light"]}}
    config = write(tmp_path / "cxr.yaml", tiny_config(space))
    study_dir = tmp_path / "study"
    cmd = [sys.executable, "-m", "medrec.tune", "--config", str(config), "--trials", "4", "--out", str(study_dir)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    _kill_after_first_trial(cmd, study_dir, env)

    before = _trials(study_dir)
    assert before[0].state.name == "COMPLETE" and before[1].state.name == "RUNNING"
    first_value, killed_params = before[0].value, before[1].params
    finished_files = _mtimes(study_dir / "trials/trial_000")
    killed_fold0 = (study_dir / "trials/trial_001/folds/fold_0/oof.csv").stat().st_mtime_ns

    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    trials = _trials(study_dir)
    by_state = pd.Series([t.state.name for t in trials]).value_counts().to_dict()
    # 4 counted trials + the killed one, which is recorded as failed (interrupted) and retried once
    assert len(trials) == 5 and by_state.get("FAIL") == 1 and trials[1].user_attrs["interrupted"] is True
    assert trials[0].value == first_value and _mtimes(study_dir / "trials/trial_000") == finished_files
    retry = trials[2]
    assert retry.user_attrs["retry_of"] == 1 and retry.params == killed_params
    assert retry.user_attrs["run_dir"] == "trials/trial_001"  # continued in the killed trial's folder ...
    fold0 = study_dir / "trials/trial_001/folds/fold_0"
    assert (fold0 / "oof.csv").stat().st_mtime_ns == killed_fold0  # ... without retraining its finished fold
    assert len(pd.read_csv(fold0 / "history.csv")) == 1
    assert sorted(t.user_attrs.get("run_dir") for t in trials if t.state.name != "FAIL") == \
        ["trials/trial_000", "trials/trial_001", "trials/trial_003", "trials/trial_004"]
    best, top = _check_best_config_and_summary(study_dir, trials)
    _check_tuned_report(study_dir, best, top, tmp_path / "tuned_run")
