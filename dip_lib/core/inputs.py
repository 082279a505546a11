"""Network inputs z: uniform noise in [0, 0.1) or a 2-channel meshgrid, shape (1, C, H, W)."""

from __future__ import annotations

import torch


def noise_input(channels: int, height: int, width: int, seed: int = 0, scale: float = 0.1) -> torch.Tensor:
    """z ~ U[0, scale)^(1 x C x H x W), drawn on the CPU from ``seed`` (device-independent)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, channels, height, width, generator=g) * scale


def meshgrid_input(height: int, width: int) -> torch.Tensor:
    """z = (x, y) coordinates in [0, 1], shape (1, 2, H, W) (the original's 'meshgrid' input)."""
    ys = torch.linspace(0, 1, height) if height > 1 else torch.zeros(1)
    xs = torch.linspace(0, 1, width) if width > 1 else torch.zeros(1)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx, yy])[None].float()


def make_input(kind: str, channels: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Build the fixed network input of the given ``kind`` ('noise' or 'meshgrid')."""
    if kind == "noise":
        return noise_input(channels, height, width, seed)
    if kind == "meshgrid":
        if channels != 2:
            raise ValueError("a meshgrid input has 2 channels")
        return meshgrid_input(height, width)
    raise ValueError(f"unknown input kind {kind!r} (noise, meshgrid)")
