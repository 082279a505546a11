"""The DIP solver loop: fit one network to one masked image.

min_theta  mean(((f_theta(z + s * eps_t) - y) * m)^2),  eps_t ~ N(0, I) fresh each iteration,
with y (1, C, H, W) the observed image, m (1 or C, H, W) the mask (1 = observed), z the fixed input.

Every ``log_every`` iterations (a "check") the loop syncs with the host once: it logs the loss,
the PSNR against the ground truth (when given) and the PSNR on observed pixels, runs the
destabilisation guard and the callbacks. Between checks nothing leaves the device.
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Protocol

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .metrics import masked_psnr, psnr, ssim

log = logging.getLogger(__name__)


@dataclass
class FitConfig:
    """How to optimise. Defaults follow the original inpainting notebook except where noted."""

    iterations: int = 3000
    lr: float = 0.01
    optimizer: str = "adam"  # "adam" or "lbfgs"
    reg_noise_std: float = 0.0
    param_noise: bool = False  # real here; a no-op in the original (its loop rebinds a local name)
    log_every: int = 10
    guard: bool = True
    guard_drop_db: float = 5.0
    ema_decay: float = 0.99
    snapshots: tuple[int, ...] = ()
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    lbfgs_warmup: int = 100  # Adam steps at lr 0.001 before L-BFGS, as the original

    def __post_init__(self) -> None:
        if self.iterations <= 0:
            raise ValueError("iterations must be positive")
        if self.optimizer not in ("adam", "lbfgs"):
            raise ValueError("optimizer must be 'adam' or 'lbfgs'")
        if self.log_every <= 0:
            raise ValueError("log_every must be positive")
        self.snapshots = tuple(int(s) for s in self.snapshots)


@dataclass
class CheckState:
    """What callbacks see at a check. ``output`` is the network output (1, C, H, W) on the device."""

    iteration: int
    loss: float
    psnr: float | None
    psnr_observed: float
    elapsed: float
    output: torch.Tensor
    restored: bool = False


class Callback(Protocol):
    """A plain function ``f(state) -> bool | None`` works too (called at checks; True stops)."""

    def on_check(self, state: CheckState) -> bool | None: ...


@dataclass
class History:
    iteration: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    psnr: list[float | None] = field(default_factory=list)
    psnr_observed: list[float] = field(default_factory=list)
    elapsed: list[float] = field(default_factory=list)
    restored: list[bool] = field(default_factory=list)

    def to_dict(self) -> dict[str, list]:
        return asdict(self)


@dataclass
class FitResult:
    """Outputs are float32 (C, H, W) numpy arrays; PSNRs in dB (None without ground truth)."""

    history: History
    final: np.ndarray
    ema: np.ndarray
    best: np.ndarray | None
    best_iteration: int | None
    best_psnr: float | None
    final_psnr: float | None
    final_ssim: float | None
    ema_psnr: float | None
    snapshots: dict[int, np.ndarray]
    guard_restores: int
    iterations_run: int
    stopped_at: int | None
    wall_time: float
    device: str

    def summary(self) -> dict[str, Any]:
        return {
            "best_psnr": self.best_psnr,
            "best_iteration": self.best_iteration,
            "final_psnr": self.final_psnr,
            "final_ssim": self.final_ssim,
            "ema_psnr": self.ema_psnr,
            "guard_restores": self.guard_restores,
            "iterations_run": self.iterations_run,
            "stopped_at": self.stopped_at,
            "wall_time": self.wall_time,
            "device": self.device,
        }


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu."""
    if str(device) != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _as_batch(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x, dtype=np.float32)) if not isinstance(x, torch.Tensor) else x.float()
    return t if t.dim() == 4 else t[None]


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()[0]


class _StopFit(Exception):
    pass


