"""Grad-CAM maps of a fold ensemble, at the original image size, as arrays and overlays.

The map is MONAI's `monai.visualize.GradCAM` on the layer each architecture names as its
`cam_layer` (`medrec.models.specs`): the last spatial block, whose channels are pooled into
the classifier. Grad-CAM weights each channel of that layer by the mean gradient of the target
logit and keeps the positive part of the weighted sum, so a map shows where the features that
raise the target logit are, relative to the rest of that image.

Conventions (the files `medrec.predict --cam` writes and `apps/` reads):
- Target: binary, the positive logit; multiclass, the predicted class (or a named one);
  multilabel, the named label.
- Each fold model's map is divided by its own maximum (fold models' logit scales differ),
  the maps are averaged over the models, mapped back through the preprocessing (padding
  cropped, resized to the original rows x columns, bilinear) and divided by the maximum
  again: values in [0, 1], 1 = the strongest evidence in this image. Maps are relative
  within one image, not comparable across images; an all-zero map means no location raised
  the target logit.
- The network runs in eval mode (MONAI switches it, and back afterwards), so Inception-v3
  and GoogLeNet return plain logits, never their auxiliary outputs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medrec.errors import ConfigError

if TYPE_CHECKING:  # torch is imported where it is used: the review app draws overlays without it
    import torch
    from torch import nn

log = logging.getLogger(__name__)


def _identity(x: torch.Tensor) -> torch.Tensor:
    # MONAI's default postprocessing maps (min, max) to (1, 0), i.e. it flips the map.
    return x


def cam_layer(arch: str) -> str:
    """The Grad-CAM target layer of an architecture (its ArchSpec's `cam_layer`)."""
    from medrec.models.specs import get_spec

    return get_spec(arch).cam_layer


class GradCAM:
    """Grad-CAM of one network on its `layer`, with one target class per image.

    Built once per network: MONAI registers forward/backward hooks on the layer and keeps
    them, so a new object per batch would stack hooks.
    """

    def __init__(self, model: nn.Module, layer: str):
        import torch
        from monai.visualize import GradCAM as MonaiGradCAM
        from monai.visualize.class_activation_maps import ModelWithHooks

        class PerImageTarget(ModelWithHooks):
            # MONAI indexes `logits[:, class_idx]`, which takes one class for the whole batch.
            def class_score(self, logits: torch.Tensor, class_idx) -> torch.Tensor:
                idx = torch.as_tensor(class_idx, device=logits.device).reshape(-1)
                return logits.gather(1, idx.expand(len(logits))[:, None] if idx.numel() == 1 else idx[:, None])

        if layer not in dict(model.named_modules()):
            raise ConfigError(f"Grad-CAM layer '{layer}' is not a module of {type(model).__name__}")
        hooked = PerImageTarget(model, layer, register_forward=True, register_backward=True)
        self.layer = layer
        self.cam = MonaiGradCAM(nn_module=hooked, target_layers=layer, postprocessing=_identity)
        self._warned = False

    def __call__(self, x: torch.Tensor, class_idx: int | Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Maps (B, H, W) at the input's size, each divided by its maximum (all-zero stays zero)."""
        import torch

        idx = torch.as_tensor(class_idx, dtype=torch.long, device=x.device)
        # Gradients are needed even when the caller runs under no_grad / inference mode.
        with torch.inference_mode(False), torch.enable_grad():
            maps = self.cam(x.clone(), class_idx=idx)[:, 0].detach().float()
        grid = tuple(self.cam.nn_module.activations[self.layer].shape[-2:])
        if grid == (1, 1) and not self._warned:
            self._warned = True
            log.warning("Grad-CAM layer %s is 1 x 1 for %s px input: the maps are flat; a larger "
                        "data.image_size gives a spatial map", self.layer, tuple(x.shape[-2:]))
        top = maps.flatten(1).amax(dim=1).clamp(min=1e-12)[:, None, None]
        return torch.nan_to_num(maps / top)


class EnsembleCAM:
    """Grad-CAM averaged over fold models (see the module docstring for the normalisation)."""

    def __init__(self, models: Sequence[nn.Module], layer: str):
        self.cams = [GradCAM(m, layer) for m in models]

    def __call__(self, x: torch.Tensor, class_idx) -> torch.Tensor:
        import torch

        return torch.stack([cam(x, class_idx) for cam in self.cams]).mean(dim=0)


def to_original(cam: torch.Tensor | np.ndarray, applied_operations: Sequence[dict]) -> np.ndarray:
    """Map a (H', W') map on the network's input grid back onto the original image grid.

    `applied_operations` is the record MONAI keeps on the preprocessed image (resize to the
    longest side, then pad to a square): the padding is cropped off and the rest resized to
    the recorded original size. Bilinear, because the map is smooth while the preprocessing's
    'area' mode would repeat pixels when enlarging.
    """
    import torch
    import torch.nn.functional as F

    out = torch.as_tensor(np.asarray(cam), dtype=torch.float32)
    for op in reversed(list(applied_operations)):
        name, info = op["class"], op.get("extra_info", {})
        if name == "SpatialPad":
            (top, bottom), (left, right) = info["padded"][-2:]
            out = out[top:out.shape[0] - bottom, left:out.shape[1] - right]
        elif name == "Resize":
            size = tuple(int(s) for s in op["orig_size"])
            out = F.interpolate(out[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
        else:  # preprocess_transforms has only these two geometric steps
            raise AssertionError(f"cannot invert preprocessing step {name}")
    return out.numpy()


def normalise(cam: np.ndarray) -> np.ndarray:
    """Divide by the maximum (values in [0, 1]); an all-zero map stays zero."""
    cam = np.clip(np.nan_to_num(cam.astype(np.float32)), 0, None)
    top = float(cam.max()) if cam.size else 0.0
    return cam / top if top > 0 else cam


def overlay(gray: np.ndarray, cam: np.ndarray, *, opacity: float = 0.5) -> np.ndarray:
    """RGB uint8: the windowed image in gray, the map blended in with the 'inferno' colour map
    in proportion to its value (zero evidence leaves the image untouched)."""
    from matplotlib import colormaps

    if gray.shape != cam.shape:
        raise ValueError(f"image {gray.shape} and map {cam.shape} differ in size")
    g = np.clip(np.nan_to_num(gray.astype(np.float32)), 0, 1)[..., None].repeat(3, axis=2)
    colour = colormaps["inferno"](np.clip(cam, 0, 1))[..., :3]
    alpha = opacity * np.clip(cam, 0, 1)[..., None]
    return np.round(255 * ((1 - alpha) * g + alpha * colour)).astype(np.uint8)


def write_cam(folder: Path, image_id: str, cam: np.ndarray, gray: np.ndarray | None) -> None:
    """`<folder>/<image_id>.npy` (float16) and, given the windowed image, `<image_id>.png`."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{image_id}.npy", cam.astype(np.float16), allow_pickle=False)
    if gray is not None:
        Image.fromarray(overlay(gray, cam)).save(folder / f"{image_id}.png")


def safe_name(image_id: str) -> bool:
    """True when `image_id` can be a file name (the review app refuses anything else)."""
    return bool(image_id) and Path(image_id).name == image_id and image_id not in (".", "..")


if __name__ == "__main__":  # python -m medrec.explain RUN_DIR: the out-of-fold maps of a run
    import sys

    from medrec.explain_run import main

    sys.exit(main())
