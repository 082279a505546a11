"""The DIP solver loop: fit one network to one masked image.

min_theta  mean(((f_theta(z + s * eps_t) - y) * m)^2),  eps_t ~ N(0, I) fresh each iteration,
with y (1, C, H, W) the observed image, m (1 or C, H, W) the mask (1 = observed), z the fixed input.

Every ``log_every`` iterations (a "check") the loop syncs with the host once: it logs the loss,
the PSNR against the ground truth (when given) and the PSNR on observed pixels, runs the
destabilisation guard and the callbacks. Between checks nothing leaves the device; on a GPU the
check itself computes its PSNRs on the device and moves three numbers.

Speed levers (all off by default; ``fast_config`` picks the measured-best ones per device, see
``python -m dip_lib bench``): bf16 autocast, channels_last, cudnn.benchmark, TF32, the Adam
implementation, torch.compile, CUDA graphs, and activation checkpointing for memory.
The same loop drives ``batched.fit_many`` (K problems in one network pass).
"""
from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .metrics import masked_psnr, psnr, ssim

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16")
ADAM_IMPLS = ("auto", "single", "foreach", "fused")


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
    # speed and memory levers (defaults: the plain fp32 eager loop)
    precision: str = "fp32"  # "bf16": network forward under bf16 autocast; loss, Adam and PSNR stay fp32
    channels_last: bool = False  # NHWC activations and weights
    cudnn_benchmark: bool = False  # autotune conv algorithms (CUDA; set for the fit, then restored)
    tf32: bool | None = None  # CUDA TF32 for fp32 convs/matmuls during the fit; None keeps torch's setting
    adam_impl: str = "auto"  # "auto" (torch's choice), "single", "foreach" or "fused"
    compile: bool = False  # torch.compile the network (first iterations pay the compile time)
    cuda_graphs: bool = False  # replay forward+backward from one captured CUDA graph (Adam, CUDA only)
    checkpointing: bool = False  # recompute each level's deeper branch in backward (saves memory)
    threads: int | None = None  # torch intra-op CPU threads during the fit; None keeps torch's setting

    def __post_init__(self) -> None:
        if self.iterations <= 0:
            raise ValueError("iterations must be positive")
        if self.optimizer not in ("adam", "lbfgs"):
            raise ValueError("optimizer must be 'adam' or 'lbfgs'")
        if self.log_every <= 0:
            raise ValueError("log_every must be positive")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}")
        if self.adam_impl not in ADAM_IMPLS:
            raise ValueError(f"adam_impl must be one of {ADAM_IMPLS}")
        if self.threads is not None and self.threads <= 0:
            raise ValueError("threads must be positive")
        self.snapshots = tuple(int(s) for s in self.snapshots)


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (avx512_bf16 or AMX); elsewhere bf16 is emulated and slow."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "").split()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def other_cpu_load(window: float = 0.25) -> float | None:
    """Cores' worth of CPU time that other processes (and, in a VM, the hypervisor's steal) used
    during ``window`` seconds, from /proc/stat minus this process's own time; None off Linux."""
    def sample() -> tuple[float, float]:
        fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0.0)  # all but idle and iowait
        own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        return busy, float(own[11]) + float(own[12])  # utime + stime of this process

    try:
        busy0, own0 = sample()
        time.sleep(window)
        busy1, own1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    return max(0.0, ((busy1 - busy0) - (own1 - own0)) / tick / window)


def idle_cpu_threads() -> int | None:
    """Threads for a CPU fit on a shared machine: the cores the other processes leave idle (at
    least 1), or None (torch's default) when that is all of them or cannot be measured. OpenMP ops
    wait for their slowest thread, so threads on busy cores stall every op: on this project's
    2-core machine under a load of 4-6, one thread ran 10x faster than two."""
    cores = os.cpu_count() or 1
    others = other_cpu_load()
    if others is None:
        return None
    free = max(1, int(cores - others + 0.5))
    return None if free >= min(cores, torch.get_num_threads()) else free


