"""The run folder format (version "medrec-run/2"): the one module that reads and writes it.

    from medrec import runfolder as rf
    info = rf.read_info(run_dir)                     # run.json, version checked
    thr = rf.thresholds(info, task, targets)         # Thresholds(values, source, missing)
    oof = rf.read_oof(run_dir)                       # oof_predictions.csv
    ckpt = rf.load_checkpoint(path)                  # Checkpoint(meta: CheckpointMeta, model, train_state)

See medrec.runfolder.folder for the layout and medrec.runfolder.checkpoint for the checkpoint format.
"""

from medrec.runfolder.checkpoint import (
    Checkpoint,
    CheckpointMeta,
    TrainState,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from medrec.runfolder.describe import preprocessing_summary
from medrec.runfolder.folder import (
    BEST_PT,
    CONFIG_YAML,
    DEFAULT_THRESHOLD,
    ERRORS_CSV,
    FOLD_OOF_CSV,
    FOLDS_DIR,
    FORMAT,
    LAST_PT,
    OOF_CSV,
    RUN_JSON,
    SPLITS_CSV,
    SUPPORTED,
    TEST_SET_CSV,
    Thresholds,
    config_path,
    fold_checkpoints,
    fold_dir,
    fold_name,
    is_fold_done,
    oof_path,
    read_config,
    read_fold_oof,
    read_info,
    read_info_if_any,
    read_oof,
    read_splits,
    splits_path,
    thresholds,
    write_config,
    write_fold_oof,
    write_info,
    write_oof,
    write_splits,
    write_table,
)

__all__ = [
    "BEST_PT", "CONFIG_YAML", "Checkpoint", "CheckpointMeta", "DEFAULT_THRESHOLD", "ERRORS_CSV", "FOLD_OOF_CSV", "FOLDS_DIR", "FORMAT", "LAST_PT",
    "OOF_CSV", "RUN_JSON", "SPLITS_CSV", "SUPPORTED", "TEST_SET_CSV", "Thresholds", "TrainState", "config_path", "fold_checkpoints",
    "fold_dir", "fold_name", "is_fold_done", "load_checkpoint", "model_from_checkpoint", "oof_path",
    "preprocessing_summary", "read_config", "read_fold_oof", "read_info", "read_info_if_any", "read_oof",
    "read_splits", "save_checkpoint", "splits_path", "thresholds", "write_config", "write_fold_oof", "write_info",
    "write_oof", "write_splits", "write_table",
]
