"""Running a network for scores: mixed precision and logits -> probabilities (training and inference share them)."""

from __future__ import annotations

import contextlib

import torch


def scores_from_logits(logits: torch.Tensor, task: str) -> torch.Tensor:
    """Probabilities: softmax over classes for multiclass, sigmoid per output otherwise."""
    return logits.softmax(dim=1) if task == "multiclass" else logits.sigmoid()


def autocast_context(device: torch.device, amp: str):
    """torch.autocast for "bf16" / "fp16", or a no-op context for "none"."""
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
