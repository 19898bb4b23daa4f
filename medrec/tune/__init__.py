"""`medrec tune`: hyper-parameter search by patient-grouped cross-validation (Optuna).

    space      the config's `tune:` section (pure data; medrec.config holds it)
    objective  one trial: its config, its folds through medrec.train.cv, per-fold reports
    study      the Optuna study in the run folder: SQLite storage, resume after a kill
    summary    trials table, plots and the best config
    cli        the command line (`medrec tune`, `python -m medrec.tune`)

Importing this package stays light (medrec.config imports `medrec.tune.space`).
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """`medrec tune` entry point (see medrec.tune.cli)."""
    from medrec.tune.cli import main as _main

    return _main(argv)
