"""build_model(cfg.model) -> (network, provenance): torchvision architecture, weights, adaptation.

Every build takes the same path whatever the weights: torchvision's network as its ImageNet file
expects it (3 channels, 1000 classes, aux heads, `transform_input=False`), weights loaded into
that, then adapted (aux heads kept or dropped, input channels, heads, dropout). So a network
built with `weights: none` has exactly the modules and state-dict keys of one built from
ImageNet, and a checkpoint loads strictly into `rebuild_model(config, state_dict, n)`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from medrec.config import ModelConfig
from medrec.errors import CheckpointError, ConfigError, WeightsError
from medrec.models import adapt
from medrec.models.freeze import check_freeze
from medrec.models.specs import ArchSpec, get_spec
from medrec.models.weights import Weights, resolve

logger = logging.getLogger(__name__)


def base_model(spec: ArchSpec) -> nn.Module:
    """torchvision's randomly initialised network in the layout of its ImageNet weights file."""
    import torchvision

    builder = getattr(torchvision.models, spec.builder)
    return builder(weights=None, num_classes=spec.num_classes, **dict(spec.builder_kwargs))


def keeps_aux(spec: ArchSpec, cfg: ModelConfig) -> bool:
    """Aux heads stay if asked for, or if pretrained (Inception-v3) and their loss counts."""
    return bool(spec.aux_heads) and (cfg.aux_logits or (spec.aux_pretrained and cfg.aux_weight > 0))


def build_model(cfg: ModelConfig, *, num_outputs: int, replace_head: bool = True) -> tuple[nn.Module, dict]:
    """Build `cfg.arch` for `cfg.in_channels` inputs and `num_outputs` outputs.

    `replace_head=False` keeps the pretrained 1000-class head(s) (num_outputs must be 1000);
    it exists to compare against torchvision's own network.

    Returns:
        (model in train mode, provenance {"initialisation", "weights_file", "weights_sha256"}).
    Raises:
        WeightsError: weights missing (see medrec.models.weights), corrupt or of another network.
        ConfigError: num_outputs or freeze do not fit the architecture.
    """
    spec = get_spec(cfg.arch)
    if num_outputs < 1 or (not replace_head and num_outputs != spec.num_classes):
        raise ConfigError(f"num_outputs {num_outputs} invalid for {spec.name} (replace_head={replace_head})")
    weights = resolve(cfg, spec)  # first: a missing file fails before seconds of model construction
    model = base_model(spec)
    state = weights.state_dict
    source = weights.provenance["weights_file"]
    if state is not None and weights.layout != "medrec" and _load_imagenet_layout(model, spec, cfg, weights):
        state = None
    _adapt(model, spec, cfg, num_outputs, replace_head)
    if state is not None:
        _load_adapted(model, spec, state, source, f"{cfg.in_channels}-channel, {num_outputs}-output")
    check_freeze(model, cfg)
    logger.info(
        "built %s: %d input channel(s), %d output(s), initialisation %s %s", spec.name, cfg.in_channels,
        num_outputs, weights.provenance["initialisation"], source or "",
    )
    return model, weights.provenance


def _load_imagenet_layout(model: nn.Module, spec: ArchSpec, cfg: ModelConfig, weights: Weights) -> bool:
    """Load torchvision-layout weights into the unadapted network; False if they have another layout."""
    aux_needed = keeps_aux(spec, cfg) and spec.aux_pretrained  # untrained or dropped aux may be absent
    optional = () if aux_needed else tuple(f"{h}." for h in spec.aux_heads)
    problem = layout_problem(model, weights.state_dict, optional=optional)
    if problem is None:
        model.load_state_dict(weights.state_dict, strict=False)  # strict but for those optional aux keys
        return True
    if weights.layout == "torchvision":  # the ImageNet cache file must fit
        source = weights.provenance["weights_file"]
        raise WeightsError(f"{source} does not fit torchvision's {spec.name}: {problem}; delete it and pull again")
    return False


