"""Typed experiment config: YAML -> frozen pydantic models.

`load_config(path, overrides)` is the one way a config enters medrec. Unknown keys and wrong
types fail here, before any work starts, with the key path and the valid keys or type.
Each builder receives only its own section (`build_model(cfg.model)`, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from medrec.errors import ConfigError
from medrec.config_tools import apply_overrides, format_error, parse_override  # noqa: F401

# Augmentation sections live in medrec.config_augment; imported here so `medrec.config.X` keeps working.
from medrec.config_augment import (  # noqa: F401
    AUGMENT_ORDER,
    AUGMENT_PRESETS,
    GEOMETRY_AUGMENTS,
    AffineAug,
    AugItem,
    AugmentConfig,
    BiasFieldAug,
    CoarseDropoutAug,
    ContrastAug,
    FlipAug,
    NoiseAug,
    Range,
    RotateAug,
    ScaleIntensityAug,
    ShiftIntensityAug,
    SmoothAug,
    WindowJitterAug,
    ZoomAug,
    _Aug,
    _Section,
)
from medrec.tune.space import TuneConfig

from medrec.names import ARCHS, MODALITIES  # noqa: F401  (one list, shared with readers and models)
from medrec.names import WINDOW_PRESETS as _WINDOWS

WINDOW_PRESETS = tuple(_WINDOWS)  # names only; medrec.names holds their (center, width)


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
    # Preprocessing preset. cxr: projection images (CR/DX/CX, also PNG/JPEG), one [0, 1] channel
    # through `window`. ct: Hounsfield units through the windows in `channels`, one channel each.
    # mri: per-image `intensity` scaling of arbitrary scanner units. All keep the aspect ratio
    # (longest side to image_size, then padding).
    modality: Literal["cxr", "ct", "mri"] = "cxr"
    window: str | tuple[float, float] = "auto"  # cxr: auto | minmax | percentile | preset | [center, width]
    channels: tuple[str | tuple[float, float], ...] | None = None  # ct: e.g. [brain, subdural, bone]
    intensity: Literal["zscore", "percentile"] = "zscore"  # mri: per-image scaling
    slice: Literal["middle", "all"] | int = "middle"  # volumes (NIfTI, multi-frame DICOM): which slice(s)
    frame: int | None = None  # multi-frame DICOM frame / 4-D NIfTI volume (default: the middle one)
    # k neighbouring slices above and below each slice (same series by slice_position, or same volume) as
    # extra channels, edges replicated: 2k+1 channels per window (medrec.data.context)
    context_slices: int = Field(0, ge=0, le=3)
    color: Literal["auto", "convert", "strict"] = "auto"  # images stored in colour (medrec.io.color; README)
    augment: AugmentConfig = AugmentConfig()
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

    @field_validator("channels")
    @classmethod
    def _check_channels(cls, v: Any) -> Any:
        if v is None:
            return v
        if not v:
            raise ValueError("needs at least one window, e.g. [brain, subdural, bone]")
        for w in v:
            if isinstance(w, str) and w not in WINDOW_PRESETS:
                raise ValueError(f"window '{w}' unknown; valid: {', '.join(WINDOW_PRESETS)} or [center, width]")
            if not isinstance(w, str) and w[1] <= 0:
                raise ValueError(f"window {list(w)} needs a width > 0")
        return v

    @field_validator("slice")
    @classmethod
    def _check_slice(cls, v: Any) -> Any:
        if isinstance(v, int) and v < 0:
            raise ValueError("must be middle, all or a slice index >= 0")
        return v

    @model_validator(mode="after")
    def _check_modality(self) -> "DataConfig":
        if self.modality == "ct":
            if not self.channels:
                raise ValueError("data.modality ct needs data.channels: the CT windows, one per input channel, "
                                 "e.g. [brain, subdural, bone] or [[40, 80]]")
            if self.window != "auto":
                raise ValueError("data.window is not used with data.modality ct; list the window(s) in data.channels")
        elif self.channels is not None:
            raise ValueError(f"data.channels (CT windows) needs data.modality ct, not {self.modality}; "
                             "for one window on a radiograph set data.window")
        if self.modality == "mri" and self.window != "auto":
            raise ValueError("data.window is not used with data.modality mri; set data.intensity: zscore | percentile")
        aug = self.augment.resolved(self.modality)
        if "window_jitter" in aug and self.modality != "ct":
            raise ValueError("data.augment.window_jitter needs data.modality ct (it moves the CT windows)")
        return self

    @property
    def num_channels(self) -> int:
        """Channels the preprocessing produces: (one per CT window, else one) x (2 context_slices + 1)."""
        return (len(self.channels) if self.channels else 1) * (2 * self.context_slices + 1)


class ModelConfig(_Section):
    """Which network, how it is initialised and which parts train."""

    arch: str = "resnet18"
    in_channels: int = Field(1, ge=1, le=16)  # default: data's channels (one per CT window, else 1)
    weights: str = "imagenet"  # imagenet | none | path to a state dict
    allow_random_init: bool = False  # only with weights: imagenet, when they cannot be found
    freeze: str = "none"  # none | stem | backbone | until:<layer>
    unfreeze_after: int | None = None  # epochs after which everything trains
    backbone_lr_mult: float = Field(1.0, gt=0)
    aux_weight: float = Field(0.4, ge=0)
    aux_logits: bool = False  # GoogLeNet: keep its (untrained) auxiliary heads
    dropout: float = Field(0.0, ge=0, lt=1)

    @model_validator(mode="before")
    @classmethod
    def _no_num_classes(cls, v: Any) -> Any:
        if isinstance(v, dict) and "num_classes" in v:
            if v["num_classes"] is not None:
                raise ValueError("model.num_classes is not a setting: the number of outputs is derived from "
                                 "data.task and data.label_columns (and data.class_names); remove it")
            v = {k: x for k, x in v.items() if k != "num_classes"}  # null, as older saved configs wrote it
        return v

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
    # fixed split: a manifest column holding fold numbers (each number is one validation fold), or train /
    # val (also valid, validation; any case) for one train/validation split. A held-out test set comes from
    # cv.test_fraction, not from this column
    split_column: str | None = None

    @model_validator(mode="after")
    def _fixed_split_once(self) -> "CVConfig":
        if self.split_column and self.repeats > 1:
            raise ValueError(f"cv.split_column gives one fixed split; cv.repeats {self.repeats} would repeat it "
                             "identically. Set cv.repeats: 1, or drop cv.split_column for repeated CV")
        return self


class EarlyStopping(_Section):
    """Stop when the monitored metric has not improved for `patience` epochs; report the best epoch.

    The epoch is chosen on an inner, patient-grouped split of the training fold (`inner_fraction`
    of its patients), never on the fold whose out-of-fold predictions are reported.
    """

    metric: Literal["auroc", "accuracy", "loss"] = "auroc"
    patience: int | None = Field(None, ge=0)  # None: never stop early (the last epoch is reported)
    inner_fraction: float = Field(0.15, gt=0, lt=0.5)  # of the training fold's patients, to choose the epoch
    mode: Literal["max", "min"] | None = None  # derived from metric (loss: min, else max); a value must agree

    @model_validator(mode="after")
    def _mode_agrees(self) -> "EarlyStopping":
        if self.mode is not None and self.mode != self.direction:
            raise ValueError(f"train.early_stopping.mode {self.mode} contradicts metric {self.metric}, which is "
                             f"{self.direction}imised; remove mode (it is derived from the metric)")
        return self

    @property
    def direction(self) -> Literal["max", "min"]:
        return "min" if self.metric == "loss" else "max"


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
    # torch intra-op threads: auto = one per usable CPU, OpenMP waiting passively (medrec.threads, README
    # "Threads"); a number pins it; null leaves torch's own default.
    threads: int | Literal["auto"] | None = Field("auto", union_mode="left_to_right")


class EvalConfig(_Section):
    """How scores become decisions and how uncertainty is stated."""

    operating_point: str = "youden"  # youden | sensitivity:0.95 | specificity:0.9 | fixed:0.5
    bootstrap: int = Field(1000, ge=0)
    bootstrap_seed: int = 0
    calibration_bins: int = Field(10, ge=2)
    temperature_scaling: bool = False
    worst_cases: int = Field(8, ge=0)
    cams: bool | Literal["auto"] = "auto"  # Grad-CAM of each out-of-fold image after training (auto: up to 3000)
    subgroups: tuple[str, ...] = ()  # manifest columns (sex, age_band, view_position, site): metrics per value
    subgroup_min_patients: int = Field(10, ge=1)  # a subgroup value with fewer patients is reported as "too few"
    aggregate: tuple[Literal["patient", "study"], ...] = ()  # also metrics on scores combined per patient/study

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


class IOConfig(_Section):
    """Largest image a file may decode to, checked from its header before decoding (medrec.io.limits)."""

    max_pixels: int = Field(100_000_000, ge=1)  # per frame; about 4x the largest mammograms
    max_bytes: int = Field(1 << 30, ge=1)  # decoded bytes of one frame or slice


class PrivacyConfig(_Section):
    """Identifying DICOM fields never reach an output; patients appear as keyed pseudonyms."""

    pseudonym_key_env: str = "MEDREC_PSEUDONYM_KEY"

    @model_validator(mode="before")
    @classmethod
    def _removed_show_identifiers(cls, raw: Any) -> Any:
        """`show_identifiers` (never honoured) was removed: false, as old run folders hold, is dropped."""
        if isinstance(raw, dict) and "show_identifiers" in raw:
            if raw["show_identifiers"] not in (False, "false", 0, None):
                raise ValueError("show_identifiers was removed: medrec never writes patient names, ids, birth dates "
                                 "or accession numbers (only keyed pseudonyms); delete the line")
            raw = {k: v for k, v in raw.items() if k != "show_identifiers"}
        return raw


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
    io: IOConfig = IOConfig()  # file size limits (medrec.io.limits)
    tune: TuneConfig | None = None  # medrec tune: search space, budget, tuned_from marker (medrec.tune.space)

    @model_validator(mode="before")
    @classmethod
    def _channels_follow_data(cls, raw: Any) -> Any:
        """model.in_channels defaults to the number of channels the data section produces."""
        if not isinstance(raw, dict):
            return raw
        data, model = raw.get("data"), raw.get("model")
        channels = data.get("channels") if isinstance(data, dict) else None
        context = data.get("context_slices") if isinstance(data, dict) else None
        n = len(channels) if isinstance(channels, (list, tuple)) and channels else 1
        n *= 2 * context + 1 if isinstance(context, int) and context > 0 else 1
        if n > 1 and (model is None or isinstance(model, dict)) and "in_channels" not in (model or {}):
            raw = {**raw, "model": {**(model or {}), "in_channels": n}}
        return raw

    @model_validator(mode="after")
    def _check_cross(self) -> "ExperimentConfig":
        if self.model.allow_random_init and self.model.weights != "imagenet":
            raise ValueError("model.allow_random_init only applies to model.weights: imagenet")
        n = self.data.num_channels
        if n > 1 and self.model.in_channels != n:
            raise ValueError(f"model.in_channels {self.model.in_channels} does not match the data's {n} channels "
                             "(data.channels windows x (2 data.context_slices + 1) slices); remove "
                             f"model.in_channels or set it to {n}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def validate_config(raw: dict[str, Any], source: str = "<config>") -> ExperimentConfig:
    """Validate a raw mapping into an ExperimentConfig or raise ConfigError listing every problem."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(raw).__name__}")
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [format_error(e, ExperimentConfig) for e in exc.errors()]
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
    cfg = validate_config(raw, str(path))
    from medrec.io.limits import set_limits

    set_limits(cfg.io)  # every reader in this process keeps to the config's io limits (README "Size limits")
    return cfg


def save_config(cfg: ExperimentConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (every field, defaults included)."""
    from medrec.fileio import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
