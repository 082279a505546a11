"""The encoder-decoder "skip" network of Deep Image Prior (Ulyanov et al., CVPR 2018).

f_theta: (N, C_in, H, W) -> (N, C_out, H, W) in (0, 1) (sigmoid output).

Level i of n (structure and parameter counts equal the original ``models/skip.py``):
  skip branch   = conv k_skip -> n_skip[i], BN, act            (absent when n_skip[i] == 0)
  deeper branch = conv k_down stride 2 -> n_down[i], BN, act, conv k_down -> n_down[i], BN, act,
                  level i+1 (if any), upsample x2
  then concat(skip, deeper), BN, conv k_up -> n_up[i], BN, act, [1x1 conv, BN, act]
After level 0: 1x1 conv -> C_out, sigmoid. Branches whose sizes differ (odd sizes) are
center-cropped to the smaller one before concatenation, as the original ``Concat`` does.

Fig. 8's other two networks, as the original builds them for large-hole inpainting (library):
``UNet`` (``models/unet.py``) and ``ResNet`` (``models/resnet.py``); ``build_net`` makes any of the three
from its configuration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint as _checkpoint

ACTIVATIONS = ("LeakyReLU", "Swish", "ELU", "ReLU", "none")
UPSAMPLE_MODES = ("nearest", "bilinear", "deconv")
DOWNSAMPLE_MODES = ("stride", "avg", "max", "lanczos2")
PADS = ("zero", "reflection")
NORMS = ("instance", "batch", "none")


@dataclass(frozen=True)
class SkipConfig:
    """Hyper-parameters of a skip network; lists are per level, level 0 outermost."""

    in_channels: int = 32
    out_channels: int = 3
    channels_down: tuple[int, ...] = (128,) * 5
    channels_up: tuple[int, ...] = (128,) * 5
    channels_skip: tuple[int, ...] = (4,) * 5
    kernel_down: int = 3
    kernel_up: int = 3
    kernel_skip: int = 1
    upsample_mode: str = "bilinear"
    downsample_mode: str = "stride"
    pad: str = "reflection"
    act: str = "LeakyReLU"
    need_1x1_up: bool = True
    need_sigmoid: bool = True

    def __post_init__(self) -> None:
        for name in ("channels_down", "channels_up", "channels_skip"):
            object.__setattr__(self, name, tuple(int(c) for c in getattr(self, name)))
        n = len(self.channels_down)
        if n == 0 or len(self.channels_up) != n or len(self.channels_skip) != n:
            raise ValueError("channels_down, channels_up and channels_skip need the same non-zero length")
        if self.upsample_mode not in UPSAMPLE_MODES:
            raise ValueError(f"upsample_mode must be one of {UPSAMPLE_MODES}")
        if self.downsample_mode not in DOWNSAMPLE_MODES:
            raise ValueError(f"downsample_mode must be one of {DOWNSAMPLE_MODES}")
        if self.pad not in PADS:
            raise ValueError(f"pad must be one of {PADS}")
        if self.act not in ACTIVATIONS:
            raise ValueError(f"act must be one of {ACTIVATIONS}")
        if min(self.kernel_down, self.kernel_up, self.kernel_skip) < 1 or not all(
            k % 2 for k in (self.kernel_down, self.kernel_up, self.kernel_skip)
        ):
            raise ValueError("kernel sizes must be odd (convolutions keep the size)")

    @property
    def depth(self) -> int:
        return len(self.channels_down)


@dataclass(frozen=True)
class UNetConfig:
    """The original U-Net (``models/unet.py``): widths (64, 128, 256, 512, 1024) // feature_scale, then
    ``more_layers`` extra levels at the last width; 4 + more_layers max-poolings (x1/2) and as many x2 ups.
    Defaults: Fig. 8's library network (inpainting.ipynb: feature_scale 8, more_layers 1, deconv,
    zero padding, InstanceNorm, sigmoid; concat_x False and need_bias True, which are not options here)."""

    in_channels: int = 1
    out_channels: int = 3
    feature_scale: int = 8
    more_layers: int = 1
    upsample_mode: str = "deconv"
    pad: str = "zero"
    norm: str = "instance"  # in the down path only, as the original (its up path has no norm)
    need_sigmoid: bool = True

    def __post_init__(self) -> None:
        if self.feature_scale <= 0 or 64 % self.feature_scale:
            raise ValueError("feature_scale must divide 64")
        if self.more_layers < 0:
            raise ValueError("more_layers must be >= 0")
        if self.upsample_mode not in UPSAMPLE_MODES:
            raise ValueError(f"upsample_mode must be one of {UPSAMPLE_MODES}")
        if self.pad not in PADS:
            raise ValueError(f"pad must be one of {PADS}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}")

    @property
    def widths(self) -> tuple[int, ...]:
        """Channels per level, level 0 at full resolution: 5 + more_layers entries."""
        base = tuple(c // self.feature_scale for c in (64, 128, 256, 512, 1024))
        return base + (base[-1],) * self.more_layers

    @property
    def depth(self) -> int:
        """Number of x1/2 poolings; H and W must be multiples of 2**depth."""
        return 4 + self.more_layers


@dataclass(frozen=True)
class ResNetConfig:
    """The original ResNet (``models/resnet.py``), full resolution throughout: 3x3 conv -> act, ``blocks``
    residual blocks of ``channels``, 3x3 conv -> BN, 3x3 conv -> out, sigmoid (always, as the original).
    Defaults: Fig. 8's library network (inpainting.ipynb: 8 blocks x 32 channels, LeakyReLU, BatchNorm,
    reflection padding at the first and last conv)."""

    in_channels: int = 1
    out_channels: int = 3
    blocks: int = 8
    channels: int = 32
    act: str = "LeakyReLU"
    pad: str = "reflection"

    def __post_init__(self) -> None:
        if self.blocks < 0 or self.channels <= 0:
            raise ValueError("blocks must be >= 0 and channels > 0")
        if self.act not in ACTIVATIONS:
            raise ValueError(f"act must be one of {ACTIVATIONS}")
        if self.pad not in PADS:
            raise ValueError(f"pad must be one of {PADS}")

    @property
    def depth(self) -> int:
        """No downsampling."""
        return 0


NetConfig = SkipConfig | UNetConfig | ResNetConfig


def activation(name: str) -> nn.Module:
    if name == "LeakyReLU":
        return nn.LeakyReLU(0.2, inplace=False)
    if name == "Swish":
        return nn.SiLU()
    if name == "ELU":
        return nn.ELU()
    if name == "ReLU":
        return nn.ReLU()
    return nn.Identity()


def lanczos2_kernel(factor: int = 2, support: int = 2) -> np.ndarray:
    """The original's 'lanczos2' downsampling kernel (size 4*factor+1, phase 0.5, normalised)."""
    size = 4 * factor + 1
    kernel = np.zeros((size - 1, size - 1))
    center = (size + 1) / 2.0
    for i in range(1, size):
        for j in range(1, size):
            di = abs(i + 0.5 - center) / factor
            dj = abs(j + 0.5 - center) / factor
            val = 1.0
            for d in (di, dj):
                if d != 0:
                    val *= support * np.sin(np.pi * d) * np.sin(np.pi * d / support) / (np.pi * np.pi * d * d)
                if d >= support:
                    val = 0.0
            kernel[i - 1, j - 1] = val
    return kernel / kernel.sum()