def fast_config(cfg: FitConfig | None = None, device: str | torch.device | None = None) -> FitConfig:
    """``cfg`` with the levers that measurably help on ``device`` (default: ``cfg.device``).

    CUDA: CUDA graphs (3.6x at 256 px: the eager loop is launch-bound), fused Adam, cudnn.benchmark
    and TF32 convs, in fp32 NCHW. Not bf16: it missed the 0.3 dB parity rule (one seed of three by
    0.006 dB) and ran no faster eagerly; not channels_last: neutral to 16% slower in fp32 (H200,
    results/bench-gpu-h200-*.json). CPU: fused Adam, as many threads as there are idle cores
    (measured now, see ``idle_cpu_threads``), and bf16 autocast only on CPUs with native bf16
    (emulated it ran ~3x slower). bf16 passed the parity rule of ``dip_lib.parity`` on the CPU
    (results/bench-vm-cpu-parity.json: mean -0.05 dB, 90% CI [-0.47, +0.37] within the fp32
    control's 0.49 dB); bf16 with channels_last did not (CI [-0.03, +0.55]), so NCHW stays.
    torch.compile is left out: ~7% at 128 px for ~4 minutes of compiling. Other devices: unchanged.
    """
    cfg = cfg or FitConfig()
    dev = resolve_device(cfg.device if device is None else device)
    if dev.type == "cuda":
        return replace(cfg, precision="fp32", channels_last=False, cudnn_benchmark=True, tf32=True,
                       adam_impl="fused", cuda_graphs=True)
    if dev.type == "cpu":
        return replace(cfg, precision="bf16" if cpu_has_native_bf16() else "fp32", adam_impl="fused",
                       threads=idle_cpu_threads())
    return cfg


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


def _copy_all(dst: list[torch.Tensor], src: list[torch.Tensor]) -> None:
    """dst[i] <- src[i] in place (one fused launch per device where torch has it)."""
    if not dst:
        return
    if hasattr(torch, "_foreach_copy_") and all(d.device == s.device for d, s in zip(dst, src)):
        torch._foreach_copy_(dst, src)
    else:
        for d, s in zip(dst, src):
            d.copy_(s)


class _StopFit(Exception):
    pass


class _GoodCopy:
    """The guard's last good parameters and optimiser state, kept in preallocated buffers.

    Saving copies in place (no reallocation, no deepcopy); restoring is what
    ``optimizer.load_state_dict(deepcopy(saved))`` did: parameters and per-parameter state take
    the saved values, and a parameter that had no state yet gets none.
    """

    def __init__(self, params: list[torch.Tensor]) -> None:
        self.params = params
        self.saved_params: list[torch.Tensor] | None = None
        self.saved_state: list[dict[str, Any]] = []

    @torch.no_grad()
    def save(self, optimizer: torch.optim.Optimizer) -> None:
        if self.saved_params is None:
            self.saved_params = [p.detach().clone() for p in self.params]
        else:
            _copy_all(self.saved_params, [p.detach() for p in self.params])
        states = [optimizer.state.get(p, {}) for p in self.params]
        same = len(self.saved_state) == len(states) and all(
            s.keys() == t.keys() and all(not isinstance(v, torch.Tensor) or v.shape == t[k].shape for k, v in s.items())
            for s, t in zip(states, self.saved_state))
        if not same:
            self.saved_state = [{k: v.detach().clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)
                                 for k, v in s.items()} for s in states]
            return
        dst, src = [], []
        for s, t in zip(states, self.saved_state):
            for k, v in s.items():
                if isinstance(v, torch.Tensor):
                    dst.append(t[k])
                    src.append(v.detach())
                else:
                    t[k] = copy.deepcopy(v)
        _copy_all(dst, src)

    @torch.no_grad()
    def restore(self, optimizer: torch.optim.Optimizer) -> None:
        _copy_all(self.params, self.saved_params)
        dst, src = [], []
        for p, t in zip(self.params, self.saved_state):
            cur = optimizer.state.get(p)
            if not t:
                optimizer.state.pop(p, None)
            elif cur is not None and cur.keys() == t.keys() and all(
                    not isinstance(v, torch.Tensor) or (isinstance(cur[k], torch.Tensor) and cur[k].shape == v.shape) for k, v in t.items()):
                for k, v in t.items():
                    if isinstance(v, torch.Tensor):
                        dst.append(cur[k])
                        src.append(v)
                    else:
                        cur[k] = copy.deepcopy(v)
            else:
                optimizer.state[p] = {k: v.clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v) for k, v in t.items()}
        _copy_all(dst, src)


