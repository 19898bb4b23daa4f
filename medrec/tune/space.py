"""The `tune:` section of an experiment config: search space, budget and the tuned-from marker.

Pure data (pydantic only, no torch, no optuna), so `medrec.config` can hold it as a field.
The YAML form of a search space names config keys by their dotted path:

    tune:
      trials: 20
      folds: 3                      # CV folds of the objective (default: cv.folds)
      space:
        train.lr: {log_uniform: [1.0e-4, 1.0e-2]}
        train.weight_decay: {log_uniform: [1.0e-6, 1.0e-3]}
        train.epochs: {int: [4, 12]}
        data.augment: {choice: [light, cxr]}
        data.image_size: {choice: [64, 128]}
        model.arch: {choice: [resnet18, resnet34]}

Every key is checked against the experiment config's own fields when the config loads, so a typo
fails like any other config error, naming the key and the valid ones. Keys that change which data
the objective is computed on (data.manifest, cv.*, seed, ...) cannot be searched: trials would no
longer be comparable.
"""

from __future__ import annotations

import difflib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

KINDS = ("uniform", "log_uniform", "int", "log_int", "choice")
SEARCHABLE_SECTIONS = ("data", "model", "train")
# data keys that define *which* data (and labels) a trial sees, or only where it is cached
FIXED_DATA_KEYS = ("source", "manifest", "root", "split", "val_split", "task", "label_columns", "class_names",
                   "patient_column", "image_column", "cache", "cache_dir", "skip_bad_images", "uncertain_policy")
Primitive = bool | int | float | str | None


class Param(BaseModel):
    """One searched key: `{log_uniform: [a, b]}`, `{uniform: ...}`, `{int: [a, b]}`, `{log_int: ...}`
    or `{choice: [v1, v2, ...]}`; ints may add `step: k`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["uniform", "log_uniform", "int", "log_int", "choice"]
    low: float | None = None
    high: float | None = None
    step: int | None = Field(None, ge=1)
    choices: tuple[Primitive, ...] | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_yaml(cls, v: Any) -> Any:
        if not isinstance(v, dict) or "kind" in v:
            return v
        kinds = [k for k in v if k in KINDS]
        extra = [k for k in v if k not in (*KINDS, "step")]
        if len(kinds) != 1 or extra:
            raise ValueError(f"write one of {', '.join(KINDS)} (e.g. {{log_uniform: [1.0e-4, 1.0e-2]}}, "
                             f"{{choice: [resnet18, resnet34]}}), got keys {sorted(v)}")
        kind, arg = kinds[0], v[kinds[0]]
        if kind == "choice":
            if not isinstance(arg, (list, tuple)) or not arg:
                raise ValueError(f"choice needs a non-empty list of values, got {arg!r}")
            return {"kind": kind, "choices": tuple(arg), **({"step": v["step"]} if "step" in v else {})}
        if not isinstance(arg, (list, tuple)) or len(arg) != 2:
            raise ValueError(f"{kind} needs [low, high], got {arg!r}")
        return {"kind": kind, "low": arg[0], "high": arg[1], **({"step": v["step"]} if "step" in v else {})}

    @model_validator(mode="after")
    def _check(self) -> "Param":
        if self.kind == "choice":
            if self.step is not None:
                raise ValueError("step only applies to int and log_int")
            return self
        low, high = self.low, self.high
        if low is None or high is None or low >= high:
            raise ValueError(f"{self.kind} [{low}, {high}] is empty; write it as [low, high] with low < high")
        if self.kind.startswith("log") and low <= 0:
            raise ValueError(f"{self.kind} needs low > 0, got {low}")
        if self.kind in ("int", "log_int") and (low != int(low) or high != int(high)):
            raise ValueError(f"{self.kind} bounds must be whole numbers, got [{low}, {high}]")
        if self.step is not None and self.kind != "int":
            raise ValueError("step only applies to int (optuna cannot combine step with a log scale)")
        return self

    @model_serializer
    def _to_yaml(self) -> dict[str, Any]:
        if self.kind == "choice":
            return {"choice": list(self.choices or ())}
        bounds = [int(self.low), int(self.high)] if self.kind in ("int", "log_int") else [self.low, self.high]
        return {self.kind: bounds, **({"step": self.step} if self.step else {})}

    def candidates(self) -> list[Any]:
        """Values that must all make a valid config: the bounds, or every choice."""
        if self.kind == "choice":
            return list(self.choices or ())
        if self.kind in ("int", "log_int"):
            return [int(self.low), int(self.high)]
        return [self.low, self.high]


class TunedFrom(BaseModel):
    """Written by `medrec tune` into the best config; reports show it so nobody mistakes the tuned
    configuration's cross-validated score on the same folds for an unbiased estimate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    study: str  # the study's run folder
    trials: int  # finished trials (complete + pruned + failed)
    best_trial: int
    best_value: float
    objective: str  # e.g. "pooled out-of-fold AUROC, 3-fold patient-grouped CV (seed 0) of the training data"
    data: str  # data.manifest the study was run on
    folds: int
    seed: int

    def summary(self) -> str:
        """One line for report headers."""
        return (f"yes: medrec tune, best of {self.trials} trials (trial {self.best_trial}, {self.best_value:.4f}) "
                f"on {self.objective}; data {self.data}. Cross-validation on the same folds and seed is "
                "optimistic for this config: judge it by nested CV or a held-out test set")