class Lanczos2Down(nn.Module):
    """Fixed (not learned) depthwise lanczos2 filter with stride 2.

    The original stores this kernel in a learnable dense conv that the optimiser then updates;
    here it is a buffer, so it stays the anti-aliasing filter it is meant to be.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        k = torch.tensor(lanczos2_kernel(), dtype=torch.float32)
        self.register_buffer("weight", k.expand(channels, 1, *k.shape).clone())
        self.channels = channels
        self.pad = (k.shape[0] - 1) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (self.pad, self.pad + 1, self.pad, self.pad + 1), mode="replicate")
        return F.conv2d(x, self.weight, stride=2, groups=self.channels)


def conv(
    in_ch: int, out_ch: int, k: int, stride: int = 1, pad: str = "reflection", downsample_mode: str = "stride"
) -> nn.Module:
    """Conv with bias keeping the size ('same' padding); stride 2 done by the chosen downsampler."""
    layers: list[nn.Module] = []
    down: nn.Module | None = None
    if stride != 1 and downsample_mode != "stride":
        # ceil_mode: every downsampler maps a side h to ceil(h / 2), as the strided conv does
        if downsample_mode == "avg":
            down = nn.AvgPool2d(stride, stride, ceil_mode=True)
        elif downsample_mode == "max":
            down = nn.MaxPool2d(stride, stride, ceil_mode=True)
        else:
            down = Lanczos2Down(out_ch)
        stride = 1
    p = (k - 1) // 2
    if pad == "reflection" and p > 0:
        layers.append(nn.ReflectionPad2d(p))
        layers.append(nn.Conv2d(in_ch, out_ch, k, stride, padding=0, bias=True))
    else:
        layers.append(nn.Conv2d(in_ch, out_ch, k, stride, padding=p, bias=True))
    if down is not None:
        layers.append(down)
    return layers[0] if len(layers) == 1 else nn.Sequential(*layers)


def upsample(channels: int, mode: str) -> nn.Module:
    if mode == "deconv":
        return nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1, bias=True)
    return nn.Upsample(scale_factor=2, mode=mode, **({"align_corners": False} if mode == "bilinear" else {}))


def center_crop_to(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    dh, dw = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
    return x[..., dh : dh + h, dw : dw + w]


class Level(nn.Module):
    """One scale of the skip network (see the module docstring)."""

    def __init__(self, cfg: SkipConfig, i: int, in_ch: int) -> None:
        super().__init__()
        n_down, n_up, n_skip = cfg.channels_down[i], cfg.channels_up[i], cfg.channels_skip[i]
        last = i == cfg.depth - 1
        self.skip = (
            nn.Sequential(
                conv(in_ch, n_skip, cfg.kernel_skip, pad=cfg.pad), nn.BatchNorm2d(n_skip), activation(cfg.act)
            )
            if n_skip
            else None
        )
        self.down = nn.Sequential(
            conv(in_ch, n_down, cfg.kernel_down, 2, cfg.pad, cfg.downsample_mode),
            nn.BatchNorm2d(n_down),
            activation(cfg.act),
            conv(n_down, n_down, cfg.kernel_down, pad=cfg.pad),
            nn.BatchNorm2d(n_down),
            activation(cfg.act),
        )
        self.inner = None if last else Level(cfg, i + 1, n_down)
        k = n_down if last else cfg.channels_up[i + 1]
        self.up = upsample(k, cfg.upsample_mode)
        merge: list[nn.Module] = [
            nn.BatchNorm2d(n_skip + k),
            conv(n_skip + k, n_up, cfg.kernel_up, pad=cfg.pad),
            nn.BatchNorm2d(n_up),
            activation(cfg.act),
        ]
        if cfg.need_1x1_up:
            merge += [conv(n_up, n_up, 1, pad=cfg.pad), nn.BatchNorm2d(n_up), activation(cfg.act)]
        self.merge = nn.Sequential(*merge)
        self.checkpoint = False

    def _deeper(self, x: torch.Tensor) -> torch.Tensor:
        d = self.down(x)
        if self.inner is not None:
            d = self.inner(d)
        return self.up(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.checkpoint and torch.is_grad_enabled():
            d = _checkpoint(self._deeper, x, use_reentrant=False)
        else:
            d = self._deeper(x)
        if d.shape[-2:] != x.shape[-2:]:
            # an odd side h comes back as 2 * ceil(h / 2) = h + 1; crop to h, as the original's Concat does
            d = center_crop_to(d, x.shape[-2], x.shape[-1])
        y = d if self.skip is None else torch.cat([self.skip(x), d], dim=1)
        return self.merge(y)


class SkipNet(nn.Module):
    """DIP skip network built from a :class:`SkipConfig`."""

    def __init__(self, cfg: SkipConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.body = Level(cfg, 0, cfg.in_channels)
        self.head = conv(cfg.channels_up[0], cfg.out_channels, 1, pad=cfg.pad)
        self.sigmoid = nn.Sigmoid() if cfg.need_sigmoid else nn.Identity()

    def set_checkpointing(self, enabled: bool) -> "SkipNet":
        """Recompute each level's deeper branch in backward instead of storing it (saves memory)."""
        for m in self.modules():
            if isinstance(m, Level):
                m.checkpoint = enabled
        return self

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.sigmoid(self.head(self.body(z)))


