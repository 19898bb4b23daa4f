"""Fine-tuning controls: which parameters train at an epoch, and their learning rates.

model.freeze:
    none            everything trains
    stem            the modules before the first stage (spec.stem) are frozen
    backbone        everything but the classifier and auxiliary heads is frozen
    until:<layer>   every top-level module up to and including <layer> is frozen
                    (heads always train), e.g. until:layer3 trains layer4 and fc
model.unfreeze_after: N -> from epoch N on (0-based, i.e. after N finished epochs) all trains.

The optimizer should hold every parameter from the start (`param_groups`), so that unfreezing
only flips `requires_grad`: optimizers skip parameters without gradients.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from medrec.errors import ConfigError
from medrec.models.specs import ArchSpec, get_spec


def _is_head(name: str, spec: ArchSpec) -> bool:
    return any(name == h or name.startswith(h + ".") for h in spec.heads)


def freezable_layers(model: nn.Module, spec: ArchSpec) -> list[str]:
    """Top-level modules with parameters, in forward order, excluding heads: valid `until:` names."""
    return [
        name for name, child in model.named_children()
        if child is not None and not _is_head(name, spec) and any(True for _ in child.parameters())
    ]


def check_freeze(model: nn.Module, cfg: Any) -> None:
    """Raise ConfigError now, not at the first epoch, if `until:<layer>` names no layer."""
    _frozen_prefixes(model, get_spec(cfg.arch), cfg.freeze)


def _frozen_prefixes(model: nn.Module, spec: ArchSpec, freeze: str) -> tuple[str, ...]:
    if freeze == "none":
        return ()
    if freeze == "stem":
        return spec.stem
    layers = freezable_layers(model, spec)
    if freeze == "backbone":
        return tuple(layers)
    layer = freeze.removeprefix("until:")
    if not freeze.startswith("until:") or layer not in layers:
        raise ConfigError(
            f"model.freeze '{freeze}' unknown for {spec.name}; valid: none, stem, backbone, "
            f"until:<layer> with <layer> one of {', '.join(layers)}"
        )
    return tuple(layers[: layers.index(layer) + 1])


def apply_freeze(model: nn.Module, cfg: Any, epoch: int) -> list[str]:
    """Set `requires_grad` for `epoch` (0-based); returns the names of the frozen parameters."""
    spec = get_spec(cfg.arch)
    thawed = cfg.unfreeze_after is not None and epoch >= cfg.unfreeze_after
    prefixes = () if thawed else _frozen_prefixes(model, spec, cfg.freeze)
    frozen = []
    for name, p in model.named_parameters():
        p.requires_grad_(not any(name.startswith(f"{pre}.") for pre in prefixes))
        if not p.requires_grad:
            frozen.append(name)
    return frozen


def train_mode(model: nn.Module) -> nn.Module:
    """`model.train()`, but BatchNorm layers whose parameters are all frozen stay in eval mode.

    Frozen weights alone do not freeze a layer: in train mode BatchNorm normalises with batch
    statistics and overwrites its running statistics. Call this instead of `model.train()`.
    """
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            params = list(m.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                m.eval()
    return model


def param_groups(model: nn.Module, cfg: Any, lr: float) -> list[dict[str, Any]]:
    """Two optimizer groups: heads at `lr`, the rest at `lr * cfg.backbone_lr_mult`.

    Every parameter is included, frozen or not, so that `unfreeze_after` needs no new optimizer.
    """
    spec = get_spec(cfg.arch)
    head, backbone = [], []
    for name, p in model.named_parameters():
        (head if _is_head(name, spec) else backbone).append(p)
    return [
        {"params": head, "lr": lr, "name": "head"},
        {"params": backbone, "lr": lr * cfg.backbone_lr_mult, "name": "backbone"},
    ]