def _adapt(model: nn.Module, spec: ArchSpec, cfg: ModelConfig, num_outputs: int, replace_head: bool) -> None:
    if not keeps_aux(spec, cfg):
        adapt.drop_aux_heads(model, spec)
    elif not spec.aux_pretrained and cfg.weights != "none":
        logger.info("%s auxiliary heads are not pretrained; they train from random values", spec.name)
    for patch in spec.patches:
        adapt.PATCHES[patch](model)
    adapt.adapt_first_conv(model, spec, cfg.in_channels)
    if replace_head:
        adapt.replace_heads(model, spec, num_outputs)
    if cfg.dropout > 0:
        adapt.add_head_dropout(model, spec, cfg.dropout)


def _load_adapted(model: nn.Module, spec: ArchSpec, state: Mapping, source: str, what: str) -> None:
    """Load a state dict of the adapted network; if only the heads differ (another task's
    checkpoint), load the rest and keep the new heads."""
    problem = layout_problem(model, state)
    if problem is None:
        model.load_state_dict(state)
        return
    heads = tuple(f"{h}." for h in spec.heads)
    body = {k: v for k, v in state.items() if not k.startswith(heads)}
    if len(body) < len(state) and layout_problem(model, body, optional=heads) is None:
        model.load_state_dict(body, strict=False)
        logger.warning("%s: heads do not fit (%s); loaded the rest, heads start random", source, problem)
        return
    raise WeightsError(
        f"{source} fits neither torchvision's {spec.name} (3 channels, {spec.num_classes} classes) "
        f"nor this {what} model: {problem}"
    )


def layout_problem(
    model: nn.Module, state: Mapping[str, torch.Tensor], optional: tuple[str, ...] = ()
) -> str | None:
    """None if `state` loads into `model` (keys starting with `optional` may be missing), else why not."""
    own = model.state_dict()
    problems = {
        "missing keys": [k for k in own if k not in state and not k.startswith(optional)],
        "unexpected keys": [k for k in state if k not in own],
        "shape mismatches": [
            f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
            for k, v in own.items()
            if k in state and state[k].shape != v.shape
        ],
    }
    parts = [
        f"{what} {len(keys)} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
        for what, keys in problems.items()
        if keys
    ]
    return "; ".join(parts) or None


def rebuild_model(
    model_cfg: ModelConfig | Mapping[str, Any], state_dict: Mapping[str, torch.Tensor], num_outputs: int
) -> nn.Module:
    """The network of a checkpoint: `build_model` with weights none, then a strict load.

    Raises:
        CheckpointError: the state dict does not fit the configured network.
    """
    if not isinstance(model_cfg, ModelConfig):
        model_cfg = ModelConfig.model_validate(dict(model_cfg))
    cfg = model_cfg.model_copy(update={"weights": "none", "allow_random_init": False})
    model, _ = build_model(cfg, num_outputs=num_outputs)
    problem = layout_problem(model, state_dict)
    if problem is not None:
        raise CheckpointError(f"checkpoint weights do not fit {cfg.arch} with {num_outputs} outputs: {problem}")
    model.load_state_dict(state_dict)
    return model


def split_outputs(out: Any) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(logits, aux logits): Inception/GoogLeNet return namedtuples in train mode with aux heads."""
    if isinstance(out, torch.Tensor):
        return out, []
    logits, *aux = out
    return logits, [a for a in aux if a is not None]


def combined_loss(criterion: Any, out: Any, target: torch.Tensor, aux_weight: float) -> torch.Tensor:
    """criterion(logits) + aux_weight * the sum of criterion(aux) over the aux heads present.

    The training loop's loss: logits are cast to float32 first (autocast may give bf16/fp16).
    """
    logits, aux = split_outputs(out)
    loss = criterion(logits.float(), target)
    if aux:
        loss = loss + aux_weight * sum(criterion(a.float(), target) for a in aux)
    return loss
