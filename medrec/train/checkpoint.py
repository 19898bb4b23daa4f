"""Checkpoints: atomic writes, safe loads, and rebuilding a model from a checkpoint alone."""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medrec.errors import CheckpointError
from medrec.fileio import atomic_write_bytes

FORMAT = "medrec-checkpoint/1"


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write a checkpoint atomically (temporary file + rename)."""
    payload = {"format": FORMAT, **payload}
    atomic_write_bytes(Path(path), lambda f: torch.save(payload, f))


def load_checkpoint(path: Path | str) -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True`: a pickle that would run code is refused.

    Raises:
        CheckpointError: the file is missing, unsafe, truncated or not a medrec checkpoint.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused to load: it holds objects other than tensors and plain data, which could "
            f"run code when unpickled ({str(exc).splitlines()[0]}). Only load checkpoints you trust and "
            "that medrec wrote."
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"{path}: cannot be read (truncated or not a torch file): {exc}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a medrec checkpoint (format {ckpt.get('format') if isinstance(ckpt, dict) else type(ckpt).__name__})")
    return ckpt


def rng_state() -> dict[str, Any]:
    """RNG states as plain data (weights_only-loadable)."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": _tuple_to_list(random.getstate()),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    random.setstate(_list_to_tuple(state["python"]))


def _tuple_to_list(x):
    return [_tuple_to_list(v) for v in x] if isinstance(x, tuple) else x


def _list_to_tuple(x):
    return tuple(_list_to_tuple(v) for v in x) if isinstance(x, list) else x


def rebuild_model(ckpt: dict[str, Any]) -> torch.nn.Module:
    """The exact model a checkpoint was trained as, with its weights, in eval mode.

    Built with `weights: none` (nothing to download) and then loaded strictly.
    """
    from medrec.models.build import rebuild_model as rebuild

    return rebuild(ckpt["config"]["model"], ckpt["model"], int(ckpt["num_outputs"])).eval()
