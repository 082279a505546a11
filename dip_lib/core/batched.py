"""K independent DIP problems in one network pass: ``fit_many``.

K skip networks of one architecture (separately initialised) run as one network on the channel
axis: input (K, C_in, H, W) -> (1, K*C_in, H, W); every conv becomes a grouped conv (groups = K,
its weight the concatenation of the K weights), BatchNorm runs over K*C channels (with batch 1
per problem, per-channel statistics are per-problem statistics), concatenations interleave per
problem, and the output (1, K*C, H, W) -> (K, C, H, W). The loss is the sum of the K per-problem
losses, so each network's parameters get exactly its own gradient; each problem keeps its own
Adam, noise stream, guard, checks and callbacks (the loop is ``fit.run_problems``).
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import FitConfig, FitResult
from .device import backend_flags, resolve_device
from .nets import Lanczos2Down, Level, center_crop_to
from .solver import fit, run_problems
from .step import prepare_net
from .tracking import Problem

log = logging.getLogger(__name__)

# modules that act on each channel alone: the stacked network applies them unchanged
_CHANNELWISE = (
    nn.ReflectionPad2d,
    nn.ReplicationPad2d,
    nn.ZeroPad2d,
    nn.Upsample,
    nn.LeakyReLU,
    nn.SiLU,
    nn.ELU,
    nn.ReLU,
    nn.Identity,
    nn.Sigmoid,
    nn.AvgPool2d,
    nn.MaxPool2d,
)


def interleave_cat(a: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    """Per-problem channel concat: (1, K*Ca, H, W), (1, K*Cb, H, W) -> (1, K*(Ca+Cb), H, W) with
    problem i's channels [a_i, b_i] together (what torch.cat([a_i, b_i], 1) gives for one problem)."""
    _, ca, h, w = a.shape
    cb = b.shape[1]
    if a.is_contiguous() or not a.is_contiguous(memory_format=torch.channels_last):
        y = torch.cat([a.reshape(k, ca // k, h, w), b.reshape(k, cb // k, h, w)], 1)
        return y.reshape(1, ca + cb, h, w)
    # channels_last: interleave along the innermost (channel) axis and stay channels_last
    al = a.permute(0, 2, 3, 1).reshape(1, h, w, k, ca // k)
    bl = b.permute(0, 2, 3, 1).reshape(1, h, w, k, cb // k)
    return torch.cat([al, bl], 4).reshape(1, h, w, ca + cb).permute(0, 3, 1, 2)


class StackedNets(nn.Module):
    """K SkipNets of one architecture as one module: (K, C_in, H, W) -> (K, C_out, H, W).

    Parameters stay those of the K networks (concatenated on the fly, so gradients land in each
    network's own ``.grad``); BatchNorm running statistics live here stacked until ``write_back``.
    """

    def __init__(self, nets: list[nn.Module], channels_last: bool = False) -> None:
        super().__init__()
        self.nets = nn.ModuleList(nets)
        self.k = len(nets)
        self.channels_last = channels_last
        self._bn_index: dict[int, int] = {}
        groups = zip(*[[m for m in n.modules() if isinstance(m, nn.BatchNorm2d)] for n in nets])
        for i, group in enumerate(groups):
            if group[0].momentum is None or not group[0].track_running_stats:
                raise ValueError("fit_many needs BatchNorm layers with a fixed momentum and running statistics")
            self._bn_index[id(group[0])] = i
            self.register_buffer(f"bn{i}_mean", torch.cat([b.running_mean for b in group]))
            self.register_buffer(f"bn{i}_var", torch.cat([b.running_var for b in group]))
            self.register_buffer(f"bn{i}_count", torch.stack([b.num_batches_tracked for b in group]))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        k, _, h, w = z.shape
        if k != self.k:
            raise ValueError(f"expected {self.k} stacked inputs, got {k}")
        x = z.reshape(1, -1, h, w)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        nets = list(self.nets)
        y = self._level([n.body for n in nets], x)
        y = self._stacked([n.head for n in nets], y)
        y = self._stacked([n.sigmoid for n in nets], y)
        return y.reshape(k, -1, h, w)

    def _stacked(self, mods: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
        m, k = mods[0], self.k
        if isinstance(m, nn.Sequential):
            for sub in zip(*mods):
                x = self._stacked(list(sub), x)
            return x
        if isinstance(m, Level):
            return self._level(mods, x)
        if isinstance(m, nn.Conv2d):
            if m.padding_mode != "zeros":
                raise TypeError("fit_many supports convs with zero padding_mode only")
            w = torch.cat([c.weight for c in mods])
            b = torch.cat([c.bias for c in mods]) if m.bias is not None else None
            return F.conv2d(x, w, b, m.stride, m.padding, m.dilation, m.groups * k)
        if isinstance(m, nn.ConvTranspose2d):
            w = torch.cat([c.weight for c in mods])
            b = torch.cat([c.bias for c in mods]) if m.bias is not None else None
            return F.conv_transpose2d(x, w, b, m.stride, m.padding, m.output_padding, m.groups * k, m.dilation)
        if isinstance(m, nn.BatchNorm2d):
            i = self._bn_index[id(m)]
            w = torch.cat([c.weight for c in mods]) if m.affine else None
            b = torch.cat([c.bias for c in mods]) if m.affine else None
            if m.training:
                getattr(self, f"bn{i}_count").add_(1)
            return F.batch_norm(
                x, getattr(self, f"bn{i}_mean"), getattr(self, f"bn{i}_var"), w, b, m.training, m.momentum, m.eps
            )
        if isinstance(m, Lanczos2Down):
            x = F.pad(x, (m.pad, m.pad + 1, m.pad, m.pad + 1), mode="replicate")
            return F.conv2d(x, torch.cat([c.weight for c in mods]), stride=2, groups=m.channels * k)
        if isinstance(m, _CHANNELWISE):
            return m(x)
        raise TypeError(f"fit_many cannot stack a {type(m).__name__}")

    def _deeper(self, levels: list[Level], x: torch.Tensor) -> torch.Tensor:
        d = self._stacked([lv.down for lv in levels], x)
        if levels[0].inner is not None:
            d = self._level([lv.inner for lv in levels], d)
        return self._stacked([lv.up for lv in levels], d)

    def _level(self, levels: list[Level], x: torch.Tensor) -> torch.Tensor:
        """Level.forward for K stacked levels."""
        lv = levels[0]
        if lv.checkpoint and torch.is_grad_enabled():
            d = checkpoint(self._deeper, levels, x, use_reentrant=False)
        else:
            d = self._deeper(levels, x)
        if d.shape[-2:] != x.shape[-2:]:
            d = center_crop_to(d, x.shape[-2], x.shape[-1])
        y = d if lv.skip is None else interleave_cat(self._stacked([s.skip for s in levels], x), d, self.k)
        return self._stacked([s.merge for s in levels], y)

    @torch.no_grad()
    def write_back(self) -> None:
        """Copy the stacked BatchNorm running statistics back into the K networks."""
        groups = zip(*[[m for m in n.modules() if isinstance(m, nn.BatchNorm2d)] for n in self.nets])
        for i, group in enumerate(groups):
            means = getattr(self, f"bn{i}_mean").chunk(self.k)
            varis = getattr(self, f"bn{i}_var").chunk(self.k)
            counts = getattr(self, f"bn{i}_count")
            for j, bn in enumerate(group):
                bn.running_mean.copy_(means[j])
                bn.running_var.copy_(varis[j])
                bn.num_batches_tracked.copy_(counts[j])


def _signature(net: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(n, tuple(p.shape)) for n, p in net.named_parameters()]


def fit_many(
    nets: list[nn.Module],
    net_inputs: list[torch.Tensor],
    observed: list[np.ndarray],
    masks: list[np.ndarray],
    config: FitConfig,
    ground_truths: list[np.ndarray] | None = None,
    seeds: list[int] | None = None,
    callbacks: list[list] | None = None,
) -> list[FitResult]:
    """Fit K problems of one shape and one network architecture in one pass per iteration.

    Result i equals ``fit(nets[i], net_inputs[i], observed[i], masks[i],
    replace(config, seed=seeds[i]), ground_truths[i], callbacks[i])`` up to float rounding
    (grouped convs sum in another order): same noise streams, per-problem Adam, guard (it
    restores only that problem's weights and Adam state), checks, history, best/EMA/final,
    snapshots and callbacks. Shapes as in ``fit``; all inputs, observations and masks alike.
    ``seeds`` default to ``config.seed`` for all. L-BFGS (or K = 1) runs the problems one by one.
    BatchNorm running statistics (unused in training mode) of a problem that stopped early keep
    following the later passes.
    """
    k = len(nets)
    if k == 0:
        raise ValueError("fit_many needs at least one problem")
    seeds = [config.seed] * k if seeds is None else list(seeds)
    ground_truths = [None] * k if ground_truths is None else list(ground_truths)
    callbacks = [[] for _ in range(k)] if callbacks is None else [list(c) for c in callbacks]
    if not all(len(x) == k for x in (net_inputs, observed, masks, seeds, ground_truths, callbacks)):
        raise ValueError(
            "fit_many needs one net input, observation, mask, seed, ground truth and callback list per net"
        )
    configs = [replace(config, seed=int(s)) for s in seeds]
    if k == 1 or config.optimizer != "adam":
        return [fit(*args) for args in zip(nets, net_inputs, observed, masks, configs, ground_truths, callbacks)]
    sig = _signature(nets[0])
    if any(_signature(n) != sig for n in nets[1:]):
        raise ValueError("fit_many needs networks of one architecture")
    device = resolve_device(config.device)
    with backend_flags(config, device):
        nets = [prepare_net(n, config, device) for n in nets]
        try:
            problems = [
                Problem(*args, device, gt, cb)
                for args, gt, cb in zip(zip(nets, net_inputs, observed, masks, configs), ground_truths, callbacks)
            ]
            if len({(p.z.shape, p.y.shape, p.m.shape) for p in problems}) != 1:
                raise ValueError("fit_many needs problems of one shape (inputs, observations and masks)")
            stacked = StackedNets(nets, channels_last=config.channels_last).to(device)
            model = torch.compile(stacked) if config.compile else stacked
            results = run_problems(model, problems, config, device, eager_model=stacked, desc=f"DIP fit x{k}")
            stacked.write_back()
            return results
        finally:
            if config.checkpointing:
                for n in nets:
                    n.set_checkpointing(False)