class TuneConfig(BaseModel):
    """`medrec tune`: what to search, with how many trials, and (in a tuned config) where it came from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    space: dict[str, Param] = {}
    trials: int = Field(20, ge=1)  # default of --trials
    timeout_min: float | None = Field(None, gt=0)  # no new trial starts after this many minutes
    folds: int | None = Field(None, ge=2)  # CV folds of the objective (default: cv.folds)
    startup_trials: int = Field(5, ge=1)  # random trials before TPE models the results
    prune: bool = True  # MedianPruner on the per-fold objective
    tuned_from: TunedFrom | None = None

    @field_validator("space")
    @classmethod
    def _check_keys(cls, v: dict[str, Param]) -> dict[str, Param]:
        for key in v:
            check_key(key)
        return v


def check_key(key: str) -> None:
    """Raise ValueError unless `key` (e.g. 'train.lr') names a searchable field of ExperimentConfig."""
    from medrec.config import ExperimentConfig  # at call time: medrec.config imports this module

    parts = key.split(".")
    if parts[0] not in SEARCHABLE_SECTIONS or len(parts) < 2:
        raise ValueError(f"'{key}' cannot be searched; keys start with {', '.join(SEARCHABLE_SECTIONS)} "
                         "(e.g. train.lr, data.augment, model.arch)")
    if parts[0] == "data" and parts[1] in FIXED_DATA_KEYS:
        raise ValueError(f"'{key}' cannot be searched: it changes which data the objective is computed on")
    model: type[BaseModel] = ExperimentConfig
    for i, part in enumerate(parts):
        fields = model.model_fields
        if part not in fields:
            holder = ".".join(parts[:i]) or "the config"
            near = difflib.get_close_matches(part, list(fields), n=1)
            hint = f" (did you mean '{'.'.join([*parts[:i], near[0]])}'?)" if near else ""
            raise ValueError(f"unknown key '{key}'{hint}; valid keys of {holder}: {', '.join(sorted(fields))}")
        if i < len(parts) - 1:
            sub = _section_class(fields[part].annotation)
            if sub is None:
                raise ValueError(f"'{'.'.join(parts[:i + 1])}' is a value, not a section; search it as a whole")
            model = sub


def _section_class(annotation: Any) -> type[BaseModel] | None:
    members = getattr(annotation, "__args__", None) or (annotation,)
    found = [a for a in members if isinstance(a, type) and issubclass(a, BaseModel)]
    return found[0] if found else None
