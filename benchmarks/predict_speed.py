"""Batch inference speed on CPU: medrec.predict's inference path vs a bare torchvision eval loop.

Both run ResNet-18 (1 input channel, 1 output, random weights) on the same preprocessed
224 px tensors in batches of 32: medrec through `medrec.predict.predict_batches` (inference
mode, autocast/channels-last switches, probabilities, per-model stacking, numpy output), the
baseline as `torchvision.models.resnet18` with the same weights in a plain
`with torch.inference_mode(): model(x)` loop. Repeats alternate between the two and the best
time of each is kept, so background load hurts both alike.

    python benchmarks/predict_speed.py [--batches 6] [--repeats 3] [--threads N] [--channels-last]
"""

from __future__ import annotations

import argparse
import time

import torch
import torchvision

from medrec.config import ModelConfig
from medrec.models.build import build_model
from medrec.predict import predict_batches

SIZE, BATCH = 224, 32


def bare_loop(model: torch.nn.Module, batches: list[torch.Tensor]) -> list[torch.Tensor]:
    with torch.inference_mode():
        return [model(x) for x in batches]


def medrec_path(model: torch.nn.Module, batches: list[torch.Tensor], channels_last: bool):
    return predict_batches([model], batches, "binary", device=torch.device("cpu"), channels_last=channels_last)


def best_time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=6, help="batches of 32 per timed pass")
    p.add_argument("--repeats", type=int, default=3, help="timed passes of each (best kept)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--channels-last", action="store_true", help="medrec path with channels-last tensors")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, _ = build_model(ModelConfig(arch="resnet18", weights="none"), num_outputs=1)
    model.eval()
    bare = torchvision.models.resnet18(num_classes=1)
    bare.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    bare.load_state_dict(model.state_dict())
    bare.eval()
    batches = [torch.randn(BATCH, 1, SIZE, SIZE) for _ in range(args.batches)]
    # Same numbers from both paths before timing anything.
    scores, _, _ = medrec_path(model, batches[:1], False)
    ref = torch.sigmoid(bare_loop(bare, batches[:1])[0]).numpy()
    assert abs(scores[0] - ref).max() < 1e-5, "medrec and torchvision disagree"
    bare_loop(bare, batches[:1])  # warm-up of both
    t_bare, t_medrec = float("inf"), float("inf")
    for _ in range(args.repeats):
        t_bare = min(t_bare, best_time(lambda: bare_loop(bare, batches)))
        t_medrec = min(t_medrec, best_time(lambda: medrec_path(model, batches, args.channels_last)))
    n = BATCH * args.batches
    print(f"ResNet-18, {SIZE} px, batch {BATCH}, {n} images per pass, best of {args.repeats}, "
          f"{torch.get_num_threads()} thread(s), torch {torch.__version__}")
    print(f"bare torchvision loop : {n / t_bare:8.2f} images/s")
    print(f"medrec.predict path   : {n / t_medrec:8.2f} images/s" + (" (channels-last)" if args.channels_last else ""))
    print(f"ratio medrec / bare   : {t_bare / t_medrec:8.3f}")


if __name__ == "__main__":
    main()