def norm_layer(name: str, channels: int) -> nn.Module:
    """'instance': InstanceNorm2d without affine parameters (torch's default, as the original's);
    'batch': BatchNorm2d; 'none': identity."""
    if name == "instance":
        return nn.InstanceNorm2d(channels)
    if name == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


def double_conv(in_ch: int, out_ch: int, pad: str, norm: str) -> nn.Sequential:
    """(3x3 conv -> norm -> ReLU) twice: (N, in_ch, H, W) -> (N, out_ch, H, W) (the original's unetConv2)."""
    layers: list[nn.Module] = []
    for c in (in_ch, out_ch):
        layers.append(conv(c, out_ch, 3, pad=pad))
        if norm != "none":
            layers.append(norm_layer(norm, out_ch))
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class UNetUp(nn.Module):
    """x (N, in_ch, h, w) -> up (N, out_ch, 2h, 2w); concat with the skip (N, out_ch, 2h, 2w); double_conv
    without norm -> (N, out_ch, 2h, 2w). 'deconv': 4x4 stride-2 transposed conv; else resize + 3x3 conv."""

    def __init__(self, in_ch: int, out_ch: int, mode: str, pad: str) -> None:
        super().__init__()
        if mode == "deconv":
            self.up: nn.Module = nn.ConvTranspose2d(in_ch, out_ch, 4, stride=2, padding=1)
        else:
            self.up = nn.Sequential(upsample(in_ch, mode), conv(in_ch, out_ch, 3, pad=pad))
        self.conv = double_conv(2 * out_ch, out_ch, pad, "none")

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        u = self.up(x)
        return self.conv(torch.cat([u, skip], dim=1))