def fit(
    net: nn.Module,
    net_input: torch.Tensor,
    observed: np.ndarray | torch.Tensor,
    mask: np.ndarray | torch.Tensor,
    config: FitConfig | None = None,
    ground_truth: np.ndarray | None = None,
    callbacks: Iterable[Callback | Callable[[CheckState], bool | None]] = (),
) -> FitResult:
    """Fit ``net`` so that ``net(net_input) * mask`` matches ``observed * mask``.

    Shapes: net_input (1, C_in, H, W); observed and ground_truth (C, H, W) or (1, C, H, W);
    mask (1 or C, H, W). The network is trained in place (its BatchNorm layers in train mode, as
    in the original). Seeded: with the same ``config.seed`` on the CPU the history is identical.
    """
    cfg = config or FitConfig()
    device = resolve_device(cfg.device)
    net = net.to(device).train()
    z = _as_batch(net_input).to(device)
    y = _as_batch(observed).to(device)
    m = _as_batch(mask).to(device)
    y = y * m
    y_np, m_np = _to_numpy(y), _to_numpy(m)
    gt = None if ground_truth is None else np.asarray(ground_truth, np.float32).reshape(y_np.shape)
    params = [p for p in net.parameters() if p.requires_grad]
    conv_weights = [p for p in params if p.dim() == 4]
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    callbacks = list(callbacks)
    # objects may define on_check and/or on_iteration; a plain function is an on_check
    hooks = [cb.on_check if hasattr(cb, "on_check") else cb for cb in callbacks if hasattr(cb, "on_check") or not hasattr(cb, "on_iteration")]
    iter_hooks = [cb for cb in callbacks if hasattr(cb, "on_iteration")]

    hist = History()
    state: dict[str, Any] = {
        "ema": None, "best": None, "best_it": None, "best_psnr": None, "snap": {}, "restores": 0,
        "good": None, "good_obs": None, "stop": None, "it": 0,
    }
    t0 = time.perf_counter()

    def forward_loss() -> tuple[torch.Tensor, torch.Tensor]:
        if cfg.param_noise:
            with torch.no_grad():
                for p in conv_weights:
                    p.add_(torch.randn(p.shape, generator=gen, device=device) * (p.std() / 50))
        zin = z
        if cfg.reg_noise_std > 0:
            zin = z + cfg.reg_noise_std * torch.randn(z.shape, generator=gen, device=device)
        out = net(zin)
        loss = ((out - y) * m).pow(2).mean()
        return out, loss

    def after_forward(it: int, out: torch.Tensor, loss: torch.Tensor, optimizer: torch.optim.Optimizer | None) -> bool:
        """Bookkeeping for one evaluated iterate; returns False when the guard restored the weights."""
        o = out.detach()
        state["ema"] = o.clone() if state["ema"] is None else state["ema"].mul_(cfg.ema_decay).add_(o, alpha=1 - cfg.ema_decay)
        if it in cfg.snapshots:
            state["snap"][it] = _to_numpy(o)
        for cb in iter_hooks:
            if cb.on_iteration(it, o):
                state["stop"] = it
        if it % cfg.log_every != 0 and it != cfg.iterations - 1:
            return True
        out_np = _to_numpy(o)
        loss_v = float(loss.detach())
        p_obs = masked_psnr(y_np, out_np, m_np)
        p_gt = psnr(gt, out_np) if gt is not None else None
        restored = False
        if cfg.guard and optimizer is not None and state["good_obs"] is not None and p_obs < state["good_obs"] - cfg.guard_drop_db:
            good_params, good_opt = state["good"]
            with torch.no_grad():
                for p, g in zip(params, good_params):
                    p.copy_(g)
            optimizer.load_state_dict(good_opt)
            state["restores"] += 1
            restored = True
            log.info("iteration %d: PSNR on observed pixels fell %.1f dB; restored the last good weights", it, state["good_obs"] - p_obs)
        elif cfg.guard and optimizer is not None:
            state["good"] = ([p.detach().clone() for p in params], copy.deepcopy(optimizer.state_dict()))
            state["good_obs"] = p_obs
        if p_gt is not None and not restored and (state["best_psnr"] is None or p_gt > state["best_psnr"]):
            state["best"], state["best_it"], state["best_psnr"] = out_np, it, p_gt
        elapsed = time.perf_counter() - t0
        hist.iteration.append(it)
        hist.loss.append(loss_v)
        hist.psnr.append(p_gt)
        hist.psnr_observed.append(p_obs)
        hist.elapsed.append(elapsed)
        hist.restored.append(restored)
        check = CheckState(it, loss_v, p_gt, p_obs, elapsed, o, restored)
        for on_check in hooks:
            if on_check(check):
                state["stop"] = it
        if bar is not None:
            bar.set_postfix(loss=f"{loss_v:.2e}", psnr=f"{p_gt:.2f}" if p_gt is not None else "-", obs=f"{p_obs:.2f}")
        return not restored

    bar = tqdm(total=cfg.iterations, disable=not cfg.progress, desc="DIP fit", leave=False)
    try:
        if cfg.optimizer == "adam":
            optimizer = torch.optim.Adam(params, lr=cfg.lr)
            for it in range(cfg.iterations):
                optimizer.zero_grad(set_to_none=True)
                out, loss = forward_loss()
                loss.backward()
                if after_forward(it, out, loss, optimizer):
                    optimizer.step()
                bar.update(1)
                state["it"] = it + 1
                if state["stop"] is not None:
                    break
        else:
            _fit_lbfgs(cfg, params, forward_loss, after_forward, bar, state)
    finally:
        bar.close()

    with torch.no_grad():
        final_t = net(z)
    final = _to_numpy(final_t)
    ema = _to_numpy(state["ema"]) if state["ema"] is not None else final
    wall = time.perf_counter() - t0
    return FitResult(
        history=hist,
        final=final,
        ema=ema,
        best=state["best"],
        best_iteration=state["best_it"],
        best_psnr=state["best_psnr"],
        final_psnr=psnr(gt, final) if gt is not None else None,
        final_ssim=ssim(gt, final) if gt is not None else None,
        ema_psnr=psnr(gt, ema) if gt is not None else None,
        snapshots=state["snap"],
        guard_restores=state["restores"],
        iterations_run=state["it"],
        stopped_at=state["stop"],
        wall_time=wall,
        device=str(device),
    )


