"""RNG state as plain data for resumable checkpoints; the checkpoint format is medrec.runfolder.checkpoint."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from medrec.runfolder.checkpoint import (  # noqa: F401  (old import path)
    FORMAT,
    Checkpoint,
    CheckpointMeta,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)


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
