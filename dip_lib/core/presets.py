"""Named recipes: network, input, optimiser, learning rate, iterations, noise and guard.

Sources (DmitryUlyanov/deep-image-prior @ 042e0d4c): ``inpainting.ipynb`` (kate, vase, library and
Fig. 8's five networks, ``fig8-*``) and ``restoration.ipynb`` (Table 1, barbara); ``table1-seed`` is
the seed report's choice.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from .errors import DipError
from .inputs import make_input
from .nets import NetConfig, ResNetConfig, SkipConfig, UNetConfig, build_net, count_params, min_size, size_multiple
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


def library_net(depth: int = 6) -> SkipConfig:
    """The library hourglass (inpainting.ipynb, cell 14 lines 51-58): input depth 1, widths
    16-32-64-128-128-128 cut to ``depth`` levels, no skips, k_down 5, k_up 3, nearest, no 1x1 up."""
    if not 1 <= depth <= len(_LIB):
        raise ValueError(f"the library hourglass has depth 1..{len(_LIB)}, got {depth}")
    return SkipConfig(
        in_channels=1,
        channels_down=_LIB[:depth],
        channels_up=_LIB[:depth],
        channels_skip=(0,) * depth,
        kernel_down=5,
        kernel_up=3,
        upsample_mode="nearest",
        need_1x1_up=False,
    )


# Fig. 8 (inpainting.ipynb, library branch, cell 14): INPUT 'noise' and input_depth 1 (lines 39-40), i.e.
# z ~ U[0, 0.1) (utils get_noise: var 1/10, 'u'); num_iter 3001 (line 42); reg_noise_std 0 (line 45);
# Adam over the network (cell 13: OPTIMIZER 'adam', OPT_OVER 'net'); no guard, no early stop. Param noise:
# the skip branch sets it (line 46) but the original's closure only rebinds a local name, so no weight
# is ever perturbed; the UNet and ResNet branches switch it off (lines 70, 77). These presets run what
# the original executes: no param noise for any of the five (library-depth6 keeps it, made real).
_FIG8 = dict(input_kind="noise", iterations=3001, optimizer="adam", reg_noise_std=0.0, param_noise=False, guard=False)


@dataclass(frozen=True)
class Preset:
    """A recipe: network, input, optimiser, learning rate, iterations, noise and guard."""

    name: str
    description: str
    net: NetConfig  # in_channels = input depth; out_channels is set from the image
    input_kind: str = "noise"
    iterations: int = 3000
    lr: float = 0.01
    optimizer: str = "adam"
    reg_noise_std: float = 0.03
    param_noise: bool = False
    guard: bool = True

    def net_config(self, out_channels: int, **overrides: Any) -> NetConfig:
        """The network's configuration for an image with ``out_channels`` channels
        (``overrides``: fields of the net's config, e.g. SkipConfig's channels_down)."""
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
    ) -> tuple[nn.Module, torch.Tensor, FitConfig]:
        """Everything a fit of an image of ``shape`` (C, H, W) needs: the network with freshly seeded
        weights, its input (1, C_in, H, W) and the FitConfig (seeded with ``seed``). The one assembly
        path from image and recipe to ``fit``; DipError when the image is too small for the depth
        (or, for the U-Net, its sides are not multiples of 2**depth)."""
        c, h, w = shape
        cfg = self.net_config(c, **(net or {}))
        need = min_size(cfg)
        if min(h, w) < need:
            raise DipError(f"image is {w}x{h} but {self.name!r} at depth {cfg.depth} needs at least {need}x{need}")
        m = size_multiple(cfg)
        if h % m or w % m:
            raise DipError(
                f"image is {w}x{h} but {self.name!r} needs sides that are multiples of {m} "
                "(the original notebook crops its images to multiples of 64)"
            )
        if seed < 0 or seed >= 2**63:
            raise DipError(f"seed must be in [0, 2^63), got {seed}")
        torch.manual_seed(seed)
        model = build_net(cfg)
        z = make_input(self.input_kind, cfg.in_channels, h, w, seed)
        return model, z, self.fit_config(seed=seed, **fit_overrides)

    def param_count(self, out_channels: int) -> int:
        return count_params(build_net(self.net_config(out_channels)))


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
            net=library_net(6),
            iterations=3001,
            lr=0.01,
            reg_noise_std=0.0,
            param_noise=True,
            guard=False,
        ),
        *(
            Preset(
                name=f"fig8-skip{d}",
                description=f"Fig. 8 library (inpainting.ipynb, skip_depth{d}): hourglass depth {d}, "
                "input depth 1, k_down 5, no 1x1 up, Adam 0.01; no param noise (as the original runs)",
                net=library_net(d),
                lr=0.01,
                **_FIG8,
            )
            for d in (6, 4, 2)
        ),
        Preset(
            name="fig8-unet",
            description="Fig. 8 library (inpainting.ipynb, UNET): U-Net feature_scale 8, more_layers 1, "
            "deconv, zero pad, InstanceNorm, input depth 1, Adam 0.001; sides multiples of 32",
            net=UNetConfig(),
            lr=0.001,
            **_FIG8,
        ),
        Preset(
            name="fig8-resnet",
            description="Fig. 8 library (inpainting.ipynb, ResNet): 8 blocks x 32 channels, BatchNorm, "
            "LeakyReLU, input depth 1, Adam 0.001",
            net=ResNetConfig(),
            lr=0.001,
            **_FIG8,
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
