"""`python -m medrec.export --run RUN --fold K --format onnx|torchscript`: one fold's network as a file.

The network is rebuilt from `RUN/folds/fold_<K>/best.pt` alone, exported with a dynamic batch
dimension (input `image`: float32 N x C x S x S, output `logits`: N x outputs), and checked
against PyTorch on random inputs of two batch sizes: the maximum absolute difference of the
logits is reported and the command fails (exit 3) above `--atol` (default 1e-4).

What a deployment needs besides the weights (normalisation, input size, label names, the
run's threshold, how logits become probabilities) is written as JSON beside the file
(`<file>.json`) and embedded in it: ONNX `metadata_props["medrec"]`, TorchScript extra file
`medrec.json`. The exported network expects the preprocessed, normalised image: read,
window, resize the longest side to `input.size`, zero-pad to a square, then (x - mean) / std.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import logging
import sys
import warnings
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medrec import runfolder as rf
from medrec.errors import ConfigError, MedrecError
from medrec.exitcodes import handle_errors
from medrec.fileio import atomic_write_bytes, atomic_write_json
from medrec.runfolder import Checkpoint

log = logging.getLogger(__name__)

FORMAT = "medrec-export/1"
FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
OPSET = 18
EXIT_FAILED = 2
EXIT_MISMATCH = 3
CHECK_BATCHES = (1, 3)  # differ from the export example's batch of 2: proves the batch is dynamic


class ParityError(MedrecError):
    """The exported model's outputs differ from PyTorch's by more than the tolerance."""


def load_fold(run_dir: str | Path, fold: str | int) -> tuple[torch.nn.Module, Checkpoint]:
    """(network in eval mode, checkpoint) of one fold of a run."""
    _, path = rf.fold_checkpoints(Path(run_dir), [str(fold)])[0]
    ckpt = rf.load_checkpoint(path)
    return rf.model_from_checkpoint(ckpt), ckpt


def metadata(run_dir: Path, ckpt: Checkpoint, fold: str) -> dict[str, Any]:
    """The JSON that travels with an exported network."""
    m = ckpt.meta
    cfg, names = m.experiment_config(), tuple(m.label_names)
    info = rf.read_info(run_dir) if (Path(run_dir) / rf.RUN_JSON).is_file() else {}
    thr = rf.thresholds(info, m.task, names)
    size, channels = cfg.data.image_size, cfg.model.in_channels
    return {
        "format": FORMAT, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run_name": cfg.name, "run_dir": str(run_dir), "fold": fold, "arch": cfg.model.arch,
        "task": m.task, "label_names": list(names), "num_outputs": int(m.num_outputs),
        "input": {"name": "image", "shape": ["batch", channels, size, size], "dtype": "float32", "layout": "NCHW",
                  "size": size, "channels": channels},
        "output": {"name": "logits", "shape": ["batch", int(m.num_outputs)],
                   "probabilities": "softmax over outputs" if m.task == "multiclass" else "sigmoid per output"},
        "threshold": thr.for_task(m.task), "threshold_source": "argmax" if m.task == "multiclass" else thr.source,
        "decision": {"binary": "positive if sigmoid(logit) >= threshold", "multiclass": "arg-max class",
                     "multilabel": "label positive if sigmoid(logit) >= threshold[label]"}[m.task],
        "preprocessing": rf.preprocessing_summary(cfg, m.normalization),
        "torch": torch.__version__,
    }


# ---------------------------------------------------------------- exporters

def export_onnx(model: torch.nn.Module, example: torch.Tensor, out: Path, meta: dict, exporter: str = "auto") -> str:
    """Write an ONNX file with a dynamic batch and `meta` embedded; return the exporter used.

    exporter: "dynamo" (torch.export; needs onnxscript), "legacy" (TorchScript-based,
    deprecated by PyTorch but needs nothing more), or "auto" (dynamo when onnxscript is installed).
    """
    import onnx

    if exporter == "auto":
        exporter = "dynamo" if importlib.util.find_spec("onnxscript") else "legacy"
    if exporter == "dynamo" and importlib.util.find_spec("onnxscript") is None:
        raise ConfigError("--exporter dynamo needs onnxscript: pip install onnxscript (or use --exporter legacy)")
    names = {"input_names": ["image"], "output_names": ["logits"], "opset_version": OPSET}
    out.parent.mkdir(parents=True, exist_ok=True)
    if exporter == "dynamo":
        batch = torch.export.Dim("batch", min=1, max=4096)
        torch.onnx.export(model, (example,), str(out), dynamo=True, dynamic_shapes=({0: batch},), verbose=False,
                          external_data=False, **names)
    elif exporter == "legacy":
        with warnings.catch_warnings():
            # Only around this call: PyTorch announces the TorchScript-based exporter's removal.
            warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning))
            torch.onnx.export(model, (example,), str(out), dynamo=False,
                              dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, **names)
    else:
        raise ConfigError(f"--exporter {exporter} unknown; valid: auto, dynamo, legacy")
    proto = onnx.load(str(out))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "medrec", json.dumps(meta, sort_keys=True)
    onnx.checker.check_model(proto)
    atomic_write_bytes(out, proto.SerializeToString())  # the exporter wrote `out`; the final file appears whole
    return exporter


def onnx_runner(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: session.run(["logits"], {"image": x})[0]


def export_torchscript(model: torch.nn.Module, example: torch.Tensor, out: Path, meta: dict) -> str:
    """Write a traced TorchScript module with `medrec.json` as an extra file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # Only around this call: PyTorch marks torch.jit as deprecated in favour of torch.export.
        warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning))
        traced = torch.jit.trace(model, example)
        extra = {"medrec.json": json.dumps(meta, sort_keys=True)}
        atomic_write_bytes(out, lambda f: torch.jit.save(traced, f, _extra_files=extra))
    return "torch.jit.trace"


