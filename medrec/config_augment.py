"""Augmentation sections of the experiment config (split out of medrec.config, which re-exports them).

Each random transform is a section with validated parameters. A preset switches a set of them on;
the config may override a preset item by item (`rotate: {degrees: 15}` merges into the preset's
rotate, `flip: false` drops it, `noise: true` adds it with its defaults). They always run in
AUGMENT_ORDER, whatever the order in the YAML: geometry first, then the window (CT), then intensity
on the windowed image, dropout last, so that e.g. noise is never drawn on Hounsfield units.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ----------------------------------------------------------------------------- augmentation
# Each random transform is a section with validated parameters. A preset switches a set of them on;
# the config may override a preset item by item (`rotate: {degrees: 15}` merges into the preset's
# rotate, `flip: false` drops it, `noise: true` adds it with its defaults). They always run in
# AUGMENT_ORDER, whatever the order in the YAML: geometry first, then the window (CT), then intensity
# on the windowed image, dropout last, so that e.g. noise is never drawn on Hounsfield units.

Range = tuple[float, float]


def _ordered(v: Range, what: str) -> Range:
    if v[0] > v[1]:
        raise ValueError(f"{what} [{v[0]}, {v[1]}] is empty; write it as [low, high]")
    return v


class _Aug(_Section):
    prob: float = Field(0.5, ge=0, le=1)  # chance that an image gets this transform


class FlipAug(_Aug):
    """MONAI RandFlipd per axis. Off in the cxr preset (see AUGMENT_PRESETS)."""

    axes: tuple[Literal["left_right", "up_down"], ...] = ("left_right",)


class RotateAug(_Aug):
    degrees: float = Field(10.0, gt=0, le=180)  # uniform in [-degrees, +degrees]


class ZoomAug(_Aug):
    range: Range = (0.9, 1.1)  # scale factor; > 1 magnifies

    @field_validator("range")
    @classmethod
    def _check(cls, v: Range) -> Range:
        if not (0.25 <= v[0] <= v[1] <= 4):
            raise ValueError(f"zoom range {list(v)} must satisfy 0.25 <= low <= high <= 4")
        return v


class AffineAug(_Aug):
    shift: float = Field(0.06, ge=0, le=0.5)  # translation, fraction of the image side
    shear: float = Field(0.0, ge=0, le=0.5)  # shear factor, uniform in [-shear, +shear]


class WindowJitterAug(_Aug):
    """CT only: each window's center moves by up to +-center HU and its width by up to +-width (relative)."""

    center: float = Field(10.0, ge=0, le=500)
    width: float = Field(0.1, ge=0, lt=1)


class BiasFieldAug(_Aug):
    """MONAI RandBiasFieldd: a smooth multiplicative field (MRI coil inhomogeneity)."""

    degree: int = Field(3, ge=1, le=6)
    coeff: Range = (0.0, 0.1)

    @field_validator("coeff")
    @classmethod
    def _check(cls, v: Range) -> Range:
        return _ordered(v, "bias_field coeff")


class ContrastAug(_Aug):
    """MONAI RandAdjustContrastd: gamma curve on the image's own range."""

    gamma: Range = (0.8, 1.25)

    @field_validator("gamma")
    @classmethod
    def _check(cls, v: Range) -> Range:
        if not (0 < v[0] <= v[1] <= 5):
            raise ValueError(f"gamma {list(v)} must satisfy 0 < low <= high <= 5")
        return v


class ScaleIntensityAug(_Aug):
    factor: float = Field(0.1, gt=0, lt=1)  # multiply by 1 + uniform(-factor, factor)


class ShiftIntensityAug(_Aug):
    offset: float = Field(0.1, gt=0, le=1)  # add uniform(-offset, offset)


class SmoothAug(_Aug):
    sigma: Range = (0.25, 1.0)  # Gaussian sigma in pixels

    @field_validator("sigma")
    @classmethod
    def _check(cls, v: Range) -> Range:
        if not (0 <= v[0] <= v[1] <= 10):
            raise ValueError(f"sigma {list(v)} must satisfy 0 <= low <= high <= 10 pixels")
        return v


class NoiseAug(_Aug):
    std: float = Field(0.02, gt=0, le=1)


class CoarseDropoutAug(_Aug):
    holes: int = Field(4, ge=1, le=64)
    size: float = Field(0.08, gt=0, le=0.5)  # side of each hole, fraction of the image side
    fill: float = 0.0  # in windowed units: 0 is black


AugItem = FlipAug | RotateAug | ZoomAug | AffineAug | WindowJitterAug | BiasFieldAug | ContrastAug | \
    ScaleIntensityAug | ShiftIntensityAug | SmoothAug | NoiseAug | CoarseDropoutAug

AUGMENT_ORDER: dict[str, type[_Aug]] = {
    "flip": FlipAug, "rotate": RotateAug, "zoom": ZoomAug, "affine": AffineAug, "window_jitter": WindowJitterAug,
    "bias_field": BiasFieldAug, "contrast": ContrastAug, "scale_intensity": ScaleIntensityAug,
    "shift_intensity": ShiftIntensityAug, "smooth": SmoothAug, "noise": NoiseAug, "coarse_dropout": CoarseDropoutAug,
}
# These three run per batch (medrec.data.augment.BatchAffine); the rest per image (MONAI).
GEOMETRY_AUGMENTS = ("rotate", "zoom", "affine")
_GEOMETRY = {"rotate": {"prob": 0.5, "degrees": 7.0}, "zoom": {"prob": 0.5, "range": (0.9, 1.1)},
             "affine": {"prob": 0.5, "shift": 0.06}}