class _Problem:
    """One inpainting problem: its tensors on the device, its noise stream and its bookkeeping
    (EMA, snapshots, checks with history, guard, best output, callbacks)."""

    def __init__(self, net: nn.Module, net_input, observed, mask, cfg: FitConfig, device: torch.device,
                 ground_truth: np.ndarray | None, callbacks: Iterable) -> None:
        self.cfg, self.device, self.net = cfg, device, net
        fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.z = _as_batch(net_input).to(device).contiguous(memory_format=fmt)
        m = _as_batch(mask).to(device)
        self.y = _as_batch(observed).to(device) * m
        self.m = m
        self.y_np, self.m_np = _to_numpy(self.y), _to_numpy(self.m)
        self.gt = None if ground_truth is None else np.asarray(ground_truth, np.float32).reshape(self.y_np.shape)
        self.params = [p for p in net.parameters() if p.requires_grad]
        self.conv_weights = [p for p in self.params if p.dim() == 4]
        self.gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
        callbacks = list(callbacks)
        # objects may define on_check and/or on_iteration; a plain function is an on_check
        self.hooks = [cb.on_check if hasattr(cb, "on_check") else cb for cb in callbacks
                      if hasattr(cb, "on_check") or not hasattr(cb, "on_iteration")]
        self.iter_hooks = [cb for cb in callbacks if hasattr(cb, "on_iteration")]
        self.hist = History()
        self.ema: torch.Tensor | None = None
        self.best: np.ndarray | torch.Tensor | None = None
        self.best_it: int | None = None
        self.best_psnr: float | None = None
        self.snap: dict[int, np.ndarray] = {}
        self.restores = 0
        self.good = _GoodCopy(self.params)
        self.good_obs: float | None = None
        self.stop: int | None = None
        self.it = 0
        self.t0 = time.perf_counter()
        self.bar: Any = None
        # on an accelerator the checks' PSNRs are computed there (float64 where it exists)
        self.on_host = device.type == "cpu"
        if not self.on_host:
            dt = torch.float32 if device.type == "mps" else torch.float64
            self._y = self.y.to(dt)
            self._w = (self.m > 0.5).to(dt).expand_as(self.y)
            self._n_obs = float(self._w.sum())
            self._gt = None if self.gt is None else torch.as_tensor(self.gt[None]).to(device, dt)

    def noisy_input(self) -> torch.Tensor:
        """z + s * eps (fresh eps from this problem's generator); param noise first, if on."""
        cfg, gen, device = self.cfg, self.gen, self.device
        if cfg.param_noise:
            with torch.no_grad():
                for p in self.conv_weights:
                    p.add_(torch.randn(p.shape, generator=gen, device=device) * (p.std() / 50))
        if cfg.reg_noise_std > 0:
            return self.z + cfg.reg_noise_std * torch.randn(self.z.shape, generator=gen, device=device)
        return self.z

    def loss(self, out: torch.Tensor) -> torch.Tensor:
        return ((out - self.y) * self.m).pow(2).mean()

    def _metrics(self, o: torch.Tensor, loss: torch.Tensor) -> tuple[float, float, float | None, np.ndarray | None]:
        """(loss, PSNR on observed pixels, PSNR against the ground truth, output on the host or None)."""
        if self.on_host:
            out_np = _to_numpy(o)
            p_gt = psnr(self.gt, out_np) if self.gt is not None else None
            return float(loss.detach()), masked_psnr(self.y_np, out_np, self.m_np), p_gt, out_np
        est = o.to(self._y.dtype).clamp(0, 1)
        mse_obs = ((self._y - est) ** 2 * self._w).sum() / self._n_obs if self._n_obs else est.new_zeros(())
        vals = [loss.detach().to(est.dtype).reshape(()), 10 * torch.log10(1 / mse_obs)]
        if self._gt is not None:
            vals.append(10 * torch.log10(1 / ((self._gt - est) ** 2).mean()))
        got = torch.stack(vals).tolist()
        return got[0], got[1], (got[2] if self._gt is not None else None), None

    def after_forward(self, it: int, out: torch.Tensor, loss: torch.Tensor, optimizer: torch.optim.Optimizer | None,
                      fresh: bool = True) -> bool:
        """Bookkeeping for one evaluated iterate; returns False when the guard restored the weights.
        ``fresh`` False: ``out`` is a buffer reused next iteration, so callbacks get a copy."""
        cfg = self.cfg
        o = out.detach()
        self.ema = o.clone() if self.ema is None else self.ema.mul_(cfg.ema_decay).add_(o, alpha=1 - cfg.ema_decay)
        if it in cfg.snapshots:
            self.snap[it] = _to_numpy(o)
        if self.iter_hooks:
            o_cb = o if fresh else o.clone()
            for cb in self.iter_hooks:
                if cb.on_iteration(it, o_cb):
                    self.stop = it
        if it % cfg.log_every != 0 and it != cfg.iterations - 1:
            return True
        loss_v, p_obs, p_gt, out_np = self._metrics(o, loss)
        restored = False
        # a NaN PSNR (diverged weights) counts as a drop and is never saved as "good"
        dropped = math.isnan(p_obs) or (self.good_obs is not None and p_obs < self.good_obs - cfg.guard_drop_db)
        if cfg.guard and optimizer is not None and self.good_obs is not None and dropped:
            self.good.restore(optimizer)
            self.restores += 1
            restored = True
            log.info("iteration %d: PSNR on observed pixels fell %.1f dB; restored the last good weights", it, self.good_obs - p_obs)
        elif cfg.guard and optimizer is not None and not math.isnan(p_obs):
            self.good.save(optimizer)
            self.good_obs = p_obs
        if p_gt is not None and not restored and (self.best_psnr is None or p_gt > self.best_psnr):
            self.best, self.best_it, self.best_psnr = (out_np if out_np is not None else o.clone()), it, p_gt
        elapsed = time.perf_counter() - self.t0
        hist = self.hist
        hist.iteration.append(it)
        hist.loss.append(loss_v)
        hist.psnr.append(p_gt)
        hist.psnr_observed.append(p_obs)
        hist.elapsed.append(elapsed)
        hist.restored.append(restored)
        if self.hooks:
            check = CheckState(it, loss_v, p_gt, p_obs, elapsed, o if fresh else o.clone(), restored)
            for on_check in self.hooks:
                if on_check(check):
                    self.stop = it
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss_v:.2e}", psnr=f"{p_gt:.2f}" if p_gt is not None else "-", obs=f"{p_obs:.2f}")
        return not restored

    def result(self, final_t: torch.Tensor, wall: float) -> FitResult:
        gt = self.gt
        final = _to_numpy(final_t)
        ema = _to_numpy(self.ema) if self.ema is not None else final
        best = _to_numpy(self.best) if isinstance(self.best, torch.Tensor) else self.best
        return FitResult(
            history=self.hist,
            final=final,
            ema=ema,
            best=best,
            best_iteration=self.best_it,
            best_psnr=self.best_psnr,
            final_psnr=psnr(gt, final) if gt is not None else None,
            final_ssim=ssim(gt, final) if gt is not None else None,
            ema_psnr=psnr(gt, ema) if gt is not None else None,
            snapshots=self.snap,
            guard_restores=self.restores,
            iterations_run=self.it,
            stopped_at=self.stop,
            wall_time=wall,
            device=str(self.device),
        )


