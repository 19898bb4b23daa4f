"""Training speed: medrec's real training path against a bare PyTorch loop, in one process.

(a) medrec: `medrec.train.fold._setup` / `_train_loader` / `medrec.train.loop.train_one_epoch`
    over a FoldDataset on the in-memory CacheDataset, through MONAI's DataLoader, with the
    config's augmentation, loss, AdamW and per-batch scheduler: exactly what a fold trains with.
(b) bare:   the same torchvision network (1-channel stem, 1 output), batches sliced from a tensor
    already in memory, BCE loss, loss.backward(), optimizer.step(). No augmentation, no scheduler.

Both see the same images (the cache (a) builds), batch size, image size and thread count. The
two are timed in alternating rounds (a b b a a b ...) so that load from other processes hits
both alike; the figure that matters is the ratio medrec/bare, not the absolute images/s.
`--profile` adds a torch.profiler table of one medrec round and the time of the loader alone.

    python benchmarks/train_speed.py                      # ResNet-18 @128 and ResNet-50 @224
    python benchmarks/train_speed.py --cases resnet18:128 --rounds 6 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def medrec_setup(config: Path, arch: str, size: int, batch: int, n_train: int, augment: str, workers: int,
                 overrides: list[str]):
    """The objects one medrec fold trains with, over the first `n_train` images of the manifest."""
    from medrec.config import load_config
    from medrec.data.datasets import build_base_dataset
    from medrec.data.sources import load_source
    from medrec.data.splits import Split
    from medrec.models.adapt import normalization
    from medrec.models.specs import get_spec
    from medrec.train.fold import FoldContext, _setup

    cfg = load_config(config, [f"model.arch={arch}", f"data.image_size={size}", f"train.batch_size={batch}",
                               "model.weights=none", "model.allow_random_init=false", f"data.augment={augment}",
                               f"data.num_workers={workers}", "data.cache=memory", *overrides])
    manifest = load_source(cfg.data, ROOT)  # paths in configs/ are relative to the project root
    tmp = Path(tempfile.mkdtemp(prefix="medrec_speed_"))
    base, errors = build_base_dataset(manifest, cfg.data, tmp / "cache", progress=False)
    ok = np.array([i for i in range(len(manifest.table)) if i not in {j for j, _ in errors}])
    if len(ok) < n_train:  # few sample images: repeat them; the cost per image is what is measured
        ok = np.resize(ok, n_train)
    spec = get_spec(arch)
    mean, std = normalization(spec, cfg.model.in_channels)
    ctx = FoldContext(cfg, manifest, base, tmp, torch.device("cpu"), {"mean": list(mean), "std": list(std)},
                      spec.to_dict(), {}, model_cfg=cfg.model)
    split = Split(0, 0, ok[:n_train], ok[:batch])
    model, optimizer, scheduler, loss_fn, train_ds, _ = _setup(ctx, split)
    return cfg, ctx, model, optimizer, scheduler, loss_fn, train_ds


def bare_setup(arch: str, medrec_model: nn.Module, images: torch.Tensor, labels: torch.Tensor, lr: float):
    """torchvision's network with the same 1-channel stem and 1-output head, plain AdamW."""
    import torchvision

    net = getattr(torchvision.models, arch)(weights=None, num_classes=1)
    old = net.conv1
    net.conv1 = nn.Conv2d(images.shape[1], old.out_channels, old.kernel_size, old.stride, old.padding, bias=False)
    n_bare = sum(p.numel() for p in net.parameters())
    n_medrec = sum(p.numel() for p in medrec_model.parameters())
    assert n_bare == n_medrec, f"bare {n_bare} vs medrec {n_medrec} parameters: not the same network"
    return net, torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)


