"""medrec.io.color through read_image: grey images however they were saved, colour refused or converted.

Truths: the grey arrays the tests wrote, Pillow's own decode of the same file (`convert("L")`),
the error of a grey JPEG of the same quality, and BT.601 luma computed here.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from medrec.errors import ColourImageError, ConfigError
from medrec.io.color import CHROMA_LEVELS, measure_colour
from medrec.io.images import read_image


def radiograph(seed: int = 0, size: int = 256) -> np.ndarray:
    """A grey radiograph-like uint8 image: smooth body, dark lungs, rib stripes, noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    body = 60 + 120 * np.exp(-((x - 0.5) ** 2 / 0.12 + (y - 0.55) ** 2 / 0.2))
    lungs = 70 * (np.exp(-((x - 0.32) ** 2 / 0.01 + (y - 0.5) ** 2 / 0.05))
                  + np.exp(-((x - 0.68) ** 2 / 0.01 + (y - 0.5) ** 2 / 0.05)))
    ribs = 25 * (np.sin(2 * np.pi * (y * 9 + 0.3 * np.abs(x - 0.5))) > 0.7)
    return np.clip(body - lungs + ribs + rng.normal(0, 4, (size, size)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("quality", [70, 85, 95])
@pytest.mark.parametrize("noise", [0.0, 1.5])
def test_grey_saved_as_rgb_jpeg_reads_as_grey(tmp_path, quality, noise):
    grey = radiograph(quality)
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float64)
    rgb += np.random.default_rng(1).normal(0, noise, rgb.shape)  # a scanner's faint per-channel noise
    path, grey_path = tmp_path / "rgb.jpg", tmp_path / "grey.jpg"
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB").save(path, quality=quality, subsampling=0)
    Image.fromarray(grey, "L").save(grey_path, quality=quality)
    image, meta = read_image(path)
    assert meta["conversion"] in ("rgb_identical", "rgb_near_grey") and meta["mode"] == "RGB"
    if noise == 0:
        assert meta["conversion"] == "rgb_identical"
    # the same file as Pillow's BT.601 luma (which rounds to integers)
    pil_luma = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
    assert np.abs(image - pil_luma).max() <= 0.5 + 1e-3
    # and as close to the grey original as a grey JPEG of the same quality is (plus the added noise)
    grey_error = np.abs(np.asarray(Image.open(grey_path), np.float32) - grey).mean()
    assert np.abs(image - grey).mean() <= grey_error + 0.5 + noise / 2


def test_rgba_and_la_png_drop_alpha(tmp_path):
    grey = radiograph(1, 64)
    alpha = np.full_like(grey, 255)
    alpha[:8] = 0  # a transparent band: noted, not applied
    for mode, arr in (("RGBA", np.dstack([grey, grey, grey, alpha])), ("LA", np.dstack([grey, alpha]))):
        path = tmp_path / f"{mode}.png"
        Image.fromarray(arr, mode).save(path)
        image, meta = read_image(path)
        np.testing.assert_array_equal(image, grey)
        assert meta["alpha"] == "not_opaque" and meta["mode"] == mode
    Image.fromarray(np.dstack([grey, np.full_like(grey, 255)]), "LA").save(tmp_path / "opaque.png")
    assert read_image(tmp_path / "opaque.png")[1]["alpha"] == "opaque"


def test_palette_png_goes_through_its_palette(tmp_path):
    index = np.random.default_rng(2).integers(0, 256, (32, 40), dtype=np.uint8)
    im = Image.fromarray(index, "P")
    im.putpalette([v for i in range(256) for v in (255 - i,) * 3])  # reversed grey ramp
    im.save(tmp_path / "p.png")
    image, meta = read_image(tmp_path / "p.png", window="auto")
    np.testing.assert_allclose(image, (255 - index.astype(np.float32)) / 255, atol=1e-7)
    assert meta["conversion"] == "palette" and meta["mode"] == "P"
    im.info["transparency"] = 0  # palette entry 0 transparent -> alpha noted
    im.save(tmp_path / "pt.png", transparency=0)
    assert read_image(tmp_path / "pt.png")[1]["alpha"] == "not_opaque"


def test_16bit_png_and_float_tiff(tmp_path):
    arr = np.random.default_rng(3).integers(0, 65536, (20, 30)).astype(np.uint16)
    Image.fromarray(arr).save(tmp_path / "a.png")
    assert Image.open(tmp_path / "a.png").mode.startswith("I")
    raw, meta = read_image(tmp_path / "a.png")
    np.testing.assert_array_equal(raw, arr)
    np.testing.assert_allclose(read_image(tmp_path / "a.png", window="auto")[0], arr / 65535, rtol=1e-6)
    assert meta["bit_depth"] == 16 and meta["conversion"] == "grey"
    f = np.random.default_rng(4).normal(100, 30, (10, 12)).astype(np.float32)
    Image.fromarray(f, "F").save(tmp_path / "f.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "f.tif")[0], f)
    Image.fromarray(np.repeat(arr[..., None] >> 8, 3, 2).astype(np.uint8), "RGB").save(tmp_path / "g.bmp")
    np.testing.assert_array_equal(read_image(tmp_path / "g.bmp")[0], arr >> 8)


def coloured_figure(path) -> np.ndarray:
    im = Image.fromarray(np.repeat(radiograph(5)[..., None], 3, 2), "RGB")
    ImageDraw.Draw(im).polygon([(100, 100), (140, 115), (100, 130)], fill=(230, 30, 30))  # a red arrow
    im.save(path)
    return np.asarray(im)


def test_coloured_figure_refused_with_the_measure_or_converted(tmp_path):
    rgb = coloured_figure(tmp_path / "fig.png")
    spread = rgb.max(2).astype(int) - rgb.min(2)
    share = 100 * (spread > CHROMA_LEVELS).mean()
    with pytest.raises(ColourImageError) as e:
        read_image(tmp_path / "fig.png")
    text = str(e.value)
    assert f"mean channel difference {spread.mean():.2f}" in text and f"{share:.3f}% of pixels" in text
    assert "fig.png" in text and "data.color: convert" in text
    image, meta = read_image(tmp_path / "fig.png", color="convert")
    luma = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(image, luma, atol=1e-3)
    assert meta["conversion"] == "rgb_luma"


def test_strict_refuses_anything_not_stored_grey(tmp_path):
    grey = radiograph(6, 32)
    Image.fromarray(grey, "L").convert("RGB").save(tmp_path / "rgb.png")
    Image.fromarray(grey, "L").save(tmp_path / "l.png")
    with pytest.raises(ColourImageError, match="stored as RGB, not grey, and data.color is strict"):
        read_image(tmp_path / "rgb.png", color="strict")
    np.testing.assert_array_equal(read_image(tmp_path / "l.png", color="strict")[0], grey)
    with pytest.raises(ConfigError, match="valid: auto, convert, strict"):
        read_image(tmp_path / "l.png", color="gray")


def test_measure_against_a_hand_computation():
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (10, 30, 20)  # spread 20 > CHROMA_LEVELS
    rgb[1, 1] = (5, 5, 7)  # spread 2
    m = measure_colour(rgb)
    assert (m.mean_spread, m.chroma_share, m.max_spread) == (5.5, 0.25, 20)
    assert not m.near_grey
