"""Image and mask reading: EXIF orientation, every Pillow mode with its scale, alpha, decompression bombs."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
from PIL import ExifTags, Image

from dip_lib.core.errors import DipError
from dip_lib.core.imageio import image_from_bytes, load_image, load_mask, mask_from_bytes, pil_to_array

RGB = np.array([[[255, 0, 0], [0, 128, 255], [10, 200, 30]], [[0, 0, 0], [255, 255, 255], [90, 60, 30]]], np.uint8)
GRAY = np.array([[0, 40, 80], [120, 200, 255]], np.uint8)
U16 = np.array([[0, 1, 255], [256, 32768, 65535]], np.uint16)


def _png_bytes(img: Image.Image, **save) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **save)
    return buf.getvalue()


def _rgba(rgb: np.ndarray, alpha: np.ndarray) -> Image.Image:
    return Image.fromarray(np.dstack([rgb, alpha]).astype(np.uint8))


# ---------------------------------------------------------------- EXIF orientation


def test_exif_orientation_is_honoured_for_images_and_masks(tmp_path):
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # stored 3x2, shown turned 90 degrees clockwise: 2x3
    Image.fromarray(GRAY).save(tmp_path / "img.png", exif=exif)
    shown = np.rot90(GRAY, -1) / 255.0
    np.testing.assert_allclose(load_image(tmp_path / "img.png")[0], shown, atol=1e-7)
    np.testing.assert_allclose(image_from_bytes((tmp_path / "img.png").read_bytes())[0], shown, atol=1e-7)

    holes = np.array([[255, 0, 255], [255, 255, 0]], np.uint8)
    Image.fromarray(holes).save(tmp_path / "mask.png", exif=exif)
    mask = load_mask(tmp_path / "mask.png", (3, 2))  # the image's (H, W) as shown
    np.testing.assert_array_equal(mask[0], np.rot90(holes, -1) / 255)
    with pytest.raises(DipError, match="2x3 but the image is 3x2"):
        load_mask(tmp_path / "mask.png", (2, 3))


# ---------------------------------------------------------------- modes and their scale


@pytest.mark.parametrize("mode", ["RGB", "RGBX", "RGBa", "CMYK", "YCbCr", "LAB", "HSV"])
def test_colour_modes_become_rgb(mode):
    img = Image.fromarray(RGB).convert(mode)
    arr = pil_to_array(img)
    assert arr.shape == (3, 2, 3) and arr.dtype == np.float32
    # colour-space round trips lose a little (LAB most); a channel copy (garbage) would be off by far more
    np.testing.assert_allclose(arr, RGB.transpose(2, 0, 1) / 255.0, atol=0.08)


@pytest.mark.parametrize("mode", ["L", "LA", "La"])
def test_gray_modes_stay_one_channel(mode):
    img = Image.fromarray(GRAY).convert("LA" if mode == "La" else mode)
    arr = pil_to_array(img.convert(mode))
    assert arr.shape == (1, 2, 3)
    np.testing.assert_allclose(arr[0], GRAY / 255.0, atol=1e-7)


def test_bilevel_and_palette_modes(tmp_path):
    np.testing.assert_array_equal(pil_to_array(Image.fromarray(GRAY).convert("1"))[0], GRAY >= 128)
    pal = Image.fromarray(RGB).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    want = np.asarray(pal.convert("RGB")).transpose(2, 0, 1) / 255.0
    pal.save(tmp_path / "p.png")
    np.testing.assert_allclose(load_image(tmp_path / "p.png"), want, atol=1e-7)
    np.testing.assert_allclose(pil_to_array(pal.convert("PA")), want, atol=1e-7)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "pt.png")
    np.testing.assert_allclose(load_image(tmp_path / "pt.png"), want, atol=1e-7)


@pytest.mark.parametrize("mode", ["I;16", "I;16L", "I;16B", "I;16N"])
def test_16_bit_modes_are_scaled_by_65535(mode):
    order = ">" if mode == "I;16B" else "<" if mode in ("I;16", "I;16L") else "="
    img = Image.frombytes(mode, (3, 2), U16.astype(f"{order}u2").tobytes())
    np.testing.assert_allclose(pil_to_array(img)[0], U16 / 65535.0, atol=1e-7)


def test_16_bit_files_of_each_format(tmp_path):
    Image.frombytes("I;16B", (3, 2), U16.astype(">u2").tobytes()).save(tmp_path / "b.tif")
    np.testing.assert_allclose(load_image(tmp_path / "b.tif")[0], U16 / 65535.0, atol=1e-7)
    dark = np.array([[0, 10, 200]], ">u2")  # every value fits 8 bits, yet the file is 16-bit
    (tmp_path / "dark.pgm").write_bytes(b"P5\n3 1\n65535\n" + dark.tobytes())  # Pillow opens it as mode "I"
    np.testing.assert_allclose(load_image(tmp_path / "dark.pgm")[0], dark / 65535.0, atol=1e-7)


def test_32_bit_integer_images(tmp_path, caplog):
    def tif(values, name):
        Image.fromarray(np.array(values, np.int32)).save(tmp_path / name)
        return tmp_path / name

    with caplog.at_level(logging.WARNING):
        np.testing.assert_allclose(load_image(tif([[0, 100, 255]], "i8.tif"))[0], [[0, 100 / 255, 1]], atol=1e-7)
    assert "reading it as 8-bit" in caplog.text
    np.testing.assert_allclose(load_image(tif([[0, 1000, 65535]], "i16.tif"))[0], [[0, 1000 / 65535, 1]], atol=1e-7)
    for values in ([[0, 70000]], [[-5, 100]]):
        with pytest.raises(DipError, match=r"32-bit integer image with values in \[.*\]; expected 0\.\.65535"):
            load_image(tif(values, "bad.tif"))


def test_float_images(tmp_path):
    values = np.array([[0, 0.25, 1]], np.float32)
    Image.fromarray(values, mode="F").save(tmp_path / "f.tif")
    np.testing.assert_array_equal(load_image(tmp_path / "f.tif")[0], values)
    for bad, why in ((np.nan, "non-finite"), (np.inf, "non-finite"), (-0.5, "expected"), (300.0, "expected")):
        Image.fromarray(np.array([[0, bad]], np.float32), mode="F").save(tmp_path / "bad.tif")
        with pytest.raises(DipError, match=why):
            load_image(tmp_path / "bad.tif")


def test_files_in_other_colour_spaces(tmp_path):
    for mode in ("CMYK", "YCbCr", "LAB"):
        Image.fromarray(RGB).convert(mode).save(tmp_path / f"{mode}.tif")
        np.testing.assert_allclose(load_image(tmp_path / f"{mode}.tif"), RGB.transpose(2, 0, 1) / 255.0, atol=0.08)


def test_an_unknown_mode_is_refused_by_name():
    img = Image.new("L", (2, 2))
    img._mode = "BGR;16"  # a mode this Pillow no longer creates
    with pytest.raises(DipError, match=r"image mode 'BGR;16' is not supported"):
        pil_to_array(img, "odd.png")


# ---------------------------------------------------------------- alpha


def test_image_alpha_is_ignored_with_a_warning_only_when_some_pixel_is_transparent(caplog):
    alpha = np.full(RGB.shape[:2], 255, np.uint8)
    with caplog.at_level(logging.WARNING):
        opaque = image_from_bytes(_png_bytes(_rgba(RGB, alpha)))
    assert caplog.text == ""
    alpha[0, 0] = 0
    with caplog.at_level(logging.WARNING):
        seen = image_from_bytes(_png_bytes(_rgba(RGB, alpha)))
    assert "transparent pixels" in caplog.text
    np.testing.assert_array_equal(seen, opaque)  # the stored colours, as if opaque
    np.testing.assert_allclose(seen, RGB.transpose(2, 0, 1) / 255.0, atol=1e-7)


HOLES = np.array([[1, 0, 1], [1, 1, 0]], bool)  # 1 = known


@pytest.mark.parametrize("colour", [255, 0], ids=["white", "black"])
def test_mask_holes_in_the_alpha_channel_only(colour):
    alpha = np.where(HOLES, 255, 0).astype(np.uint8)
    rgb = np.full((*HOLES.shape, 3), colour, np.uint8)
    for img in (_rgba(rgb, alpha), Image.fromarray(np.dstack([rgb[..., 0], alpha]), "LA")):
        np.testing.assert_array_equal(mask_from_bytes(_png_bytes(img))[0], HOLES)


def test_mask_holes_in_alpha_and_colour_together_and_palette_transparency():
    rgb = np.full((*HOLES.shape, 3), 255, np.uint8)
    rgb[0, 0] = 0  # a black hole among opaque white pixels
    alpha = np.where(HOLES, 255, 0).astype(np.uint8)
    want = HOLES.copy()
    want[0, 0] = False
    np.testing.assert_array_equal(mask_from_bytes(_png_bytes(_rgba(rgb, alpha)))[0], want)
    pal = Image.fromarray(np.where(HOLES, 1, 0).astype(np.uint8), "P")
    pal.putpalette([0, 0, 0, 255, 255, 255])
    np.testing.assert_array_equal(mask_from_bytes(_png_bytes(pal, transparency=0))[0], HOLES)


def test_masks_without_alpha_keep_white_is_known(tmp_path):
    white = np.where(HOLES, 255, 0).astype(np.uint8)
    opaque = _rgba(np.dstack([white] * 3), np.full_like(white, 255))
    np.testing.assert_array_equal(mask_from_bytes(_png_bytes(opaque))[0], HOLES)
    np.testing.assert_array_equal(mask_from_bytes(_png_bytes(Image.fromarray(np.zeros_like(white))))[0], 0)
    np.testing.assert_array_equal(mask_from_bytes(_png_bytes(Image.fromarray(white).convert("1")))[0], HOLES)
    Image.fromarray(np.where(HOLES, 65535, 0).astype(np.uint16)).save(tmp_path / "m16.png")
    np.testing.assert_array_equal(load_mask(tmp_path / "m16.png")[0], HOLES)
    Image.frombytes("I;16B", (3, 2), np.where(HOLES, 65535, 0).astype(">u2").tobytes()).save(tmp_path / "m16b.tif")
    np.testing.assert_array_equal(load_mask(tmp_path / "m16b.tif")[0], HOLES)
    Image.fromarray(np.where(HOLES, 255, 0).astype(np.uint16)).save(tmp_path / "m16_255.png")
    with pytest.raises(DipError, match="4 pixels are neither 0 nor 65535"):
        load_mask(tmp_path / "m16_255.png")


def test_half_transparent_mask_pixels_are_refused():
    alpha = np.where(HOLES, 255, 0).astype(np.uint8)
    alpha[0, 0] = 128
    with pytest.raises(DipError, match="1 pixels are neither opaque nor transparent"):
        mask_from_bytes(_png_bytes(_rgba(np.full((*HOLES.shape, 3), 255, np.uint8), alpha)))


# ---------------------------------------------------------------- decompression bombs


def test_decompression_bombs_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    warned = _png_bytes(Image.new("L", (12, 12), 255))  # 144 pixels: Pillow only warns
    refused = _png_bytes(Image.new("L", (40, 40), 255))  # over twice the limit: Pillow raises
    (tmp_path / "warned.png").write_bytes(warned)
    for content in (warned, refused):
        with pytest.raises(DipError, match="too large"):
            image_from_bytes(content)
        with pytest.raises(DipError, match="too large"):
            mask_from_bytes(content)
    with pytest.raises(DipError, match="too large"):
        load_image(tmp_path / "warned.png")
