"""One description of how a run preprocesses images, for predict's and export's metadata."""

from __future__ import annotations

from typing import Any


def preprocessing_summary(cfg, normalization: dict[str, list[float]]) -> dict[str, Any]:
    """What a deployment must do to an image before the network sees it.

    Args:
        cfg: the run's ExperimentConfig. normalization: {"mean": [...], "std": [...]} per channel.
    """
    d = cfg.data
    pad = "with 0" if d.modality == "cxr" else "with the image minimum"
    return {"image_size": d.image_size, "modality": d.modality, "window": d.window, "channels": d.channels,
            "intensity": d.intensity, "slice": d.slice, "frame": d.frame,
            "geometry": f"longest side resized to image_size (area), padded to a square {pad}",
            "in_channels": cfg.model.in_channels, "normalization": normalization}
