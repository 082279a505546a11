"""Named recipes: network, input, optimiser, learning rate, iterations, noise and guard.

Sources (DmitryUlyanov/deep-image-prior @ 042e0d4c): ``inpainting.ipynb`` (kate, vase, library)
and ``restoration.ipynb`` (Table 1, barbara); ``table1-seed`` is the seed report's choice.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from .errors import DipError
from .inputs import make_input
from .nets import SkipConfig, SkipNet, count_params, min_size
from .solver import FitConfig

_TEXT_NET = SkipConfig(
    in_channels=32,
    channels_down=(128,) * 5,
    channels_up=(128,) * 5,
    channels_skip=(128,) * 5,
    kernel_down=3,
    kernel_up=3,
    kernel_skip=1,
    upsample_mode="nearest",
    pad="reflection",
)
_LIB = (16, 32, 64, 128, 128, 128)


@dataclass(frozen=True)
class Preset:
    """A recipe: network, input, optimiser, learning rate, iterations, noise and guard."""

    name: str
    description: str
    net: SkipConfig  # in_channels = input depth; out_channels is set from the image
    input_kind: str = "noise"
    iterations: int = 3000
    lr: float = 0.01
    optimizer: str = "adam"
    reg_noise_std: float = 0.03
    param_noise: bool = False
    guard: bool = True

    def net_config(self, out_channels: int, **overrides: Any) -> SkipConfig:
        """The network's configuration for an image with ``out_channels`` channels
        (``overrides``: SkipConfig fields, e.g. channels_down)."""
        return replace(self.net, out_channels=out_channels, **overrides)

    def fit_config(self, **overrides: Any) -> FitConfig:
        """The recipe's FitConfig; ``overrides`` (None values ignored) replace its fields."""
        base = dict(
            iterations=self.iterations,
            lr=self.lr,
            optimizer=self.optimizer,
            reg_noise_std=self.reg_noise_std,
            param_noise=self.param_noise,
            guard=self.guard,
        )
        base.update({k: v for k, v in overrides.items() if v is not None})
        return FitConfig(**base)

    def setup(
        self, shape: tuple[int, int, int], seed: int = 0, net: dict[str, Any] | None = None, **fit_overrides: Any
    ) -> tuple[SkipNet, torch.Tensor, FitConfig]:
        """Everything a fit of an image of ``shape`` (C, H, W) needs: the network with freshly seeded
        weights, its input (1, C_in, H, W) and the FitConfig (seeded with ``seed``). The one assembly
        path from image and recipe to ``fit``; DipError when the image is too small for the depth."""
        c, h, w = shape
        cfg = self.net_config(c, **(net or {}))
        need = min_size(cfg)
        if min(h, w) < need:
            raise DipError(f"image is {w}x{h} but {self.name!r} at depth {cfg.depth} needs at least {need}x{need}")
        if seed < 0 or seed >= 2**63:
            raise DipError(f"seed must be in [0, 2^63), got {seed}")
        torch.manual_seed(seed)
        model = SkipNet(cfg)
        z = make_input(self.input_kind, cfg.in_channels, h, w, seed)
        return model, z, self.fit_config(seed=seed, **fit_overrides)

    def param_count(self, out_channels: int) -> int:
        return count_params(SkipNet(self.net_config(out_channels)))


def sweep_net(filters: int = 128, depth: int = 5, skip: bool = True) -> SkipConfig:
    """The architecture-sweep family: the text network with ``filters`` per layer and ``depth`` levels."""
    return replace(
        _TEXT_NET,
        channels_down=(filters,) * depth,
        channels_up=(filters,) * depth,
        channels_skip=((filters if skip else 0),) * depth,
    )


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            name="text",
            description="kate text inpainting (inpainting.ipynb): noise input 32 ch, 128 skip "
            "channels; no guard, as the original",
            net=_TEXT_NET,
            iterations=6001,
            lr=0.01,
            guard=False,
        ),
        Preset(
            name="table1-paper",
            description="Table 1 Bernoulli inpainting (restoration.ipynb): skip 4 channels, "
            "bilinear, Adam 0.001, backtracking guard",
            net=replace(_TEXT_NET, channels_skip=(4,) * 5, upsample_mode="bilinear"),
            iterations=11000,
            lr=0.001,
            guard=True,
        ),
        Preset(
            name="table1-seed",
            description="Table 1 with the seed report's choice: the text network, lr 0.01, 6001 it",
            net=_TEXT_NET,
            iterations=6001,
            lr=0.01,
            guard=False,
        ),
        Preset(
            name="vase",
            description="vase inpainting (inpainting.ipynb): meshgrid input, no skip channels",
            net=replace(_TEXT_NET, in_channels=2, channels_skip=(0,) * 5),
            input_kind="meshgrid",
            iterations=5001,
            lr=0.01,
            guard=False,
        ),
        Preset(
            name="library-depth6",
            description="library inpainting (inpainting.ipynb, skip_depth6): input depth "
            "1, k_down 5, no 1x1 up, param noise (implemented here; a no-op in the original), no reg noise",
            net=SkipConfig(
                in_channels=1,
                channels_down=_LIB,
                channels_up=_LIB,
                channels_skip=(0,) * 6,
                kernel_down=5,
                kernel_up=3,
                upsample_mode="nearest",
                need_1x1_up=False,
            ),
            iterations=3001,
            lr=0.01,
            reg_noise_std=0.0,
            param_noise=True,
            guard=False,
        ),
        Preset(
            name="fast",
            description="the cheapest recipe within 0.5 dB of the best in the quick profile's cost sweep "
            "(report page 06): table1-seed's network at 32 filters, lr 0.01, 2000 iterations",
            net=sweep_net(32),
            iterations=2000,
            lr=0.01,
            guard=False,
        ),
    ]
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise DipError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}") from None