def torchscript_runner(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning))
        module = torch.jit.load(str(path), map_location="cpu").eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()

    return run


# ---------------------------------------------------------------- the job

def parity(model: torch.nn.Module, run: Callable[[np.ndarray], np.ndarray], channels: int, size: int,
           *, seed: int = 0) -> dict[str, float]:
    """Compare the exported model with PyTorch on random N(0, 1) batches of CHECK_BATCHES sizes.

    Returns max_abs_diff (exported vs PyTorch float32 logits), max_abs_logit, and
    float32_noise: PyTorch float32 vs the same network in float64 on the same inputs, i.e.
    the rounding error any float32 runtime has; a difference far above it is a real mismatch.
    """
    gen = torch.Generator().manual_seed(seed)
    exact = copy.deepcopy(model).double()
    out = {"max_abs_diff": 0.0, "max_abs_logit": 0.0, "float32_noise": 0.0}
    for n in CHECK_BATCHES:
        x = torch.randn(n, channels, size, size, generator=gen)
        with torch.inference_mode():
            ref, ref64 = model(x).numpy(), exact(x.double()).numpy()
        got = np.asarray(run(x.numpy()))
        if got.shape != ref.shape:
            raise ParityError(f"exported model returned shape {got.shape} for a batch of {n}; PyTorch {ref.shape}")
        for key, value in (("max_abs_diff", np.abs(got - ref).max()), ("max_abs_logit", np.abs(ref).max()),
                           ("float32_noise", np.abs(ref - ref64).max())):
            out[key] = max(out[key], float(value))
    return out


def export(run_dir: str | Path, fold: str | int, fmt: str, out: str | Path | None = None, *,
           atol: float = 1e-4, exporter: str = "auto") -> dict[str, Any]:
    """Export one fold, check it against PyTorch, write the sidecar JSON; return that JSON.

    Raises:
        ConfigError: unknown format or exporter. CheckpointError: no such fold.
        ParityError: the exported model differs by more than `atol` (files are kept for inspection).
    """
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt} unknown; valid: {', '.join(FORMATS)}")
    run_dir = Path(run_dir).resolve()
    model, ckpt = load_fold(run_dir, fold)
    fold_name = f"fold_{fold}" if str(fold).isdigit() else str(fold)
    out = Path(out) if out else run_dir / "export" / f"{fold_name}{FORMATS[fmt]}"
    meta = metadata(run_dir, ckpt, fold_name)
    c, s = meta["input"]["channels"], meta["input"]["size"]
    example = torch.randn(2, c, s, s, generator=torch.Generator().manual_seed(1))
    if fmt == "onnx":
        meta["exporter"], meta["opset"] = export_onnx(model, example, out, meta, exporter), OPSET
        run = onnx_runner(out)
    else:
        meta["exporter"] = export_torchscript(model, example, out, meta)
        run = torchscript_runner(out)
    check = parity(model, run, c, s)
    diff = check["max_abs_diff"]
    meta["parity"] = {**check, "atol": atol, "batch_sizes": list(CHECK_BATCHES), "inputs": "random N(0, 1) tensors",
                      "runtime": "onnxruntime CPU" if fmt == "onnx" else "torch.jit", "passed": diff <= atol}
    meta["file"] = str(out)
    atomic_write_json(sidecar_path(out), meta)
    if diff > atol:
        raise ParityError(
            f"{out}: exported model differs from PyTorch by up to {diff:.3g} (> --atol {atol:g}); PyTorch's own "
            f"float32 rounding on these inputs is {check['float32_noise']:.3g} (vs float64). A difference far above "
            "that is a real mismatch; one of its size is rounding (raise --atol). Files kept for inspection.")
    return meta


def sidecar_path(out: Path) -> Path:
    return out.with_name(out.name + ".json")


# ---------------------------------------------------------------- CLI

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m medrec.export", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="example:\n  python -m medrec.export --run runs/chest_xray --fold 0 --format onnx")
    p.add_argument("--run", type=Path, required=True, help="run folder written by medrec.finetune")
    p.add_argument("--fold", required=True, help="fold number (or fold folder name, e.g. repeat_1_fold_0)")
    p.add_argument("--format", choices=tuple(FORMATS), required=True)
    p.add_argument("--out", type=Path, help="output file (default RUN/export/fold_<K>.onnx|.pt)")
    p.add_argument("--atol", type=float, default=1e-4, help="largest accepted |exported - PyTorch| logit difference")
    p.add_argument("--exporter", choices=("auto", "dynamo", "legacy"), default="auto",
                   help="ONNX exporter (auto: dynamo when onnxscript is installed, else legacy)")
    return p.parse_args(argv)


@handle_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        meta = export(args.run, args.fold, args.format, args.out, atol=args.atol, exporter=args.exporter)
    except ParityError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_MISMATCH
    p = meta["parity"]
    print(f"exported {meta['arch']} {meta['fold']} -> {meta['file']} ({meta['exporter']}); "
          f"max |exported - PyTorch| = {p['max_abs_diff']:.3g} on batches {p['batch_sizes']} (atol {p['atol']:g}; "
          f"float32 rounding {p['float32_noise']:.3g}); "
          f"metadata: {sidecar_path(Path(meta['file']))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
