"""Typed experiment config: YAML -> frozen pydantic models.

`load_config(path, overrides)` is the one way a config enters medrec. Unknown keys and wrong
types fail here, before any work starts, with the key path and the valid keys or type.
Each builder receives only its own section (`build_model(cfg.model)`, ...).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medrec.errors import ConfigError

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "googlenet", "inception_v3")
WINDOW_PRESETS = ("lung", "mediastinum", "bone", "brain", "soft_tissue", "abdomen")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    """Where the images and labels come from and how they are preprocessed."""

    source: Literal["manifest", "folder", "medmnist", "nih", "chexpert", "rsna"] = "manifest"
    manifest: str | None = None  # manifest CSV, label CSV, class folder or npz, by `source`
    root: str | None = None  # image paths are relative to this (default: the manifest's folder)
    split: str = "train"  # medmnist: which split(s) to train on, e.g. "train" or "train+val"
    val_split: str | None = None  # medmnist: a fixed validation split, e.g. "val"
    task: Literal["binary", "multiclass", "multilabel"] = "binary"
    label_columns: tuple[str, ...] = ("label",)
    class_names: tuple[str, ...] | None = None  # multiclass: names of the integer labels
    patient_column: str = "patient_id"
    image_column: str = "path"
    image_size: int = Field(224, ge=16, le=1024)
    window: str | tuple[float, float] = "auto"  # auto | minmax | percentile | preset | [center, width]
    frame: int | None = None  # multi-frame: frame index (default: the middle one)
    augment: Literal["none", "light", "standard"] = "light"
    cache: Literal["none", "memory", "disk"] = "memory"
    cache_dir: str | None = None
    num_workers: int = Field(0, ge=0)
    pin_memory: bool = False
    persistent_workers: bool = False
    skip_bad_images: bool = True  # a long job never dies on one bad image unless asked to
    uncertain_policy: Literal["ignore", "zeros", "ones"] = "ignore"  # CheXpert -1 labels

    @field_validator("window")
    @classmethod
    def _check_window(cls, v: Any) -> Any:
        if isinstance(v, str) and v not in ("auto", "minmax", "percentile", *WINDOW_PRESETS):
            raise ValueError(
                f"'{v}' unknown; valid: auto, minmax, percentile, {', '.join(WINDOW_PRESETS)} "
                "or [center, width]"
            )
        return v


class ModelConfig(_Section):
    """Which network, how it is initialised and which parts train."""

    arch: str = "resnet18"
    in_channels: int = Field(1, ge=1, le=16)
    num_classes: int | None = None  # default: from the task and label columns
    weights: str = "imagenet"  # imagenet | none | path to a state dict
    allow_random_init: bool = False  # only with weights: imagenet, when they cannot be found
    freeze: str = "none"  # none | stem | backbone | until:<layer>
    unfreeze_after: int | None = None  # epochs after which everything trains
    backbone_lr_mult: float = Field(1.0, gt=0)
    aux_weight: float = Field(0.4, ge=0)
    aux_logits: bool = False  # GoogLeNet: keep its (untrained) auxiliary heads
    dropout: float = Field(0.0, ge=0, lt=1)

    @field_validator("arch")
    @classmethod
    def _check_arch(cls, v: str) -> str:
        if v not in ARCHS:
            raise ValueError(f"'{v}' unknown; valid: {', '.join(ARCHS)}")
        return v

    @field_validator("freeze")
    @classmethod
    def _check_freeze(cls, v: str) -> str:
        if v not in ("none", "stem", "backbone") and not v.startswith("until:"):
            raise ValueError(f"'{v}' unknown; valid: none, stem, backbone, until:<layer>")
        return v


class CVConfig(_Section):
    """Patient-grouped cross-validation."""

    folds: int = Field(5, ge=2)
    repeats: int = Field(1, ge=1)
    test_fraction: float = Field(0.0, ge=0, lt=1)  # patient-disjoint held-out test set
    split_column: str | None = None  # fixed split: manifest column with fold numbers / train/val/test


class EarlyStopping(_Section):
    metric: str = "auroc"
    patience: int | None = None  # None: never stop early
    mode: Literal["max", "min"] = "max"


class TrainConfig(_Section):
    """Optimisation."""

    epochs: int = Field(5, ge=1)
    batch_size: int = Field(16, ge=1)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    momentum: float = 0.9
    scheduler: Literal["none", "cosine", "onecycle"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0)
    grad_clip: float | None = None
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    class_weighting: Literal["none", "pos_weight", "sampler"] = "none"
    early_stopping: EarlyStopping = EarlyStopping()
    # BatchNorm statistics recomputed after each epoch on this many un-augmented training batches
    # ("precise BN"); 0 keeps the running averages from training. See README (Training engine).
    precise_bn_batches: int = Field(50, ge=0)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = False
    threads: int | None = None  # torch.set_num_threads; None leaves torch's default


class EvalConfig(_Section):
    """How scores become decisions and how uncertainty is stated."""

    operating_point: str = "youden"  # youden | sensitivity:0.95 | specificity:0.9 | fixed:0.5
    bootstrap: int = Field(1000, ge=0)
    bootstrap_seed: int = 0
    calibration_bins: int = Field(10, ge=2)
    temperature_scaling: bool = False
    worst_cases: int = Field(8, ge=0)

    @field_validator("operating_point")
    @classmethod
    def _check_op(cls, v: str) -> str:
        try:
            parse_operating_point(v)
        except ConfigError as exc:
            raise ValueError(str(exc).removeprefix("eval.operating_point ")) from None
        return v


def parse_operating_point(rule: str) -> tuple[str, float | None]:
    """'youden' -> ('youden', None); 'sensitivity:0.95' -> ('sensitivity', 0.95); ...

    Raises:
        ConfigError: the rule is not one of the valid forms.
    """
    kind, _, value = rule.partition(":")
    if kind == "youden" and not value:
        return kind, None
    if kind in ("sensitivity", "specificity", "fixed"):
        try:
            x = float(value)
        except ValueError:
            x = -1.0
        if 0 <= x <= 1:
            return kind, x
    raise ConfigError(
        f"eval.operating_point '{rule}' invalid; valid: youden, sensitivity:<0-1>, specificity:<0-1>, fixed:<0-1>"
    )


class PrivacyConfig(_Section):
    """Identifying DICOM fields stay out of every output unless switched on here."""

    show_identifiers: bool = False
    pseudonym_key_env: str = "MEDREC_PSEUDONYM_KEY"


class ExperimentConfig(_Section):
    """A whole experiment; the resolved form is written into every run folder and checkpoint."""

    name: str = "experiment"
    seed: int = 0
    output_dir: str = "runs"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    cv: CVConfig = CVConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    privacy: PrivacyConfig = PrivacyConfig()

    @model_validator(mode="after")
    def _check_cross(self) -> "ExperimentConfig":
        if self.model.allow_random_init and self.model.weights != "imagenet":
            raise ValueError("model.allow_random_init only applies to model.weights: imagenet")
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.epochs=2` -> (['train', 'epochs'], 2); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set '{text}' is not KEY=VALUE, e.g. --set train.epochs=2")
    key, value = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(value) if value.strip() else None


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of `raw` with each dotted `KEY=VALUE` override applied."""
    out = _deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {text}: '{part}' is a value, not a section")
            node = nxt
        node[path[-1]] = value
    return out


