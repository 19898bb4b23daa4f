import math

import pytest
import torch

from medrec.config import AffineAug, RotateAug, ZoomAug, validate_config
from medrec.data.augment import BatchAffine, batch_augment


def batch(n=32, size=32):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, size, size, generator=g)


def ramp(n: int, size: int = 33) -> torch.Tensor:
    """Images whose value is the column coordinate in [-1, 1] (a left-to-right ramp)."""
    x = torch.linspace(-1, 1, size)
    return x.view(1, 1, 1, size).expand(n, 1, size, size).clone()


def test_same_seed_same_augmentation_and_different_seed_differs():
    x = batch()
    geo = {"rotate": RotateAug(), "zoom": ZoomAug(), "affine": AffineAug()}
    a = BatchAffine(7, **geo).apply(x)
    b = BatchAffine(7, **geo).apply(x)
    c = BatchAffine(8, **geo).apply(x)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("prob", [0.2, 0.7])
def test_about_prob_of_the_images_change_and_the_rest_are_untouched(prob):
    x = batch(n=600, size=16)
    out = BatchAffine(1, rotate=RotateAug(prob=prob, degrees=20)).apply(x)
    changed = (out - x).abs().flatten(1).amax(1) > 1e-6
    assert abs(changed.float().mean().item() - prob) < 0.06
    assert torch.equal(out[~changed], x[~changed])


def test_rotation_stays_within_the_configured_degrees():
    # The gradient of a rotated ramp points along the rotation: its angle is the drawn angle.
    x = ramp(200)
    out = BatchAffine(3, rotate=RotateAug(prob=1.0, degrees=25)).apply(x)
    c = out[:, 0, 12:21, 12:21]  # centre, away from the padded corners
    gx = (c[:, :, 2:] - c[:, :, :-2]).mean(dim=(1, 2))
    gy = (c[:, 2:, :] - c[:, :-2, :]).mean(dim=(1, 2))
    angles = torch.rad2deg(torch.atan2(gy, gx)).abs()
    assert angles.max() <= 25.5
    assert angles.max() > 15  # and really uses the range


def test_zoom_magnifies_by_the_drawn_factor():
    # Magnified twice, everything is twice as large: the ramp rises half as fast per pixel.
    x = ramp(4)
    out = BatchAffine(0, zoom=ZoomAug(prob=1.0, range=(2.0, 2.0))).apply(x)
    slope_in = (x[:, 0, 16, 20] - x[:, 0, 16, 12]) / 8
    slope_out = (out[:, 0, 16, 20] - out[:, 0, 16, 12]) / 8
    torch.testing.assert_close(slope_out, slope_in / 2, rtol=1e-4, atol=1e-5)


def test_shift_moves_the_image_by_at_most_the_configured_fraction():
    x = ramp(300)
    out = BatchAffine(5, affine=AffineAug(prob=1.0, shift=0.1)).apply(x)
    step = 2 / 32  # ramp value per pixel
    moved = (out[:, 0, 16, 16] - x[:, 0, 16, 16]).abs() / step  # pixels moved along x
    assert moved.max() <= 0.1 * 33 + 0.5
    assert moved.max() > 0.06 * 33


def test_exposed_border_takes_each_images_own_minimum():
    # A shrink exposes the border; it must take the image's darkest value, not a fixed one.
    x = torch.stack([torch.full((1, 16, 16), 4.0), torch.full((1, 16, 16), -2.5)])
    x[0, 0, 5, 5] = 3.0  # image 0's minimum
    out = BatchAffine(0, zoom=ZoomAug(prob=1.0, range=(0.5, 0.5))).apply(x)
    assert out[0, 0, 0, 0].item() == pytest.approx(3.0)
    assert torch.allclose(out[1], torch.tensor(-2.5))


def test_matches_the_affine_written_out():
    # Independent truth: the same draws through affine_grid/grid_sample with the matrix written here.
    torch.manual_seed(0)
    x = torch.rand(3, 1, 16, 16)
    rot, zoom, aff = RotateAug(prob=1.0, degrees=30), ZoomAug(prob=1.0, range=(0.8, 1.2)), \
        AffineAug(prob=1.0, shift=0.1, shear=0.2)
    out = BatchAffine(9, rotate=rot, zoom=zoom, affine=aff).apply(x)
    u = torch.rand(3, 8, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    for i in range(3):
        a = (u[i, 1] * 2 - 1) * math.radians(30)
        z = 0.8 + u[i, 3] * 0.4
        t = (u[i, 5:7] * 2 - 1) * 0.2
        sh = (u[i, 7] * 2 - 1) * 0.2
        m = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=torch.float64) \
            @ torch.tensor([[1.0, sh], [0.0, 1.0]], dtype=torch.float64) / z
        theta = torch.cat([m, t[:, None]], 1)[None].float()
        grid = torch.nn.functional.affine_grid(theta, [1, 1, 16, 16], align_corners=False)
        lo = x[i].min()
        expected = torch.nn.functional.grid_sample(x[i:i + 1] - lo, grid, align_corners=False) + lo
        torch.testing.assert_close(out[i:i + 1], expected, atol=1e-5, rtol=1e-5)


def test_collate_stacks_items_and_keeps_labels():
    items = [{"image": torch.zeros(1, 8, 8), "label": torch.tensor([float(i % 2)]), "index": i} for i in range(4)]
    out = BatchAffine(0, rotate=RotateAug())(items)
    assert out["image"].shape == (4, 1, 8, 8)
    assert out["label"].view(-1).tolist() == [0.0, 1.0, 0.0, 1.0]
    assert out["index"].tolist() == [0, 1, 2, 3]


def test_batch_augment_follows_the_config():
    none = validate_config({"data": {"augment": "none"}}).data
    assert batch_augment(none, 0) is None
    no_geo = validate_config({"data": {"augment": {"preset": "cxr", "rotate": False, "zoom": False,
                                                   "affine": False}}}).data
    assert batch_augment(no_geo, 0) is None
    custom = validate_config({"data": {"augment": {"preset": "cxr", "rotate": {"degrees": 15}}}}).data
    aug = batch_augment(custom, 0)
    assert aug.rotate == RotateAug(prob=0.5, degrees=15.0)  # the preset's prob, the config's degrees
    assert aug.zoom == ZoomAug(prob=0.5, range=(0.9, 1.1))
