"""Fold checkpoints: typed metadata, safe loads, atomic saves and the model rebuilt from a file alone.

A checkpoint file (format "medrec-checkpoint/2") is a plain dict loadable with
`torch.load(weights_only=True)`:

    {"format": "medrec-checkpoint/2", "meta": CheckpointMeta.to_dict(), "model": state_dict,
     "train_state": TrainState.to_dict() or None}

`last.pt` carries the train state (optimizer, scheduler, AMP scaler, RNG states, best weights);
`best.pt` does not. Files of format "medrec-checkpoint/1" (one flat dict) are still read.
"""

from __future__ import annotations

import pickle
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medrec.errors import CheckpointError
from medrec.fileio import atomic_write_bytes

if TYPE_CHECKING:  # torch is imported where a checkpoint is saved or loaded: reports read run folders without it
    import torch

FORMAT = "medrec-checkpoint/2"
LEGACY_FORMAT = "medrec-checkpoint/1"


@dataclass
class CheckpointMeta:
    """What a fold model is: enough to rebuild it and to preprocess its inputs exactly."""

    task: str
    label_names: list[str]  # binary: the label column; multiclass: classes; multilabel: labels
    num_outputs: int
    normalization: dict[str, list[float]]  # {"mean": [...], "std": [...]} per input channel
    config: dict[str, Any]  # the resolved ExperimentConfig as a dict
    arch: dict[str, Any] = field(default_factory=dict)  # medrec.models.specs ArchSpec.to_dict()
    provenance: dict[str, Any] = field(default_factory=dict)  # initialisation, weights file and hash
    fold: int = 0
    repeat: int = 0
    epoch: int = -1  # last finished epoch (0-based)
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per epoch (history.csv)
    best: float | None = None  # monitored metric at best_epoch
    best_epoch: int = -1
    bad_epochs: int = 0
    selection: dict[str, Any] | None = None  # how the reported epoch was chosen (see train.fold)
    threshold: float | dict[str, float] | None = None  # unused by the folds: the run's is in run.json
    version: str = FORMAT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "checkpoint") -> CheckpointMeta:
        """Metadata from a dict (unknown keys ignored, required keys checked).

        Raises:
            CheckpointError: a required key is missing.
        """
        known = {f.name for f in fields(cls)}
        missing = [k for k in ("task", "label_names", "num_outputs", "normalization", "config") if k not in d]
        if missing:
            raise CheckpointError(f"{source}: checkpoint metadata lacks {', '.join(missing)}; not a medrec fold model")
        return cls(**{k: v for k, v in d.items() if k in known and k != "version"})

    def experiment_config(self):
        """The typed ExperimentConfig the fold was trained with."""
        from medrec.config import validate_config

        return validate_config(self.config, "checkpoint config")


@dataclass
class TrainState:
    """What last.pt adds to resume a fold exactly: optimiser, scheduler, AMP scaler and RNG states,
    and the best epoch's weights when early stopping keeps them (all plain data / tensors)."""

    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    scaler: dict[str, Any] | None = None
    rng: dict[str, Any] | None = None
    best_weights: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        # not asdict(): it would deep-copy every optimizer tensor
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainState:
        return cls(**{f.name: d.get(f.name) for f in fields(cls)})


@dataclass
class Checkpoint:
    """A loaded (or to-be-saved) checkpoint: metadata, weights and, for last.pt, the train state."""

    meta: CheckpointMeta
    model: dict[str, torch.Tensor]
    train_state: TrainState | None = None  # last.pt only

    def to_dict(self) -> dict[str, Any]:
        state = self.train_state.to_dict() if self.train_state is not None else None
        return {"format": FORMAT, "meta": self.meta.to_dict(), "model": self.model, "train_state": state}

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "checkpoint") -> Checkpoint:
        """From the file's dict, either format; a flat dict without "format" is taken as format 1."""
        fmt = d.get("format", LEGACY_FORMAT)
        if fmt == FORMAT:
            state = d.get("train_state")
            return cls(CheckpointMeta.from_dict(d["meta"], source), d["model"],
                       TrainState.from_dict(state) if state is not None else None)
        if fmt == LEGACY_FORMAT:  # one flat dict: metadata, weights and train state side by side
            state = TrainState.from_dict(d) if d.get("optimizer") else None
            return cls(CheckpointMeta.from_dict(d, source), d["model"], state)
        raise CheckpointError(f"{source}: checkpoint format {fmt!r} is not supported by this medrec "
                              f"(supported: {FORMAT}, {LEGACY_FORMAT}); use the medrec version that wrote it")


def save_checkpoint(path: str | Path, ckpt: Checkpoint | dict[str, Any]) -> None:
    """Write a checkpoint atomically (temporary file + fsync + rename); a dict goes through from_dict."""
    if isinstance(ckpt, dict):
        ckpt = Checkpoint.from_dict(ckpt, str(path))
    import torch

    data = ckpt.to_dict()
    atomic_write_bytes(Path(path), lambda f: torch.save(data, f))


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load a checkpoint with `weights_only=True`: a pickle that would run code is refused.

    Raises:
        CheckpointError: the file is missing, unsafe, truncated, not a medrec checkpoint or of an
            unknown format version.
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused to load: it holds objects other than tensors and plain data, which could "
            f"run code when unpickled ({str(exc).splitlines()[0]}). Only load checkpoints you trust and "
            "that medrec wrote."
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"{path}: cannot be read (truncated or not a torch file): {exc}") from None
    if not isinstance(raw, dict) or "format" not in raw:
        what = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise CheckpointError(f"{path}: not a medrec checkpoint (format {what})")
    return Checkpoint.from_dict(raw, str(path))


def model_from_checkpoint(ckpt: Checkpoint) -> torch.nn.Module:
    """The exact model a checkpoint was trained as, with its weights, in eval mode
    (medrec.models.build.rebuild_model: built with `weights: none`, then loaded strictly)."""
    from medrec.models.build import rebuild_model

    return rebuild_model(ckpt.meta.config["model"], ckpt.model, int(ckpt.meta.num_outputs)).eval()