def _deepcopy(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _deepcopy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deepcopy(v) for v in d]
    return d


def _model_at(path: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model class that holds the key at `path` (for 'valid keys' hints)."""
    model: type[BaseModel] = ExperimentConfig
    for part in path[:-1]:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def _format_error(err: dict[str, Any]) -> str:
    loc = tuple(err["loc"])
    key = ".".join(str(p) for p in loc) or "<top level>"
    if err["type"] == "extra_forbidden":
        holder = _model_at(loc)
        valid = sorted(holder.model_fields) if holder else []
        near = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        where = "section" if len(loc) == 1 else "key"
        return f"unknown {where} '{key}'{hint}; valid: {', '.join(valid)}"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{key}: {msg} (got {err.get('input')!r})"


def validate_config(raw: dict[str, Any], source: str = "<config>") -> ExperimentConfig:
    """Validate a raw mapping into an ExperimentConfig or raise ConfigError listing every problem."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(raw).__name__}")
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [_format_error(e) for e in exc.errors()]
        raise ConfigError(f"{source}: invalid config:\n  " + "\n  ".join(lines)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read YAML at `path`, apply `--set` overrides, validate.

    Raises:
        ConfigError: the file is missing, not YAML, or fails validation.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if isinstance(raw, dict) and "name" not in raw:
        raw["name"] = path.stem
    raw = apply_overrides(raw, overrides or []) if isinstance(raw, dict) else raw
    return validate_config(raw, str(path))


def save_config(cfg: ExperimentConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (every field, defaults included)."""
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