def _fit_lbfgs(cfg: FitConfig, params, forward_loss, after_forward, bar, state) -> None:
    """The original's L-BFGS: ``lbfgs_warmup`` Adam steps at lr 0.001, then one L-BFGS step with
    max_iter = the iteration budget and its tolerances disabled. Iterations count function
    evaluations (L-BFGS evaluates several times per step), so its PSNR is logged per evaluation.
    The guard is off for L-BFGS: restoring weights under its line search would corrupt its state."""
    adam = torch.optim.Adam(params, lr=0.001)
    warm = min(cfg.lbfgs_warmup, cfg.iterations)
    for it in range(warm):
        adam.zero_grad(set_to_none=True)
        out, loss = forward_loss()
        loss.backward()
        after_forward(it, out, loss, None)
        adam.step()
        bar.update(1)
        state["it"] = it + 1
        if state["stop"] is not None:
            return
    remaining = cfg.iterations - warm
    if remaining <= 0:
        return
    lbfgs = torch.optim.LBFGS(params, lr=cfg.lr, max_iter=remaining, max_eval=remaining, tolerance_grad=-1, tolerance_change=-1)

    def closure() -> torch.Tensor:
        it = state["it"]
        if it >= cfg.iterations or state["stop"] is not None:
            raise _StopFit
        lbfgs.zero_grad(set_to_none=True)
        out, loss = forward_loss()
        loss.backward()
        after_forward(it, out, loss, None)
        bar.update(1)
        state["it"] = it + 1
        return loss

    try:
        lbfgs.step(closure)
    except _StopFit:
        pass
