"""`python -m medrec.predict --run RUN --input PATH --out preds.csv`: fold-ensemble inference.

Each fold's network and preprocessing are rebuilt from its checkpoint alone
(`RUN/folds/fold_<k>/best.pt`: resolved config, normalisation, task, label names), the
images are preprocessed exactly as in training (`medrec.data.transforms`: one read with the
run's window, resize of the longest side, zero padding, float16, normalisation), and the
fold models' probabilities are averaged. Optional test-time augmentation (`--tta flip`)
averages each model's probabilities over the image and its horizontal mirror.

The threshold is the run's (run.json), chosen on single-model out-of-fold scores;
`--tune-threshold LABELLED.csv` re-chooses it on the ensemble's scores of a separate labelled set.

Outputs, beside `--out` (default RUN/predictions/predictions.csv), see README "Prediction files":
    preds.csv           one row per predicted image
    preds.errors.csv    path, reason: inputs that could not be read (header only if none)
    preds.conversions.csv  path, conversion: inputs not stored grey (e.g. grey saved as RGB JPEG)
    preds.meta.json     what was run: models, preprocessing, threshold, TTA, counts, timing
    preds.metrics.json  metrics with bootstrap CIs, when the input carries labels
    cams/<image_id>.npy|.png  Grad-CAM maps and overlays with --cam (medrec.explain)

This module is the command line only; the work is done by medrec.infer.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from medrec.exitcodes import handle_errors
from medrec.infer.job import Options, predict  # no torch at import: predict imports it once inputs pass

# Kept importable from here for older callers (on first use, so that torch is not imported before the
# inputs are checked); new code imports medrec.infer / medrec.runfolder.
_LEGACY = ("Ensemble", "Inputs", "collect_inputs", "load_ensemble", "prediction_metrics", "predictions_table",
           "score_batch")


def __getattr__(name: str) -> Any:
    if name in _LEGACY:
        import medrec.infer

        return getattr(medrec.infer, name)
    if name == "fold_checkpoints":
        from medrec.runfolder import fold_checkpoints

        return fold_checkpoints
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

EXIT_FAILED = 2  # nothing could be predicted: bad run folder, bad options, no inputs (as medrec.finetune)
EXIT_UNREADABLE = 3  # --strict and at least one input could not be read


EPILOG = """\
examples:
  python -m medrec.predict --run runs/chest_xray --input scans/ --out preds/preds.csv
  python -m medrec.predict --run runs/chest_xray --input new_manifest.csv --tta flip --cam
  python -m medrec.predict --run runs/pneumonia --input pneumoniamnist.npz --split test --folds 0,2

Writes preds.csv, preds.errors.csv, preds.meta.json, preds.metrics.json (when the input has
labels) and, with --cam, cams/<image_id>.npy + .png beside the CSV. Exit code 0 even when some
inputs are unreadable (listed in preds.errors.csv); 3 with --strict; 2 when nothing can run.
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m medrec.predict", description=__doc__.splitlines()[0],
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="run folder written by medrec.finetune")
    p.add_argument("--input", type=Path, required=True,
                   help="DICOM/PNG/JPEG/NIfTI file, folder (recursive), manifest CSV (path, patient_id[, labels]) or npz")
    p.add_argument("--out", type=Path, help="predictions CSV (default RUN/predictions/predictions.csv)")
    p.add_argument("--split", default="test", help="npz input: which split (default test)")
    p.add_argument("--folds", help="comma-separated folds to ensemble, e.g. 0,2 (default: all)")
    p.add_argument("--tta", choices=("none", "flip"), default="none",
                   help="flip: average each model over the image and its left-right mirror")
    p.add_argument("--batch-size", type=int, help="default: the run's train.batch_size")
    p.add_argument("--workers", type=int, help="DataLoader worker processes (default: the run's data.num_workers)")
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: the run's train.device)")
    p.add_argument("--amp", choices=("none", "bf16", "fp16"), help="autocast (default: the run's train.amp)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels-last memory format (default: the run's train.channels_last)")
    p.add_argument("--cam", action="store_true", help="write Grad-CAM maps and overlays under <out dir>/cams/")
    p.add_argument("--cam-class", help="class or label the CAMs explain (required for multilabel runs)")
    p.add_argument("--fold-scores", action="store_true", help="also write each fold model's scores")
    p.add_argument("--tune-threshold", type=Path, metavar="LABELLED.csv",
                   help="re-choose the threshold (the run's eval.operating_point rule) on the ensemble's scores of "
                        "this labelled manifest; it must share no image or patient with --input")
    p.add_argument("--strict", action="store_true", help=f"exit {EXIT_UNREADABLE} if any input cannot be read")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.add_argument("--allow-identifying-paths", action="store_true",
                   help="predict even when folder or file names carry a file's PatientID, name, birth date or "
                        "accession number (refused by default, as by medrec.index)")
    return p.parse_args(argv)


@handle_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    folds = [f.strip() for f in args.folds.split(",") if f.strip()] if args.folds else None
    options = Options(folds=folds, split=args.split, tta=args.tta, batch_size=args.batch_size, workers=args.workers,
                      device=args.device, amp=args.amp, channels_last=args.channels_last, cam=args.cam,
                      cam_class=args.cam_class, fold_scores=args.fold_scores,
                      progress=not args.quiet and sys.stderr.isatty(),
                      allow_identifying_paths=args.allow_identifying_paths, tune_threshold=args.tune_threshold)
    meta = predict(args.run, args.input, args.out, options)
    if not args.quiet:
        print(summary(meta))
    return EXIT_UNREADABLE if args.strict and meta["n_errors"] else 0


def summary(meta: dict[str, Any]) -> str:
    f = meta["files"]
    lines = [f"predicted {meta['n_predicted']} image(s) with {len(meta['models'])} fold model(s) "
             f"({meta['images_per_s']} images/s) -> {f['predictions']}"]
    images = meta.get("images") or {}
    if meta["n_errors"] or images.get("converted"):  # e.g. "... 131 near-grey RGB read as grey, 11 refused (11 colour)"
        lines.append(f"images: {meta['images_summary']}")
    if meta["n_errors"]:
        lines.append(f"{meta['n_errors']} input(s) could not be read: see {f['errors']}")
    if images.get("converted"):
        lines.append(f"how each converted image was read: {f['conversions']}")
    if meta["input"]["n_skipped_not_images"]:
        lines.append(f"{meta['input']['n_skipped_not_images']} file(s) skipped: not DICOM, PNG, JPEG or NIfTI")
    if f["metrics"]:
        lines.append(f"metrics: {f['metrics']}")
    if meta["cams"]:
        lines.append(f"Grad-CAM maps: {meta['cams']['written']} in {meta['cams']['folder']}")
    return "\n".join(lines)



if __name__ == "__main__":
    sys.exit(main())