def _tf32_places() -> list[tuple[Any, str]]:
    """Where torch keeps the TF32 switches for convs and matmuls: the fp32_precision API of torch
    >= 2.9 (mixing it with the legacy allow_tf32 flags raises), else the legacy flags."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        return [(conv, "fp32_precision"), (torch.backends.cuda.matmul, "fp32_precision")]
    return [(torch.backends.cudnn, "allow_tf32"), (torch.backends.cuda.matmul, "allow_tf32")]


def tf32_flags() -> tuple[str, str]:
    """('tf32' or 'ieee') for (cuDNN convs, matmuls)."""
    vals = [getattr(obj, name) for obj, name in _tf32_places()]
    return tuple(v if isinstance(v, str) else ("tf32" if v else "ieee") for v in vals)  # type: ignore[return-value]


def set_tf32_flags(flags: tuple[str, str]) -> None:
    for (obj, name), value in zip(_tf32_places(), flags):
        setattr(obj, name, value if name == "fp32_precision" else value == "tf32")


@contextlib.contextmanager
def backend_flags(cfg: FitConfig, device: torch.device) -> Iterator[None]:
    """Set CPU threads, cudnn.benchmark and TF32 as ``cfg`` asks for a fit, then restore them."""
    threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    try:
        if device.type != "cuda" or (not cfg.cudnn_benchmark and cfg.tf32 is None):
            yield
            return
        cudnn = torch.backends.cudnn
        saved_benchmark, saved_tf32 = cudnn.benchmark, tf32_flags()
        try:
            if cfg.cudnn_benchmark:
                cudnn.benchmark = True
            if cfg.tf32 is not None:
                set_tf32_flags(("tf32" if cfg.tf32 else "ieee",) * 2)
            yield
        finally:
            cudnn.benchmark = saved_benchmark
            set_tf32_flags(saved_tf32)
    finally:
        if cfg.threads is not None:
            torch.set_num_threads(threads)


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


class _Step:
    """One training step of K stacked problems: inputs with fresh noise, one network pass
    (K, C_in, H, W) -> (K, C, H, W), per-problem losses, one backward of their sum (each problem's
    parameters get exactly its own gradient). Eager, or replayed from a captured CUDA graph."""

    def __init__(self, model: nn.Module, problems: list[_Problem], optimizers: list[torch.optim.Optimizer],
                 cfg: FitConfig, device: torch.device) -> None:
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


def run_problems(model: nn.Module, problems: list[_Problem], cfg: FitConfig, device: torch.device,
                 eager_model: nn.Module | None = None, desc: str = "DIP fit") -> list[FitResult]:
    """The loop shared by ``fit`` (one problem) and ``batched.fit_many`` (K stacked problems).

    ``model`` maps the stacked inputs (K, C_in, H, W) to outputs (K, C, H, W); ``eager_model``
    (default ``model``) is the uncompiled one for the final no-grad pass. A problem that a
    callback stops leaves the loop (no more checks or steps) while the others go on.
    """
    t0 = time.perf_counter()
    for p in problems:
        p.t0 = t0
    problems[0].bar = bar = tqdm(total=cfg.iterations, disable=not cfg.progress, desc=desc, leave=False)
    step: _Step | None = None
    try:
        if cfg.optimizer == "adam":
            optimizers = [make_adam(p.params, cfg) for p in problems]
            step = _Step(model, problems, optimizers, cfg, device)
            active = [True] * len(problems)
            for it in range(cfg.iterations):
                outs, losses = step(active)
                for k, p in enumerate(problems):
                    if not active[k]:
                        continue
                    if p.after_forward(it, outs[k], losses[k], optimizers[k], fresh=not step.graphed):
                        optimizers[k].step()
                    p.it = it + 1
                    active[k] = p.stop is None
                bar.update(1)
                if not any(active):
                    break
        else:
            if len(problems) != 1:
                raise ValueError("L-BFGS fits one problem at a time")
            step = _Step(model, problems, [], replace(cfg, cuda_graphs=False), device)
            _fit_lbfgs(cfg, problems[0], step, bar)
    finally:
        bar.close()
        if step is not None:
            step.close()
    finals = step.final(model if eager_model is None else eager_model)
    wall = time.perf_counter() - t0
    return [p.result(f, wall) for p, f in zip(problems, finals)]


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
    with backend_flags(cfg, device):
        net = prepare_net(net, cfg, device)
        try:
            problem = _Problem(net, net_input, observed, mask, cfg, device, ground_truth, callbacks)
            model = torch.compile(net) if cfg.compile else net
            return run_problems(model, [problem], cfg, device, eager_model=net)[0]
        finally:
            if cfg.checkpointing:
                net.set_checkpointing(False)


def _fit_lbfgs(cfg: FitConfig, problem: _Problem, step: _Step, bar) -> None:
    """The original's L-BFGS: ``lbfgs_warmup`` Adam steps at lr 0.001, then one L-BFGS step with
    max_iter = the iteration budget and its tolerances disabled. Iterations count function
    evaluations (L-BFGS evaluates several times per step), so its PSNR is logged per evaluation.
    The guard is off for L-BFGS: restoring weights under its line search would corrupt its state."""
    adam = make_adam(problem.params, cfg, lr=0.001)
    warm = min(cfg.lbfgs_warmup, cfg.iterations)
    step.optimizers = [adam]
    for it in range(warm):
        (out,), (loss,) = step([True])
        problem.after_forward(it, out, loss, None)
        adam.step()
        bar.update(1)
        problem.it = it + 1
        if problem.stop is not None:
            return
    remaining = cfg.iterations - warm
    if remaining <= 0:
        return
    lbfgs = torch.optim.LBFGS(problem.params, lr=cfg.lr, max_iter=remaining, max_eval=remaining, tolerance_grad=-1, tolerance_change=-1)
    step.optimizers = [lbfgs]

    def closure() -> torch.Tensor:
        it = problem.it
        if it >= cfg.iterations or problem.stop is not None:
            raise _StopFit
        (out,), (loss,) = step([True])
        problem.after_forward(it, out, loss, None)
        bar.update(1)
        problem.it = it + 1
        return loss

    try:
        lbfgs.step(closure)
    except _StopFit:
        pass
