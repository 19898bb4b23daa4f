"""`python -m medrec.finetune --config CONFIG.yaml`: patient-grouped cross-validated fine-tuning.

Front end only: parse arguments, load and validate the config (before any heavy import, so
a bad config fails in about a second), set up the run folder and logging, call
`medrec.train.cv.run`, print a one-screen summary.
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import datetime
from pathlib import Path

from medrec.config import ExperimentConfig, load_config
from medrec.errors import ConfigError
from medrec.exitcodes import handle_errors

EPILOG = """\
examples:
  python -m medrec.finetune --config configs/chest_xray.yaml
  python -m medrec.finetune --config configs/chest_xray.yaml --set train.epochs=2 --set model.arch=resnet34
  python -m medrec.finetune --resume runs/chest_xray-20261129-101500
  torchrun --nproc_per_node 2 -m medrec.finetune --config configs/chest_xray.yaml
  python -m medrec.finetune --config configs/chest_xray.yaml --fold 3 --out runs/shared   # one fold (SLURM array)

--set KEY=VALUE overrides any config field by its dotted path; VALUE is parsed as YAML
(numbers, true/false, lists like [40, 400]). The config reference is in README.md.
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m medrec.finetune", description=__doc__.splitlines()[0],
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, help="experiment YAML (see configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. train.epochs=2 (repeatable)")
    p.add_argument("--out", type=Path, help="run folder (default: <output_dir>/<name>-<timestamp>)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR",
                   help="continue a killed run: finished folds are skipped, the current fold continues "
                        "from its last finished epoch")
    p.add_argument("--allow-changed-data", action="store_true",
                   help="with --resume: if the data changed since the run's splits were drawn, draw new splits "
                        "into a new run folder (RUN_DIR-resplit-<timestamp>) instead of stopping")
    p.add_argument("--fold", type=int, help="train only this fold (repeat 0); merge later with --resume")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if not args.config and not args.resume:
        p.error("give --config CONFIG.yaml, or --resume RUN_DIR")
    if args.allow_changed_data and not args.resume:
        p.error("--allow-changed-data goes with --resume RUN_DIR")
    return args


def resolve_run(args: argparse.Namespace) -> tuple[ExperimentConfig, Path, Path]:
    """The validated config, the run folder and the folder relative paths are resolved against."""
    if args.resume:
        from medrec import runfolder as rf

        if args.overrides:
            raise ConfigError("--set cannot change a run being resumed; start a new run instead")
        return rf.read_config(args.resume), args.resume, Path.cwd()
    cfg = load_config(args.config, args.overrides)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = args.out or Path(cfg.output_dir) / f"{cfg.name}-{stamp}"
    return cfg, run_dir, args.config.resolve().parent


def setup_logging(run_dir: Path, main: bool) -> None:
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    if main:
        fh = logging.FileHandler(run_dir / "train.log")
        fh.setFormatter(fmt)
        root.addHandler(fh)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING)
    console.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    root.addHandler(console)


def progress_factory(cfg: ExperimentConfig, quiet: bool):
    """A tqdm bar per fold and epoch, showing loss, learning rate and images/s."""
    if quiet:
        return None
    from tqdm.auto import tqdm

    n_folds = cfg.cv.folds

    def make(split, epoch: int, n_batches: int):
        desc = f"fold {split.fold + 1}/{n_folds}" + (f" rep {split.repeat + 1}" if cfg.cv.repeats > 1 else "")
        return tqdm(total=n_batches, desc=f"{desc} epoch {epoch + 1}/{cfg.train.epochs}", unit="batch",
                    leave=False, dynamic_ncols=True)

    return make


def summary(run_dir: Path, info: dict) -> str:
    """The one-screen summary printed at the end of a run."""
    from medrec import runfolder as rf

    lines = ["", f"medrec run: {run_dir}", f"  status:         {info.get('status')}",
             f"  initialisation: {info.get('initialisation')}",
             f"  wall time:      {info.get('wall_time_s', 0):.0f} s"]
    metrics = info.get("metrics") or {}
    pooled = metrics.get("metrics", {}) if isinstance(metrics, dict) else {}
    for key in ("auroc", "accuracy", "sensitivity", "specificity"):
        m = pooled.get(key)
        if isinstance(m, dict) and m.get("value") is not None:
            ci = f" (95% CI {m['ci_low']:.3f}-{m['ci_high']:.3f})" if m.get("ci_low") is not None else ""
            lines.append(f"  pooled {key + ':':<13}{m['value']:.3f}{ci}")
    if info.get("threshold") is not None:
        lines.append(f"  threshold:      {info['threshold']} ({info.get('operating_point')})")
    for f in info.get("folds", []):
        lines.append(f"  fold {f['fold']}: {f['n_train']} train / {f['n_val']} val images, {f['epochs']} epochs")
    for name in ("report.html", "metrics.json", rf.OOF_CSV, "train.log", rf.ERRORS_CSV):
        if (run_dir / name).exists():
            lines.append(f"  {name:<20} {run_dir / name}")
    return "\n".join(lines)


@handle_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg, run_dir, base_dir = resolve_run(args)
    from medrec.train import cv
    from medrec.train import distributed as dist

    from medrec.train.resume import DataChangedError

    device = dist.local_device(cfg.train.device)
    dist.init_from_env(device)
    _prepare_folder(cfg, run_dir)
    setup_logging(run_dir, dist.is_main())
    progress = progress_factory(cfg, args.quiet or not dist.is_main())
    try:
        info = cv.run(cfg, run_dir, base_dir=base_dir, only_fold=args.fold, progress=progress)
    except DataChangedError as exc:
        if not args.allow_changed_data:
            raise
        run_dir = run_dir.with_name(f"{run_dir.name}-resplit-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
        logging.getLogger(__name__).warning("%s\nDrawing new splits into %s (--allow-changed-data)", exc, run_dir)
        _prepare_folder(cfg, run_dir)
        info = cv.run(cfg, run_dir, base_dir=base_dir, only_fold=args.fold, progress=progress)
    if dist.is_main():
        if info.get("status") == "complete":
            from medrec.eval.report import build_report

            info["metrics"] = build_report(run_dir)
            from medrec.explain_run import cams_after_training  # RUN/cams: each OOF image's Grad-CAM

            cams_after_training(run_dir, cfg.eval.cams)
        print(summary(run_dir, info))
    dist.shutdown()
    return 0


def _prepare_folder(cfg: ExperimentConfig, run_dir: Path) -> None:
    from medrec import runfolder as rf
    from medrec.train import distributed as dist

    if dist.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        rf.write_config(run_dir, cfg)
    dist.barrier()


if __name__ == "__main__":
    sys.exit(main())
