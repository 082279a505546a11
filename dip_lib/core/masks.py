"""Inpainting masks (1 = observed, 0 = missing) and the masking physics y = m * x.

Masks are float32 arrays of shape (1, H, W) (pixelwise, broadcast over channels) or (C, H, W)
(one draw per channel).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import DipError

# The seed report's text mask on a 512x512 canvas: (text, font size px, (x, y) of the top-left).
SEED_TEXT = (
    ("Image Corruption", 30, (128, 128)),
    ("Text Over Image", 25, (250, 300)),
    ("Deep Learning Project", 25, (200, 400)),
)
TEXT_RECIPES = {"seed": SEED_TEXT}


@dataclass
class Inpainting:
    """Physics of inpainting: A(x) = m * x with a fixed binary mask m of shape (1 or C, H, W)."""

    mask: torch.Tensor

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask

    @property
    def missing_fraction(self) -> float:
        return float(1.0 - self.mask.float().mean())


def bernoulli_mask(shape: tuple[int, int], missing: float, seed: int = 0, channels: int = 1) -> np.ndarray:
    """Drop each pixel independently with probability ``missing``.

    channels=1 gives one draw per pixel (all channels together, shape (1, H, W)); channels=C gives
    one draw per channel and pixel (shape (C, H, W)), as the original notebook and the seed did.
    """
    if not 0.0 < missing < 1.0:
        raise DipError(f"the missing fraction must be in (0, 1), got {missing}")
    rng = np.random.default_rng(seed)
    h, w = shape
    return (rng.random((channels, h, w)) >= missing).astype(np.float32)


def font_path() -> Path:
    """DejaVu Sans Bold as shipped inside matplotlib (never a system font path)."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans-Bold.ttf"
    if not path.exists():
        raise DipError(f"matplotlib's DejaVuSans-Bold.ttf is missing at {path}")
    return path


def text_mask(shape: tuple[int, int], items) -> np.ndarray:
    """Render strings as missing pixels. ``items``: iterable of (text, size_px, (x, y)) top-left."""
    from PIL import Image, ImageDraw, ImageFont

    h, w = shape
    canvas = Image.new("L", (w, h), 255)
    draw = ImageDraw.Draw(canvas)
    for text, size, (x, y) in items:
        font = ImageFont.truetype(str(font_path()), int(size))
        draw.text((int(x), int(y)), str(text), fill=0, font=font)
    return (np.asarray(canvas) > 127).astype(np.float32)[None]


def recipe_text_mask(shape: tuple[int, int], recipe: str = "seed") -> np.ndarray:
    """A named text-mask recipe, scaled from its 512x512 design to ``shape`` (H, W)."""
    if recipe not in TEXT_RECIPES:
        raise DipError(f"unknown text mask recipe {recipe!r}; known: {', '.join(TEXT_RECIPES)}")
    h, w = shape
    sy, sx = h / 512.0, w / 512.0
    items = [
        (t, max(6, round(s * min(sx, sy))), (round(x * sx), round(y * sy))) for t, s, (x, y) in TEXT_RECIPES[recipe]
    ]
    return text_mask(shape, items)


def user_text_mask(shape: tuple[int, int], text: str) -> np.ndarray:
    """A free text (lines split by '\\n' or ' | ') spread over the image, font about h/16."""
    lines = [s for s in text.replace(" | ", "\n").split("\n") if s.strip()] or [text]
    h, w = shape
    size = max(8, h // 16)
    step = h / (len(lines) + 1)
    items = [(line, size, (w // 16, round(step * (k + 1) - size / 2))) for k, line in enumerate(lines)]
    return text_mask(shape, items)


def resize_mask(mask: np.ndarray, shape: tuple[int, int], margin: int | None = None) -> np.ndarray:
    """Resize a (C, H, W) {0, 1} mask to ``shape`` (h, w) so that a pixel is known only when every source
    pixel under it, widened by ``margin`` source pixels, was known: an anti-aliased image resize blends
    each output pixel from about that far (default: the blur of ``imageio.resize_longer_side``), so no
    known pixel takes colour from a hole."""
    c, big_h, big_w = mask.shape
    h, w = shape
    if (big_h, big_w) == (h, w):
        return mask
    if margin is None:
        # skimage's anti-aliasing sigma is (scale - 1) / 2 source pixels: two sigmas, and one for the interpolation
        margin = 1 + math.ceil(max(0.0, max(big_h / h, big_w / w) - 1))
    holes = np.pad((mask < 0.5).cumsum(1).cumsum(2), ((0, 0), (1, 0), (1, 0)))  # holes in [0, y) x [0, x)

    def edges(n: int, big: int) -> tuple[np.ndarray, np.ndarray]:
        k = np.arange(n)
        lo = np.floor(k * big / n).astype(int) - margin
        hi = np.ceil((k + 1) * big / n).astype(int) + margin
        return np.clip(lo, 0, big), np.clip(hi, 0, big)

    (y0, y1), (x0, x1) = edges(h, big_h), edges(w, big_w)
    count = holes[:, y1][:, :, x1] - holes[:, y0][:, :, x1] - holes[:, y1][:, :, x0] + holes[:, y0][:, :, x0]
    return (count == 0).astype(np.float32)
