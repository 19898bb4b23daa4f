"""build_model against torchvision's own networks loaded with the same weights file."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medrec.config import ARCHS, ModelConfig
from medrec.errors import ConfigError
from medrec.models import adapt
from medrec.models.build import build_model, combined_loss, rebuild_model, split_outputs
from medrec.models.specs import IMAGENET_MEAN, IMAGENET_STD, get_spec


def _size(arch: str) -> int:
    return max(64, get_spec(arch).min_size + 5)  # inception_v3 needs >= 75 px


@pytest.mark.parametrize("arch", ARCHS)
def test_gray_model_equals_torchvision_rgb_model(arch, use_fake_weights, tv_model):
    """1-channel model on gray x == torchvision's 3-channel model on x.repeat(1, 3, 1, 1)."""
    path, sha = use_fake_weights(arch)
    ours, prov = build_model(ModelConfig(arch=arch, in_channels=1), num_outputs=1000, replace_head=False)
    assert prov == {"initialisation": "imagenet", "weights_file": path.name, "weights_sha256": sha}
    ref = tv_model(arch, transform_input=False) if arch in ("googlenet", "inception_v3") else tv_model(arch)
    ref.load_state_dict(torch.load(path, weights_only=True))
    torch.manual_seed(1)
    x = torch.randn(2, 1, _size(arch), _size(arch))
    with torch.no_grad():
        expected = ref.eval()(x.repeat(1, 3, 1, 1))
        got = ours.eval()(x)
    assert expected.shape == (2, 1000) and expected.std() > 0.01  # a non-trivial comparison
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert ours.get_submodule(get_spec(arch).first_conv).in_channels == 1


@pytest.mark.parametrize("arch", ["googlenet", "inception_v3"])
def test_inception_normalisation_replaces_transform_input(arch, use_fake_weights, tv_model):
    """spec mean/std 0.5 without transform_input == torchvision's pretrained pipeline with it."""
    path, _ = use_fake_weights(arch)
    ref = tv_model(arch, transform_input=True)  # what torchvision builds for its pretrained weights
    ref.load_state_dict(torch.load(path, weights_only=True))
    ours, _ = build_model(ModelConfig(arch=arch, in_channels=3), num_outputs=1000, replace_head=False)
    assert ours.transform_input is False
    spec = get_spec(arch)
    torch.manual_seed(2)
    pixels = torch.rand(2, 3, 80, 80)

    def norm(mean, std):
        return (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)

    with torch.no_grad():
        expected = ref.eval()(norm(IMAGENET_MEAN, IMAGENET_STD))
        got = ours.eval()(norm(spec.mean, spec.std))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_checkpoint_rebuilds_strictly_from_weights_none(arch, use_fake_weights):
    """A fine-tuned model's state dict loads strictly into build(weights none): same structure."""
    use_fake_weights(arch)
    cfg = ModelConfig(arch=arch, in_channels=1, dropout=0.3, aux_logits=arch == "googlenet")
    model, _ = build_model(cfg, num_outputs=3)
    spec = get_spec(arch)
    heads = [model.get_submodule(n) for n in (spec.classifier, *spec.aux_classifiers)]
    assert [h[-1].out_features if isinstance(h, torch.nn.Sequential) else h.out_features for h in heads] == [3] * len(heads)
    rebuilt = rebuild_model(cfg.model_dump(mode="json"), model.state_dict(), 3)
    assert rebuilt.state_dict().keys() == model.state_dict().keys()
    x = torch.randn(2, 1, _size(arch), _size(arch))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), model.eval()(x), atol=0, rtol=0)
    assert getattr(rebuilt, "transform_input", False) is False


def test_dropout_before_head():
    resnet, _ = build_model(ModelConfig(arch="resnet18", weights="none", dropout=0.3), num_outputs=2)
    assert isinstance(resnet.fc[0], torch.nn.Dropout) and resnet.fc[0].p == 0.3 and resnet.fc[1].out_features == 2
    plain, _ = build_model(ModelConfig(arch="resnet18", weights="none"), num_outputs=2)
    assert isinstance(plain.fc, torch.nn.Linear)
    googlenet, _ = build_model(ModelConfig(arch="googlenet", weights="none", dropout=0.3), num_outputs=2)
    assert googlenet.dropout.p == 0.3 and googlenet.fc.out_features == 2


def _train_step(model, x, y, aux_weight):
    model.train()
    out = model(x)
    logits, aux = split_outputs(out)
    main = F.cross_entropy(logits, y)
    aux_terms = [F.cross_entropy(a, y) for a in aux]
    loss = combined_loss(F.cross_entropy, out, y, aux_weight)
    loss_without_aux = combined_loss(F.cross_entropy, out, y, 0.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return logits, aux, main, aux_terms, loss, loss_without_aux


@pytest.mark.parametrize(("arch", "size", "n_aux"), [("googlenet", 64, 2), ("inception_v3", 75, 1), ("inception_v3", 299, 1)])
def test_train_step_with_aux_heads_on_gray_input(arch, size, n_aux):
    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, weights="none", in_channels=1, aux_logits=arch == "googlenet", aux_weight=0.4)
    model, _ = build_model(cfg, num_outputs=2)
    aux_head = model.get_submodule(get_spec(arch).aux_classifiers[0])
    before = aux_head.weight.detach().clone()
    x, y = torch.randn(2, 1, size, size), torch.tensor([0, 1])
    logits, aux, main, aux_terms, loss, loss0 = _train_step(model, x, y, cfg.aux_weight)
    assert logits.shape == (2, 2) and len(aux) == n_aux and all(a.shape == (2, 2) for a in aux)
    torch.testing.assert_close(loss, main + 0.4 * sum(aux_terms))
    torch.testing.assert_close(loss0, main)
    assert (loss - loss0).abs() > 1e-3  # the aux weight changes the loss
    assert not torch.equal(aux_head.weight, before)  # and the aux head trains


def test_aux_heads_dropped_when_unused():
    googlenet, _ = build_model(ModelConfig(arch="googlenet", weights="none"), num_outputs=2)
    assert googlenet.aux1 is None and googlenet.aux2 is None
    out = googlenet.train()(torch.randn(2, 1, 64, 64))
    assert isinstance(out, torch.Tensor) and split_outputs(out)[1] == []
    inception, _ = build_model(ModelConfig(arch="inception_v3", weights="none", aux_weight=0), num_outputs=2)
    assert inception.AuxLogits is None and isinstance(inception.train()(torch.randn(2, 1, 75, 75)), torch.Tensor)


def test_bad_requests_fail_clearly():
    with pytest.raises(ConfigError, match="until:<layer>.*layer4"):
        build_model(ModelConfig(arch="resnet18", weights="none", freeze="until:layer9"), num_outputs=2)
    with pytest.raises(ConfigError, match="num_outputs"):
        build_model(ModelConfig(arch="resnet18", weights="none"), num_outputs=2, replace_head=False)