class UNet(nn.Module):
    """The original U-Net built from a :class:`UNetConfig`: (N, C_in, H, W) -> (N, C_out, H, W), H and W
    multiples of 2**depth. f_0 = double_conv(z); f_i = double_conv(maxpool(f_{i-1})), i = 1..depth;
    x = f_depth; x = up_i(x, f_{i-1}) for i = depth..1; out = sigmoid(1x1 conv(x))."""

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.widths
        self.start = double_conv(cfg.in_channels, w[0], cfg.pad, cfg.norm)
        self.downs = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2, 2), double_conv(w[i - 1], w[i], cfg.pad, cfg.norm)) for i in range(1, len(w))
        )
        # deepest first; up i maps level i's w[i] channels to level i-1's w[i-1]
        self.ups = nn.ModuleList(UNetUp(w[i], w[i - 1], cfg.upsample_mode, cfg.pad) for i in range(len(w) - 1, 0, -1))
        self.head = conv(w[0], cfg.out_channels, 1, pad=cfg.pad)
        self.sigmoid = nn.Sigmoid() if cfg.need_sigmoid else nn.Identity()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        m = 2**self.cfg.depth
        if z.shape[-2] % m or z.shape[-1] % m:
            # the original's floor pooling would return a smaller output; its notebook crops images to x64
            raise ValueError(f"the U-Net needs H and W multiples of {m}, got {tuple(z.shape[-2:])}")
        feats = [self.start(z)]
        for down in self.downs:
            feats.append(down(feats[-1]))
        x = feats.pop()
        for up in self.ups:
            x = up(x, feats.pop())
        return self.sigmoid(self.head(x))


