"""Input-channel adaptation and normalisation, checked against torch's own convolution."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models.inception import InceptionAux

from medrec.models import adapt
from medrec.models.adapt import adapt_conv_weight, adapt_first_conv, normalization
from medrec.models.specs import IMAGENET_MEAN, IMAGENET_STD, get_spec

torch.manual_seed(0)
W = torch.randn(8, 3, 7, 7)


def _conv(x, w):
    return F.conv2d(x, w, stride=2, padding=3)


def test_one_channel_is_the_sum_and_equals_rgb_on_repeated_gray():
    w1 = adapt_conv_weight(W, 1)
    torch.testing.assert_close(w1, W.sum(dim=1, keepdim=True))
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(_conv(x, w1), _conv(x.repeat(1, 3, 1, 1), W), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("k", [2, 4, 5, 6, 9])
def test_k_channels_tile_and_rescale(k):
    wk = adapt_conv_weight(W, k)
    assert wk.shape == (8, k, 7, 7)
    for j in range(k):
        torch.testing.assert_close(wk[:, j], W[:, j % 3] * 3 / k)
    if k % 3 == 0:  # an RGB image tiled k/3 times gives exactly the RGB response
        rgb = torch.randn(1, 3, 32, 32)
        torch.testing.assert_close(_conv(rgb.repeat(1, k // 3, 1, 1), wk), _conv(rgb, W), atol=1e-4, rtol=1e-5)


def test_three_channels_unchanged():
    assert torch.equal(adapt_conv_weight(W, 3), W)


def test_adapt_first_conv_keeps_geometry():
    model = torchvision.models.resnet18(weights=None)
    old = model.conv1
    adapt_first_conv(model, get_spec("resnet18"), 1)
    new = model.conv1
    assert (new.in_channels, new.out_channels, new.kernel_size, new.stride, new.padding, new.bias) == (
        1, old.out_channels, old.kernel_size, old.stride, old.padding, None)
    torch.testing.assert_close(new.weight, old.weight.sum(1, keepdim=True))
    assert list(dict(model.named_children())) == list(dict(torchvision.models.resnet18().named_children()))


def test_gray_normalisation_makes_one_channel_equal_to_the_rgb_pipeline():
    """For kernels with no colour component, the 1-channel model with normalization(spec, 1)
    on a gray image equals the RGB model on that image with ImageNet's per-channel
    normalisation, exactly (border pixels included): the reason for its mean/std."""
    torch.manual_seed(3)
    rgb_model = torchvision.models.resnet18(weights=None).eval()
    with torch.no_grad():
        rgb_model.conv1.weight.copy_(rgb_model.conv1.weight.mean(1, keepdim=True).expand(-1, 3, -1, -1))
    gray_model = torchvision.models.resnet18(weights=None).eval()
    gray_model.load_state_dict(rgb_model.state_dict())
    spec = get_spec("resnet18")
    adapt_first_conv(gray_model, spec, 1)
    pixels = torch.rand(2, 1, 64, 64)
    rgb_in = (pixels.repeat(1, 3, 1, 1) - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    (mean,), (std,) = normalization(spec, 1)
    with torch.no_grad():
        expected = rgb_model(rgb_in)
        got = gray_model((pixels - mean) / std)
        naive = gray_model((pixels - sum(IMAGENET_MEAN) / 3) / (sum(IMAGENET_STD) / 3))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert (naive - expected).abs().max() > (got - expected).abs().max()  # plain averages are worse
    assert mean == pytest.approx(0.4488, abs=1e-4) and std == pytest.approx(0.2260, abs=1e-4)


def test_normalization_shapes():
    spec = get_spec("resnet50")
    assert normalization(spec, 3) == (list(IMAGENET_MEAN), list(IMAGENET_STD))
    mean, std = normalization(spec, 5)
    assert mean == [IMAGENET_MEAN[j % 3] for j in range(5)] and std == [IMAGENET_STD[j % 3] for j in range(5)]
    assert normalization(get_spec("inception_v3"), 1) == ([0.5], [0.5])


def test_inception_aux_any_size_is_the_original_at_299_and_works_below():
    torch.manual_seed(0)
    original = InceptionAux(768, 5).eval()
    ours = adapt.InceptionAuxAnySize(768, 5).eval()
    ours.load_state_dict(original.state_dict())  # same keys
    native = torch.randn(2, 768, 17, 17)  # Mixed_6e output at 299 px
    with torch.no_grad():
        torch.testing.assert_close(ours(native), original(native), atol=0, rtol=0)
        small = torch.randn(2, 768, 3, 3)  # at 75 px
        with pytest.raises(RuntimeError):
            original(small)
        assert ours(small).shape == (2, 5)


def test_replace_heads_and_drop_aux():
    spec = get_spec("googlenet")
    model = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True)
    adapt.replace_heads(model, spec, 4)
    assert (model.fc.out_features, model.aux1.fc2.out_features, model.aux2.fc2.out_features) == (4, 4, 4)
    adapt.drop_aux_heads(model, spec)
    assert model.aux1 is None and model.aux_logits is False
    assert not any(k.startswith("aux") for k in model.state_dict())
