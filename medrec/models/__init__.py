"""The model zoo: torchvision ResNet/GoogLeNet/Inception adapted to medical images.

    from medrec.models import build_model, get_spec, normalization
    model, provenance = build_model(cfg.model, num_outputs=2)
"""

from medrec.models.adapt import normalization
from medrec.models.build import build_model, combined_loss, rebuild_model, split_outputs
from medrec.models.freeze import apply_freeze, param_groups, train_mode
from medrec.models.specs import SPECS, ArchSpec, get_spec

__all__ = [
    "SPECS",
    "ArchSpec",
    "apply_freeze",
    "build_model",
    "combined_loss",
    "get_spec",
    "normalization",
    "param_groups",
    "rebuild_model",
    "split_outputs",
    "train_mode",
]
