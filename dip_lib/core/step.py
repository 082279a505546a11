"""The training step: the network on its device (``prepare_net``), Adam (``make_adam``) and one
forward + backward of K stacked problems (``Step``), eager or replayed from a captured CUDA graph."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from .config import FitConfig
from .tracking import Problem

log = logging.getLogger(__name__)


def prepare_net(net: nn.Module, cfg: FitConfig, device: torch.device) -> nn.Module:
    """Move to the device in train mode (BatchNorm on batch statistics, as the original), with the
    configured memory format and checkpointing."""
    net = net.to(device).train()
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    if cfg.checkpointing:
        if not hasattr(net, "set_checkpointing"):
            raise ValueError("checkpointing needs a network with set_checkpointing (SkipNet)")
        net.set_checkpointing(True)
    return net


def make_adam(params: list[torch.Tensor], cfg: FitConfig, lr: float | None = None) -> torch.optim.Adam:
    kw: dict[str, Any] = {}
    if cfg.adam_impl == "fused":
        kw["fused"] = True
    elif cfg.adam_impl in ("foreach", "single"):
        kw["foreach"] = cfg.adam_impl == "foreach"
    return torch.optim.Adam(params, lr=cfg.lr if lr is None else lr, **kw)


class Step:
    """One training step of K stacked problems: inputs with fresh noise, one network pass
    (K, C_in, H, W) -> (K, C, H, W), per-problem losses, one backward of their sum (each problem's
    parameters get exactly its own gradient). Eager, or replayed from a captured CUDA graph."""

    def __init__(
        self,
        model: nn.Module,
        problems: list[Problem],
        optimizers: list[torch.optim.Optimizer],
        cfg: FitConfig,
        device: torch.device,
    ) -> None:
        self.model, self.problems, self.optimizers, self.device = model, problems, optimizers, device
        self.bf16 = cfg.precision == "bf16"
        self.graph: torch.cuda.CUDAGraph | None = None
        if cfg.cuda_graphs and device.type == "cuda":
            if cfg.checkpointing or cfg.compile:
                log.info("CUDA graphs are not combined with checkpointing or torch.compile; running eager")
            else:
                self._capture()

    @property
    def graphed(self) -> bool:
        return self.graph is not None

    def _inputs(self, active: list[bool]) -> torch.Tensor:
        zs = [p.noisy_input() if a else p.z for p, a in zip(self.problems, active)]
        return zs[0] if len(zs) == 1 else torch.cat(zs)

    def _forward_backward(self, zin: torch.Tensor, cache: bool = True) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16, cache_enabled=cache):
            out = self.model(zin)
        out = out.float()
        if len(self.problems) == 1:
            outs = [out]
            losses = [self.problems[0].loss(out)]
            total = losses[0]
        else:
            outs = list(out.split(1))
            losses = [p.loss(o) for p, o in zip(self.problems, outs)]
            total = torch.stack(losses).sum()
        total.backward()
        return outs, losses

    def _capture(self) -> None:
        """Capture forward+backward into a CUDA graph: warm up on a side stream (cudnn autotuning,
        lazy inits), capture with the gradients unset so they live in the graph's memory, then put
        back the BatchNorm buffers that the warm-up moved. On failure: log and stay eager."""
        zs = [p.z for p in self.problems]
        self.static_in = (zs[0] if len(zs) == 1 else torch.cat(zs)).clone()
        buffers = list(self.model.buffers())
        saved = [b.detach().clone() for b in buffers]
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    for opt in self.optimizers:
                        opt.zero_grad(set_to_none=True)
                    self._forward_backward(self.static_in, cache=False)
            torch.cuda.current_stream().wait_stream(side)
            for opt in self.optimizers:
                opt.zero_grad(set_to_none=True)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                outs, losses = self._forward_backward(self.static_in, cache=False)
            self.graph, self.static_outs, self.static_losses = graph, outs, losses
        except Exception as exc:  # any capture failure falls back to the eager step
            log.warning("CUDA graph capture failed (%s: %s); running eager", type(exc).__name__, exc)
            torch.cuda.synchronize()
            self.graph = None
        finally:
            for opt in self.optimizers:
                if self.graph is None:
                    opt.zero_grad(set_to_none=True)
            with torch.no_grad():
                for b, s in zip(buffers, saved):
                    b.copy_(s)

    def __call__(self, active: list[bool]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if self.graph is None:
            for opt in self.optimizers:
                opt.zero_grad(set_to_none=True)
            return self._forward_backward(self._inputs(active))
        self.static_in.copy_(self._inputs(active))
        self.graph.replay()
        return self.static_outs, self.static_losses

    def close(self) -> None:
        if self.graph is not None:
            for opt in self.optimizers:
                opt.zero_grad(set_to_none=True)
            self.graph = None
            self.static_outs = self.static_losses = []

    @torch.no_grad()
    def final(self, model: nn.Module) -> list[torch.Tensor]:
        """f_theta(z) for every problem (no noise), at the training precision."""
        zs = [p.z for p in self.problems]
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = model(zs[0] if len(zs) == 1 else torch.cat(zs)).float()
        return [out] if len(zs) == 1 else list(out.split(1))
