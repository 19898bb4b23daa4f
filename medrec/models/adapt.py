"""Adapt an ImageNet network to medical inputs: input channels, normalisation and heads.

Input channels. The pretrained stem sees 3 channels. For `k` input channels each new channel
`j` takes the RGB kernel of colour `j % 3`, and all are rescaled by 3/k so that the summed
response keeps its ImageNet scale (timm's `adapt_input_conv`). For k = 1 this is the sum of
the three kernels, `w.sum(dim=1, keepdim=True)`: a conv is linear in its input, so the
1-channel network on a gray image x equals the RGB network on `x.repeat(1, 3, 1, 1)` exactly.

Normalisation (`normalization`). The RGB network was trained on x_c = (p - m_c) / s_c. A gray
image fed to it as three copies of p gives the first conv
    sum_c w_c * (p - m_c) / s_c.
The 1-channel network computes (sum_c w_c) * (p - m) / s. Splitting each kernel into its gray
part and a colour part (w_c = w_gray + d_c, sum_c d_c = 0), the two agree exactly on the gray
part when 1/s = mean_c(1/s_c) and m/s = mean_c(m_c/s_c), i.e. s is the harmonic mean of the
stds and m = s * mean_c(m_c / s_c). For ImageNet this is m = 0.4488, s = 0.2260 (the plain
averages 0.449 / 0.226 differ only in the 4th digit); for the Inception family (0.5 / 0.5) it
is 0.5 / 0.5. With k >= 2 channels each channel j keeps the statistics of colour j % 3, as the
kernels do, so an RGB image tiled to k = 3n channels reproduces the RGB network exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.inception import InceptionAux

from medrec.models.specs import ArchSpec


def adapt_conv_weight(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Map RGB conv kernels (out, 3, kh, kw) to `in_channels` input channels (see module doc)."""
    pretrained = weight.shape[1]
    if in_channels == pretrained:
        return weight.clone()
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    index = torch.arange(in_channels) % pretrained
    return weight[:, index] * (pretrained / in_channels)


def normalization(spec: ArchSpec, in_channels: int) -> tuple[list[float], list[float]]:
    """Per-channel (mean, std) for images fed to a network adapted to `in_channels`.

    Stored in every checkpoint; see the module docstring for why these values.
    """
    if in_channels == 1:
        inv = [1.0 / s for s in spec.std]
        std = len(inv) / sum(inv)
        mean = std * sum(m / s for m, s in zip(spec.mean, spec.std)) / len(inv)
        return [mean], [std]
    n = len(spec.mean)
    return [spec.mean[j % n] for j in range(in_channels)], [spec.std[j % n] for j in range(in_channels)]


def input_normalization(cfg) -> tuple[list[float], list[float]]:
    """Per-channel (mean, std) the network's inputs are normalised with, for an ExperimentConfig.

    The pretrained network's statistics (`normalization`) for images in [0, 1]; an MRI already
    z-scored per image is fed as is (mean 0, std 1).
    """
    from medrec.models.specs import get_spec

    k = cfg.model.in_channels
    if cfg.data.modality == "mri" and cfg.data.intensity == "zscore":
        return [0.0] * k, [1.0] * k
    mean, std = normalization(get_spec(cfg.model.arch), k)
    return list(mean), list(std)


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)


def adapt_first_conv(model: nn.Module, spec: ArchSpec, in_channels: int) -> None:
    """Replace the stem conv by one with `in_channels` inputs and adapted kernels, in place."""
    old = model.get_submodule(spec.first_conv)
    assert isinstance(old, nn.Conv2d), f"{spec.name}.{spec.first_conv} is {type(old).__name__}"
    if old.in_channels == in_channels:
        return
    new = nn.Conv2d(
        in_channels, old.out_channels, old.kernel_size, stride=old.stride, padding=old.padding,
        dilation=old.dilation, groups=old.groups, bias=old.bias is not None, padding_mode=old.padding_mode,
    )
    with torch.no_grad():
        new.weight.copy_(adapt_conv_weight(old.weight, in_channels))
        if old.bias is not None:
            new.bias.copy_(old.bias)
    _set_module(model, spec.first_conv, new)


def replace_linear(model: nn.Module, name: str, num_outputs: int) -> None:
    """Put a fresh Linear(in_features, num_outputs) at `name` (the last layer if a Sequential)."""
    old = model.get_submodule(name)
    if isinstance(old, nn.Sequential):  # Dropout + Linear from add_head_dropout
        name, old = f"{name}.{len(old) - 1}", old[-1]
    assert isinstance(old, nn.Linear), f"{name} is {type(old).__name__}"
    _set_module(model, name, nn.Linear(old.in_features, num_outputs))


def add_head_dropout(model: nn.Module, spec: ArchSpec, dropout: float) -> None:
    """Dropout before the classifier: reuse the architecture's own Dropout or insert one."""
    if spec.head_dropout is not None:
        model.get_submodule(spec.head_dropout).p = dropout
        return
    linear = model.get_submodule(spec.classifier)
    _set_module(model, spec.classifier, nn.Sequential(nn.Dropout(dropout), linear))


def replace_heads(model: nn.Module, spec: ArchSpec, num_outputs: int) -> None:
    """New classifier and (kept) auxiliary classifiers with `num_outputs` outputs each."""
    for name in (spec.classifier, *spec.aux_classifiers):
        head, _, _ = name.partition(".")
        if getattr(model, head, None) is not None:
            replace_linear(model, name, num_outputs)


def drop_aux_heads(model: nn.Module, spec: ArchSpec) -> None:
    """Remove the auxiliary heads: the model then returns plain logits in train mode too."""
    for name in spec.aux_heads:
        setattr(model, name, None)
    if hasattr(model, "aux_logits"):
        model.aux_logits = False


class InceptionAuxAnySize(InceptionAux):
    """torchvision's Inception-v3 aux head, also for inputs below 299 px.

    The original pools 5x5/stride 3 and then needs a 5x5 map for its 5x5 conv, i.e. a 17x17
    Mixed_6e output, i.e. >= 299 px input; training at smaller sizes would crash. Below that,
    this head pools adaptively to 5x5 instead; at >= 299 px it is exactly the original.
    Same parameters and state-dict keys as `InceptionAux`.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) >= 17:
            x = F.avg_pool2d(x, kernel_size=5, stride=3)
        else:
            x = F.adaptive_avg_pool2d(x, (5, 5))
        x = self.conv1(self.conv0(x))
        x = torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1)
        return self.fc(x)


def _inception_aux_any_size(model: nn.Module) -> None:
    old = model.AuxLogits
    if old is None:
        return
    new = InceptionAuxAnySize(old.conv0.conv.in_channels, old.fc.out_features)
    new.load_state_dict(old.state_dict())
    model.AuxLogits = new


PATCHES: dict[str, Callable[[nn.Module], None]] = {"inception_aux_any_size": _inception_aux_any_size}