def cached_tensors(ctx, train_ds) -> tuple[torch.Tensor, torch.Tensor]:
    """The cached images of the training set as one normalised float32 tensor (what (b) trains on)."""
    mean = torch.tensor(ctx.norm["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(ctx.norm["std"]).view(1, -1, 1, 1)
    xs = [torch.as_tensor(np.asarray(ctx.base[int(i)]["image"]), dtype=torch.float32) for i in train_ds.indices]
    x = (torch.stack(xs) - mean) / std
    y = torch.as_tensor(ctx.manifest.labels[train_ds.indices], dtype=torch.float32).view(len(xs), -1)
    return x.contiguous(), y


def round_medrec(state, seed: int) -> tuple[int, float]:
    from medrec.train.fold import _train_loader
    from medrec.train.loop import train_one_epoch

    cfg, ctx, model, optimizer, scheduler, loss_fn, train_ds = state
    t0 = time.perf_counter()
    loader = _train_loader(ctx, train_ds, seed)  # built every epoch in a real fold too
    stats = train_one_epoch(model, loader, optimizer, scheduler, loss_fn, cfg.train, device=ctx.device,
                            aux_weight=cfg.model.aux_weight)
    seconds = time.perf_counter() - t0
    n = round(stats["images_per_s"] * stats["seconds"])
    return n, seconds


def round_bare(net, opt, x, y, batch: int, seed: int) -> tuple[int, float]:
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    net.train()
    perm = torch.randperm(len(x), generator=g)
    n = 0
    for s in range(0, len(x) - batch + 1, batch):
        idx = perm[s:s + batch]
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.binary_cross_entropy_with_logits(net(x[idx]), y[idx])
        loss.backward()
        opt.step()
        n += len(idx)
    return n, time.perf_counter() - t0


def loader_alone(state, seed: int) -> float:
    """Seconds per batch spent producing batches (no model): the data cost a 0-worker loop pays in series."""
    from medrec.train.fold import _train_loader

    _, ctx, *_, train_ds = state
    t0 = time.perf_counter()
    nb = sum(1 for _ in _train_loader(ctx, train_ds, seed))
    return (time.perf_counter() - t0) / max(nb, 1)


def profile_medrec(state, seed: int, rows: int = 18) -> str:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        round_medrec(state, seed)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def bench_case(args, arch: str, size: int) -> dict:
    n_train = args.batch * args.batches
    state = medrec_setup(args.config, arch, size, args.batch, n_train, args.augment, args.workers, args.set)
    variants = {"medrec": state}
    if args.augment != "none" and not args.no_noaug:
        variants["medrec (augment none)"] = medrec_setup(args.config, arch, size, args.batch, n_train, "none",
                                                         args.workers, args.set)
    x, y = cached_tensors(state[1], state[6])
    net, opt = bare_setup(arch, state[2], x, y, state[0].train.lr)
    runners = {name: (lambda seed, s=s: round_medrec(s, seed)) for name, s in variants.items()}
    runners["bare"] = lambda seed: round_bare(net, opt, x, y, args.batch, seed)
    names = list(runners)
    for name in names:  # warm-up: allocator, oneDNN kernel choice, first-touch of the cache
        runners[name](10_000)
    times = {name: [0, 0.0] for name in names}
    per_round = {name: [] for name in names}
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]  # a b / b a: drift in load cancels
        for name in order:
            n, s = runners[name](r)
            times[name][0] += n
            times[name][1] += s
            per_round[name].append(n / s)
    ips = {name: n / s for name, (n, s) in times.items()}
    out = {"arch": arch, "image_size": size, "batch_size": args.batch, "batches_per_round": args.batches,
           "rounds": args.rounds, "augment": args.augment, "num_workers": args.workers,
           "threads": torch.get_num_threads(), "images_per_s": ips,
           "images_per_s_by_round": per_round,
           "ratio_medrec_to_bare": ips["medrec"] / ips["bare"],
           "load_after": load_avg()}
    if "medrec (augment none)" in ips:
        out["ratio_medrec_noaug_to_bare"] = ips["medrec (augment none)"] / ips["bare"]
    # Each round runs the variants back to back, so a per-round ratio sees nearly the same load;
    # its median is the estimate least moved by load from other processes.
    for name in names[:-1]:
        paired = np.asarray(per_round[name]) / np.asarray(per_round["bare"])
        out.setdefault("paired_ratio_median", {})[name] = float(np.median(paired))
        out.setdefault("paired_ratio_range", {})[name] = [float(paired.min()), float(paired.max())]
    out["loader_alone_s_per_batch"] = loader_alone(state, 777)
    out["bare_s_per_batch"] = args.batch / ips["bare"]
    # What the ratio would be if the only cost medrec added were producing its batches in series.
    out["expected_ratio_from_loader"] = out["bare_s_per_batch"] / (out["bare_s_per_batch"] + out["loader_alone_s_per_batch"])
    if args.profile:
        out["profile"] = profile_medrec(state, 888)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=ROOT / "configs/chest_xray.yaml",
                   help="config whose data (and loss, optimiser, schedule) medrec trains with")
    p.add_argument("--cases", nargs="+", default=["resnet18:128", "resnet50:224"], help="ARCH:IMAGE_SIZE ...")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--batches", type=int, default=3, help="batches per timed round")
    p.add_argument("--rounds", type=int, default=4, help="timed rounds per variant (after one warm-up round)")
    p.add_argument("--augment", default="light", choices=["none", "light", "standard"])
    p.add_argument("--no-noaug", action="store_true", help="skip the medrec variant without augmentation")
    p.add_argument("--workers", type=int, default=0, help="data.num_workers for medrec's loader")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config overrides")
    p.add_argument("--profile", action="store_true", help="torch.profiler table of one medrec round")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads; "
          f"load average {load_avg()}")
    load_before = load_avg()
    results = []
    for case in args.cases:
        arch, size = case.split(":")
        res = bench_case(args, arch, int(size))
        results.append(res)
        print(f"\n{arch} @ {size} px, batch {args.batch}, {args.batches} batches x {args.rounds} rounds, "
              f"augment {args.augment}, workers {args.workers} (load after: {res['load_after']})")
        for name, v in res["images_per_s"].items():
            spread = np.asarray(res["images_per_s_by_round"][name])
            print(f"  {name:<24}{v:8.2f} images/s   (rounds: {spread.min():.2f}-{spread.max():.2f})")
        print(f"  ratio medrec / bare:    {res['ratio_medrec_to_bare']:.3f}"
              + (f"   (augment none: {res['ratio_medrec_noaug_to_bare']:.3f})"
                 if "ratio_medrec_noaug_to_bare" in res else ""))
        for name, med in res["paired_ratio_median"].items():
            lo, hi = res["paired_ratio_range"][name]
            print(f"  per-round ratio {name} / bare: median {med:.3f} (range {lo:.3f}-{hi:.3f})")
        print(f"  loader alone: {res['loader_alone_s_per_batch'] * 1000:.1f} ms/batch; "
              f"bare step: {res['bare_s_per_batch'] * 1000:.1f} ms/batch; ratio expected from the loader's "
              f"cost in series: {res['expected_ratio_from_loader']:.3f}")
        if "profile" in res:
            print(res["profile"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"load_before": load_before,
                                         "torch": torch.__version__, "cpus": os.cpu_count(),
                                         "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
