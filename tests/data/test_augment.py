import torch
import torch.nn.functional as F

from medrec.data import augment
from medrec.data.augment import BatchAffine


def batch(n=32, size=32):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, size, size, generator=g)


def test_same_seed_same_augmentation_and_different_seed_differs():
    x = batch()
    a = BatchAffine([0.45], [0.23], seed=7).apply(x)
    b = BatchAffine([0.45], [0.23], seed=7).apply(x)
    c = BatchAffine([0.45], [0.23], seed=8).apply(x)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_about_prob_of_the_images_change_and_the_rest_are_untouched():
    x = batch(n=400, size=16)
    out = BatchAffine([0.5], [0.5], seed=1).apply(x)
    changed = (out - x).abs().flatten(1).amax(1) > 1e-6
    assert 0.6 < changed.float().mean() < 0.8  # PROB = 0.7
    assert torch.equal(out[~changed], x[~changed])


def test_border_is_filled_with_normalised_black_and_matches_affine_definition(monkeypatch):
    mean, std = [0.4488], [0.2260]
    x = torch.full((1, 1, 16, 16), 2.0)
    monkeypatch.setattr(augment, "PROB", 1.1)
    aug = BatchAffine(mean, std, seed=3)
    out = aug.apply(x)
    pad = -mean[0] / std[0]
    # A shrink or shift exposes the border: it must take the value of black after normalisation.
    assert torch.isclose(out.min(), torch.tensor(pad), atol=1e-5) or out.min() > pad
    # Independent truth: the same draw through affine_grid/grid_sample written out here.
    u = torch.rand(1, 5, generator=torch.Generator().manual_seed(3))
    a, s = (u[0, 0] * 2 - 1) * augment.ROTATE, 1 + (u[0, 1] * 2 - 1) * augment.SCALE
    t = (u[0, 2:4] * 2 - 1) * 2 * augment.SHIFT
    theta = torch.tensor([[[a.cos() / s, -a.sin() / s, t[0]], [a.sin() / s, a.cos() / s, t[1]]]])
    grid = F.affine_grid(theta, [1, 1, 16, 16], align_corners=False)
    expected = F.grid_sample(x - pad, grid, align_corners=False) + pad
    torch.testing.assert_close(out, expected)


def test_collate_stacks_items_and_keeps_labels():
    items = [{"image": torch.zeros(1, 8, 8), "label": torch.tensor([float(i % 2)]), "index": i} for i in range(4)]
    out = BatchAffine([0.5], [0.5], seed=0)(items)
    assert out["image"].shape == (4, 1, 8, 8)
    assert out["label"].view(-1).tolist() == [0.0, 1.0, 0.0, 1.0]
    assert out["index"].tolist() == [0, 1, 2, 3]
