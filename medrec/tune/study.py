"""The Optuna study of a `medrec tune` run folder: SQLite storage, sampler, pruner, resume.

Layout of the run folder (the study folder):

    study.db            Optuna's SQLite storage: every trial, its parameters, per-fold values, state
    tune_config.yaml    the config as given (overrides applied): a resumed study must match it
    trials/trial_NNN/   each trial's ordinary medrec run folder (config, folds, OOF, report)
    trials.csv/.md, study.json, plots/, best_config.yaml    written by medrec.tune.summary

A killed `medrec tune` leaves its current trial RUNNING in the storage. On the next start that
trial is marked FAIL with `interrupted` set (it does not count towards --trials) and its
parameters are enqueued again with its run folder, so the retry continues the killed trial's
finished folds and epochs instead of repeating them. Finished trials are never rerun.
"""

from __future__ import annotations

import fcntl
import logging
from pathlib import Path
from typing import IO

from medrec.errors import ConfigError
from medrec.tune.space import TuneConfig

log = logging.getLogger(__name__)

STUDY_NAME = "medrec-tune"
PRUNER_STARTUP_TRIALS = 2  # complete trials before the median pruner may stop one


def storage_url(study_dir: Path) -> str:
    return f"sqlite:///{(study_dir / 'study.db').resolve()}"


def lock(study_dir: Path) -> IO[str]:
    """An exclusive lock on the study folder for this process (released when it exits or is killed).

    Raises:
        ConfigError: another process holds it.
    """
    handle = open(study_dir / ".lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ConfigError(f"{study_dir}: another medrec tune is running on this study; wait for it or "
                          "use another --out") from None
    return handle


def open_study(study_dir: Path, tune: TuneConfig, seed: int):
    """Create or load the study; seeded TPE sampler, median pruner on the per-fold values."""
    import optuna

    study = optuna.create_study(study_name=STUDY_NAME, storage=storage_url(study_dir), direction="maximize",
                                load_if_exists=True)
    # Seeded by how many trials exist, so a resumed study does not redraw the first trials' random values.
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials), n_startup_trials=tune.startup_trials)
    study.pruner = (optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=0)
                    if tune.prune else optuna.pruners.NopPruner())
    return study


def recover_interrupted(study) -> list[int]:
    """Retry the trials that a kill left RUNNING or Ctrl-C interrupted (FAIL with `interrupted`).

    Each is marked failed-interrupted (not counted) and its values are enqueued again, once, with its
    run folder. Only call this while holding the study lock: then no other process is running a trial.
    Returns the numbers of the interrupted trials.
    """
    from optuna.trial import TrialState

    storage = study._storage  # optuna has no public API to change another process's trial state
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    done = []
    for t in trials:
        if t.number in retried or not (t.state == TrialState.RUNNING or
                                       (t.state == TrialState.FAIL and t.user_attrs.get("interrupted"))):
            continue
        if t.state == TrialState.RUNNING:
            storage.set_trial_user_attr(t._trial_id, "interrupted", True)
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        attrs = {"retry_of": t.number}
        if "run_dir" in t.user_attrs:
            attrs["resume_dir"] = t.user_attrs["run_dir"]
        study.enqueue_trial(t.params, user_attrs=attrs, skip_if_exists=False)
        log.warning("trial %d was interrupted; it runs again, continuing its finished folds", t.number)
        done.append(t.number)
    return done


def counted(trial) -> bool:
    """Whether a trial counts towards --trials: finished, and not interrupted by a kill."""
    from optuna.trial import TrialState

    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and not trial.user_attrs.get("interrupted")


def remaining(study, trials: int) -> int:
    """Trials still to run for a study of `trials` counted trials (a waiting retry is one of them)."""
    return max(0, trials - sum(counted(t) for t in study.trials))
