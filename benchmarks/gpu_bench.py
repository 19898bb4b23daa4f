"""GPU training throughput: bf16 autocast + channels_last + torch.compile against fp32 eager.

For each network (medrec's build: 1-channel stem, 1 output, random init) it times training
steps (forward, BCE loss incl. Inception's aux head, backward, AdamW step) on synthetic
batches already on the device, after warm-up steps (which absorb torch.compile's compilation),
with torch.cuda.synchronize() around the timed steps, and prints a table of images/s and the
speed-up of the fast setting over fp32 eager. Called by benchmarks/gpu_check.sh.

    python benchmarks/gpu_bench.py                         # resnet50@224, inception_v3@299, batch 256
    python benchmarks/gpu_bench.py --cases resnet50:224 --batch 128 --steps 20 --json out.json
    python benchmarks/gpu_bench.py --device cpu --batch 2 --steps 1 --warmup 1 --modes fp32-eager   # smoke test
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODES = {  # name -> (autocast dtype or None, channels_last, compile)
    "fp32-eager": (None, False, False),
    "bf16-eager": (torch.bfloat16, False, False),
    "bf16+channels_last": (torch.bfloat16, True, False),
    "bf16+channels_last+compile": (torch.bfloat16, True, True),
}


def build(arch: str, device: torch.device) -> nn.Module:
    from medrec.config import ModelConfig
    from medrec.models.build import build_model

    model, _ = build_model(ModelConfig(arch=arch, weights="none", in_channels=1), num_outputs=1)
    return model.to(device)


def bench(arch: str, size: int, batch: int, mode: str, device: torch.device, warmup: int, steps: int) -> dict:
    from medrec.models.build import split_outputs

    dtype, channels_last, compiled = MODES[mode]
    torch.manual_seed(0)
    model = build(arch, device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    step_model = torch.compile(model) if compiled else model
    x = torch.randn(batch, 1, size, size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 2, (batch, 1), device=device).float()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits, aux = split_outputs(step_model(x))
            loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), y)
            for a in aux:
                loss = loss + 0.4 * nn.functional.binary_cross_entropy_with_logits(a.float(), y)
        loss.backward()
        opt.step()

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    sync()
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    del model, step_model, opt, x, y
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"arch": arch, "image_size": size, "batch": batch, "mode": mode, "images_per_s": batch * steps / seconds,
            "warmup_s": warm_s, "peak_gib": peak}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", nargs="+", default=["resnet50:224", "inception_v3:299"], help="ARCH:SIZE ...")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--warmup", type=int, default=5, help="untimed steps (include torch.compile's compilation)")
    p.add_argument("--steps", type=int, default=15, help="timed steps")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument("--device", default="cuda")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print("gpu_bench: no CUDA device here; nothing measured (use --device cpu for a smoke test)")
            return 0
        torch.backends.cudnn.benchmark = True
        print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}, "
              f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
    rows = []
    for case in args.cases:
        arch, size = case.split(":")
        for mode in args.modes:
            try:
                r = bench(arch, int(size), args.batch, mode, device, args.warmup, args.steps)
            except (RuntimeError, torch.OutOfMemoryError) as exc:  # OOM or a compile failure: say so, go on
                r = {"arch": arch, "image_size": int(size), "batch": args.batch, "mode": mode,
                     "images_per_s": None, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"}
            rows.append(r)
            print(f"  {arch}@{size} {mode}: "
                  + (f"{r['images_per_s']:.0f} images/s" if r["images_per_s"] else r.get("error", "")), flush=True)
    base = {(r["arch"], r["image_size"]): r["images_per_s"] for r in rows if r["mode"] == "fp32-eager"}
    print(f"\n| network | input | batch | setting | images/s | vs fp32 eager | peak GiB | warm-up s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        b = base.get((r["arch"], r["image_size"]))
        ips = r["images_per_s"]
        ratio = f"{ips / b:.2f}x" if ips and b else "-"
        peak = f"{r['peak_gib']:.1f}" if r.get("peak_gib") is not None else "-"
        print(f"| {r['arch']} | {r['image_size']} px | {r['batch']} | {r['mode']} | "
              f"{f'{ips:.0f}' if ips else r.get('error', '-')} | {ratio} | {peak} | {r.get('warmup_s', 0):.0f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
