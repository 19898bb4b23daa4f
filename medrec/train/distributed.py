"""PyTorch's own distributed engine, used when the process was started by torchrun.

Single-process runs go through the same calls: world size 1, rank 0, no wrapping.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as tdist


def init_from_env(device: torch.device) -> None:
    """Join the process group torchrun describes (NCCL on GPUs, gloo on CPU); no-op otherwise."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) < 2 or tdist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    tdist.init_process_group(backend=backend)


def world_size() -> int:
    return tdist.get_world_size() if tdist.is_initialized() else 1


def rank() -> int:
    return tdist.get_rank() if tdist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def local_device(requested: str) -> torch.device:
    """The device for this process: `train.device`, or under torchrun the GPU of LOCAL_RANK."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    return torch.device(requested)


def wrap_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    if world_size() < 2:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def barrier() -> None:
    if tdist.is_initialized():
        tdist.barrier()


def shutdown() -> None:
    if tdist.is_initialized():
        tdist.destroy_process_group()


def sync_buffers(model: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts buffers at the start of each forward pass, so after the last training step
    each rank still holds the statistics of its own last batch; evaluation and checkpoints
    must see one model.
    """
    if world_size() < 2:
        return
    for buf in unwrap(model).buffers():
        tdist.broadcast(buf, src=0)