class ResBlock(nn.Module):
    """x + BN(conv(act(BN(conv(x))))), 3x3 convs without bias, zero padding: (N, C, H, W) -> same."""

    def __init__(self, channels: int, act: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(channels),
            activation(act),
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNet(nn.Module):
    """The original ResNet built from a :class:`ResNetConfig`: (N, C_in, H, W) -> (N, C_out, H, W) in (0, 1);
    act(conv(z)) -> blocks -> BN(conv 3x3, zero pad) -> conv 3x3 -> sigmoid."""

    def __init__(self, cfg: ResNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.channels
        self.head = nn.Sequential(conv(cfg.in_channels, c, 3, pad=cfg.pad), activation(cfg.act))
        self.blocks = nn.Sequential(*(ResBlock(c, cfg.act) for _ in range(cfg.blocks)))
        self.tail = nn.Sequential(
            nn.Conv2d(c, c, 3, 1, 1),
            nn.BatchNorm2d(c),
            conv(c, cfg.out_channels, 3, pad=cfg.pad),
            nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.tail(self.blocks(self.head(z)))


def build_net(cfg: NetConfig) -> nn.Module:
    """The network a configuration describes (SkipNet, UNet or ResNet)."""
    if isinstance(cfg, UNetConfig):
        return UNet(cfg)
    if isinstance(cfg, ResNetConfig):
        return ResNet(cfg)
    return SkipNet(cfg)


def describe_net(cfg: NetConfig) -> str:
    """A short architecture label: 'skip d6 w16-128 no-skip', 'unet d5 w8-128', 'resnet 8x32'."""
    if isinstance(cfg, UNetConfig):
        return f"unet d{cfg.depth} w{cfg.widths[0]}-{max(cfg.widths)}"
    if isinstance(cfg, ResNetConfig):
        return f"resnet {cfg.blocks}x{cfg.channels}"
    lo, hi = min(cfg.channels_down), max(cfg.channels_down)
    width = f"w{lo}" if lo == hi else f"w{lo}-{hi}"
    return f"skip d{cfg.depth} {width}" + ("" if any(cfg.channels_skip) else " no-skip")


def count_params(net: nn.Module) -> int:
    """Number of trainable parameters (what the original notebooks print)."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def size_multiple(cfg: NetConfig) -> int:
    """What H and W must be multiples of: 2**depth for the U-Net, 1 otherwise."""
    return 2**cfg.depth if isinstance(cfg, UNetConfig) else 1


def min_size(cfg: NetConfig) -> int:
    """Smallest image side the network accepts (skip: 2**depth + 1 with 3x3 kernels).

    Skip: each level maps a side h to ceil(h / 2). With batch 1, BatchNorm needs more than one pixel
    in the deepest map, and reflection padding needs every map larger than the padding. U-Net:
    2**(depth + 1), a 2x2 deepest map (InstanceNorm needs more than one pixel). ResNet: 2.
    """
    if isinstance(cfg, UNetConfig):
        return 2 ** (cfg.depth + 1)
    if isinstance(cfg, ResNetConfig):
        return 2
    pad = (lambda k: (k - 1) // 2) if cfg.pad == "reflection" else (lambda k: 0)
    deepest = max(2, pad(cfg.kernel_down) + 1)
    deepest_level_input = max(2 * deepest - 1, pad(cfg.kernel_up) + 1, pad(cfg.kernel_skip) + 1)
    return 2 ** (cfg.depth - 1) * (deepest_level_input - 1) + 1


def conv_flops(cfg: NetConfig, height: int, width: int) -> dict[str, float]:
    """FLOPs (2 x multiply-adds) of every convolution of one pass at (height, width).

    forward: sum over convs of 2 k^2 C_in C_out H_out W_out (transposed: H_in W_in). backward: the
    weight gradient costs the same again, the input gradient too, except for the convs reading the
    fixed input z (no gradient needed there). Norms, activations, padding and resizing are not counted.
    """
    if isinstance(cfg, (UNetConfig, ResNetConfig)):
        return _plain_conv_flops(cfg, height, width)
    fwd = bwd = 0.0

    def add(
        c_in: int,
        c_out: int,
        k: int,
        h: int,
        w: int,
        input_grad: bool = True,
        weight_grad: bool = True,
        groups: int = 1,
    ) -> None:
        nonlocal fwd, bwd
        f = 2.0 * k * k * (c_in // groups) * c_out * h * w
        fwd += f
        bwd += f * (int(input_grad) + int(weight_grad))

    h, w, c_in = height, width, cfg.in_channels
    for i in range(cfg.depth):
        n_down, n_up, n_skip = cfg.channels_down[i], cfg.channels_up[i], cfg.channels_skip[i]
        first = i == 0
        h2, w2 = math.ceil(h / 2), math.ceil(w / 2)
        if n_skip:
            add(c_in, n_skip, cfg.kernel_skip, h, w, input_grad=not first)
        if cfg.downsample_mode == "stride":
            add(c_in, n_down, cfg.kernel_down, h2, w2, input_grad=not first)
        else:
            add(c_in, n_down, cfg.kernel_down, h, w, input_grad=not first)
            if cfg.downsample_mode == "lanczos2":
                add(n_down, n_down, 8, h2, w2, weight_grad=False, groups=n_down)
        add(n_down, n_down, cfg.kernel_down, h2, w2)
        k = n_down if i == cfg.depth - 1 else cfg.channels_up[i + 1]
        if cfg.upsample_mode == "deconv":
            add(k, k, 4, h2, w2)  # a stride-2 4x4 transposed conv: 16 MACs per input pixel and channel pair
        add(n_skip + k, n_up, cfg.kernel_up, h, w)
        if cfg.need_1x1_up:
            add(n_up, n_up, 1, h, w)
        h, w, c_in = h2, w2, n_down
    add(cfg.channels_up[0], cfg.out_channels, 1, height, width)
    return {"forward": fwd, "backward": bwd, "total": fwd + bwd}


def _plain_conv_flops(cfg: UNetConfig | ResNetConfig, height: int, width: int) -> dict[str, float]:
    """conv_flops of a U-Net or ResNet: (c_in, c_out, k, h, w, input_grad) per conv, summed."""
    convs: list[tuple[int, int, int, int, int, bool]] = []
    if isinstance(cfg, ResNetConfig):
        c, h, w = cfg.channels, height, width
        convs.append((cfg.in_channels, c, 3, h, w, False))
        convs += [(c, c, 3, h, w, True)] * (2 * cfg.blocks + 1)
        convs.append((c, cfg.out_channels, 3, h, w, True))
    else:
        ws = cfg.widths
        sizes = [(height // 2**i, width // 2**i) for i in range(len(ws))]
        convs += [(cfg.in_channels, ws[0], 3, *sizes[0], False), (ws[0], ws[0], 3, *sizes[0], True)]
        for i in range(1, len(ws)):
            convs += [(ws[i - 1], ws[i], 3, *sizes[i], True), (ws[i], ws[i], 3, *sizes[i], True)]
            k_up = 4 if cfg.upsample_mode == "deconv" else 3  # deconv: at level i's size; else at i-1's
            convs.append((ws[i], ws[i - 1], k_up, *sizes[i if k_up == 4 else i - 1], True))
            convs += [
                (2 * ws[i - 1], ws[i - 1], 3, *sizes[i - 1], True),
                (ws[i - 1], ws[i - 1], 3, *sizes[i - 1], True),
            ]
        convs.append((ws[0], cfg.out_channels, 1, *sizes[0], True))
    fwd = sum(2.0 * k * k * ci * co * h * w for ci, co, k, h, w, _ in convs)
    bwd = sum(2.0 * k * k * ci * co * h * w * (1 + int(g)) for ci, co, k, h, w, g in convs)
    return {"forward": fwd, "backward": bwd, "total": fwd + bwd}
