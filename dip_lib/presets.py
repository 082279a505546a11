"""Named recipes: network, input, optimiser, learning rate, iterations, noise and guard.

Sources (DmitryUlyanov/deep-image-prior @ 042e0d4c): ``inpainting.ipynb`` (kate, vase, library)
and ``restoration.ipynb`` (Table 1, barbara); ``table1-seed`` is the seed report's choice.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from .errors import DipError
from .fit import FitConfig
from .inputs import make_input
from .nets import SkipConfig, SkipNet, count_params

_TEXT_NET = SkipConfig(
    in_channels=32, channels_down=(128,) * 5, channels_up=(128,) * 5, channels_skip=(128,) * 5,
    kernel_down=3, kernel_up=3, kernel_skip=1, upsample_mode="nearest", pad="reflection",
)
_LIB = (16, 32, 64, 128, 128, 128)


@dataclass(frozen=True)
class Preset:
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
    crop_multiple: int = 1  # the original notebooks center-crop to a multiple of this (1: none)

    def build_net(self, out_channels: int, seed: int = 0, **overrides: Any) -> SkipNet:
        """The preset's network with freshly seeded weights (``overrides`` change SkipConfig fields)."""
        cfg = replace(self.net, out_channels=out_channels, **overrides)
        torch.manual_seed(seed)
        return SkipNet(cfg)

    def make_input(self, height: int, width: int, seed: int = 0) -> torch.Tensor:
        return make_input(self.input_kind, self.net.in_channels, height, width, seed)

    def fit_config(self, **overrides: Any) -> FitConfig:
        base = dict(iterations=self.iterations, lr=self.lr, optimizer=self.optimizer,
                    reg_noise_std=self.reg_noise_std, param_noise=self.param_noise, guard=self.guard)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return FitConfig(**base)

    def param_count(self, out_channels: int) -> int:
        return count_params(SkipNet(replace(self.net, out_channels=out_channels)))


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset("text", "kate text inpainting (inpainting.ipynb): noise input 32 ch, 128 skip channels; "
               "no guard, as the original", _TEXT_NET, "noise", 6001, 0.01, "adam", 0.03, False, False, 64),
        Preset("table1-paper", "Table 1 Bernoulli inpainting (restoration.ipynb): skip 4 channels, bilinear, "
               "Adam 0.001, backtracking guard", replace(_TEXT_NET, channels_skip=(4,) * 5, upsample_mode="bilinear"),
               "noise", 11000, 0.001, "adam", 0.03, False, True, 32),
        Preset("table1-seed", "Table 1 with the seed report's choice: the text network, lr 0.01, 6001 it",
               _TEXT_NET, "noise", 6001, 0.01, "adam", 0.03, False, False, 64),
        Preset("vase", "vase inpainting (inpainting.ipynb): meshgrid input, no skip channels",
               replace(_TEXT_NET, in_channels=2, channels_skip=(0,) * 5), "meshgrid", 5001, 0.01, "adam", 0.03, False, False, 64),
        Preset("library-depth6", "library inpainting (inpainting.ipynb, skip_depth6): input depth 1, k_down 5, "
               "no 1x1 up, param noise (implemented here; a no-op in the original), no reg noise",
               SkipConfig(in_channels=1, channels_down=_LIB, channels_up=_LIB, channels_skip=(0,) * 6,
                          kernel_down=5, kernel_up=3, upsample_mode="nearest", need_1x1_up=False),
               "noise", 3001, 0.01, "adam", 0.0, True, False, 64),
    ]
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise DipError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}") from None


def sweep_net(filters: int = 128, depth: int = 5, skip: bool = True) -> SkipConfig:
    """The architecture-sweep family: the text network with ``filters`` per layer and ``depth`` levels."""
    return replace(_TEXT_NET, channels_down=(filters,) * depth, channels_up=(filters,) * depth,
                   channels_skip=((filters if skip else 0),) * depth)