_CXR = {**_GEOMETRY, "contrast": {"prob": 0.3, "gamma": (0.8, 1.25)}, "noise": {"prob": 0.2, "std": 0.02}}
AUGMENT_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "none": {},
    "light": _GEOMETRY,  # small rotation, zoom and shift only
    # Chest radiographs: no flips. A vertical flip puts the diaphragm on top, which no film shows, and
    # a left-right flip moves the heart to the right (dextrocardia): the network would learn anatomy
    # that does not exist and lose the side cues (heart, aortic knob, gastric bubble) that readers use.
    "cxr": _CXR,
    "standard": _CXR,  # the name older configs used for the cxr set
    # Axial head/body CT: a left-right mirror is a plausible other patient for side-independent
    # findings (turn it off when the label depends on the side); windows jitter like a reader's.
    "ct": {"flip": {"prob": 0.5, "axes": ("left_right",)}, "rotate": {"prob": 0.5, "degrees": 10.0},
           "zoom": {"prob": 0.5, "range": (0.9, 1.1)}, "affine": {"prob": 0.5, "shift": 0.06},
           "window_jitter": {"prob": 0.5, "center": 10.0, "width": 0.1}, "noise": {"prob": 0.2, "std": 0.02}},
    # Brain MRI: arbitrary intensity scales and coil bias fields are the nuisance to be robust to.
    "mri": {"flip": {"prob": 0.5, "axes": ("left_right",)}, "rotate": {"prob": 0.5, "degrees": 10.0},
            "zoom": {"prob": 0.5, "range": (0.9, 1.1)}, "affine": {"prob": 0.5, "shift": 0.06},
            "bias_field": {"prob": 0.3, "degree": 3, "coeff": (0.0, 0.2)},
            "contrast": {"prob": 0.3, "gamma": (0.7, 1.5)}, "scale_intensity": {"prob": 0.3, "factor": 0.1},
            "shift_intensity": {"prob": 0.3, "offset": 0.1}, "noise": {"prob": 0.2, "std": 0.05}},
}


class AugmentConfig(_Section):
    """Training augmentations: a preset plus per-item overrides (module comment above)."""

    preset: Literal["auto", "none", "light", "standard", "cxr", "ct", "mri"] = "auto"  # auto: data.modality's
    flip: FlipAug | None = None
    rotate: RotateAug | None = None
    zoom: ZoomAug | None = None
    affine: AffineAug | None = None
    window_jitter: WindowJitterAug | None = None
    bias_field: BiasFieldAug | None = None
    contrast: ContrastAug | None = None
    scale_intensity: ScaleIntensityAug | None = None
    shift_intensity: ShiftIntensityAug | None = None
    smooth: SmoothAug | None = None
    noise: NoiseAug | None = None
    coarse_dropout: CoarseDropoutAug | None = None

    @field_serializer(*AUGMENT_ORDER)
    def _only_written(self, item: _Aug | None) -> dict[str, Any] | None:
        # Keep only what the config wrote: a saved config then resolves exactly as the original on
        # --resume (writing the class default prob 0.5 would override the preset's own prob).
        return None if item is None else item.model_dump(mode="json", exclude_unset=True)

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, v: Any) -> Any:
        if isinstance(v, str):  # `augment: cxr` is short for {preset: cxr}
            return {"preset": v}
        if isinstance(v, dict):  # `noise: true` adds the item with its defaults; `flip: false` drops it
            return {k: ({} if x is True else {"prob": 0.0} if x is False else x) if k in AUGMENT_ORDER else x
                    for k, x in v.items()}
        return v

    def resolved(self, modality: str) -> dict[str, _Aug]:
        """The transforms that run, in AUGMENT_ORDER: the preset merged with this section's items."""
        preset = modality if self.preset == "auto" else self.preset
        out: dict[str, _Aug] = {}
        for name, kind in AUGMENT_ORDER.items():
            base, item = AUGMENT_PRESETS[preset].get(name), getattr(self, name)
            if item is None and base is None:
                continue
            params = dict(base or {})
            if item is not None:  # only the keys written in the config override the preset's
                params.update({k: getattr(item, k) for k in item.model_fields_set})
            if params.get("prob", 0.5) > 0:
                out[name] = kind(**params)
        return out

    def summary(self, modality: str) -> str:
        """One line for reports and previews: `preset cxr: rotate p0.5 (degrees 7.0); ...`."""
        preset = modality if self.preset == "auto" else self.preset
        parts = []
        for name, a in self.resolved(modality).items():
            args = ", ".join(f"{k} {list(v) if isinstance(v, tuple) else v}"
                             for k, v in a.model_dump().items() if k != "prob")
            parts.append(f"{name} p{a.prob:g}" + (f" ({args})" if args else ""))
        return f"preset {preset}: " + ("; ".join(parts) or "nothing")
