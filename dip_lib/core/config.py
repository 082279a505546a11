"""How a fit runs: ``FitConfig`` (the recipe's optimisation and the speed levers), ``fast_config``
(the measured-best levers per device), and what a fit reports (``CheckState``, ``History``, ``FitResult``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import torch

from .device import cpu_has_native_bf16, idle_cpu_threads, resolve_device
from .errors import DipError

PRECISIONS = ("fp32", "bf16")
# FitConfig's speed and memory levers (what ``fast_config`` may change)
LEVERS = (
    "precision",
    "channels_last",
    "cudnn_benchmark",
    "tf32",
    "adam_impl",
    "compile",
    "cuda_graphs",
    "checkpointing",
    "threads",
    "noise_rng",
)
ADAM_IMPLS = ("auto", "single", "foreach", "fused")
NOISE_RNGS = ("torch", "numpy")


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
    # the input L-BFGS fits after its warm-up: "clean" z (a deterministic objective, which its curvature
    # pairs need), or "perturbed" by fresh noise at every evaluation as the original, where each pair
    # mixes two noise draws, its step scale collapses and the weights stop moving (kate 96 px, 32
    # filters: 24.59 dB from iteration 120 to 6000; clean: 33.3 dB at 400)
    lbfgs_input: str = "clean"
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
    noise_rng: str = "torch"  # "numpy": input noise by numpy's ziggurat into a reused buffer (CPU; not faster here)

    def __post_init__(self) -> None:
        if self.iterations <= 0:
            raise ValueError("iterations must be positive")
        if self.optimizer not in ("adam", "lbfgs"):
            raise ValueError("optimizer must be 'adam' or 'lbfgs'")
        if self.lbfgs_input not in ("clean", "perturbed"):
            raise ValueError("lbfgs_input must be 'clean' or 'perturbed'")
        if self.log_every <= 0:
            raise ValueError("log_every must be positive")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}")
        if self.adam_impl not in ADAM_IMPLS:
            raise ValueError(f"adam_impl must be one of {ADAM_IMPLS}")
        if self.noise_rng not in NOISE_RNGS:
            raise ValueError(f"noise_rng must be one of {NOISE_RNGS}")
        if self.threads is not None and self.threads <= 0:
            raise ValueError("threads must be positive")
        self.snapshots = tuple(int(s) for s in self.snapshots)


def fast_config(cfg: FitConfig | None = None, device: str | torch.device | None = None) -> FitConfig:
    """``cfg`` with the levers that measurably help on ``device`` (default: ``cfg.device``).

    CUDA: CUDA graphs (3.6x at 256 px: the eager loop is launch-bound), fused Adam, cudnn.benchmark
    and TF32 convs, in fp32 NCHW. Not bf16: it missed the 0.3 dB parity rule (one seed of three by
    0.006 dB) and ran no faster eagerly; not channels_last: neutral to 16% slower in fp32 (H200,
    results/bench-gpu-h200-*.json). CPU: fused Adam, as many threads as there are idle cores
    (measured now, see ``idle_cpu_threads``) and, only on CPUs with native bf16 (emulated it ran
    ~3x slower), bf16 autocast in channels_last: 2.0x the original loop at 1 thread, table1-paper
    128 px (results/bench-vm-cpu-levers.json: 210 vs 421 ms, NCHW bf16 239 ms, 1.77x). Parity
    (``dip_lib.speed.parity``, results/bench-vm-cpu-parity.json: 3 images x 5 seeds at 64 px, 300
    iterations, torch's input noise, fp32 control RMS 0.42 dB): bf16 channels_last mean +0.17 dB,
    90% CI [-0.03, +0.36]; bf16 NCHW +0.02 dB, CI [-0.24, +0.28]: both pass (with numpy's noise
    in every arm both pass too: results/bench-vm-cpu-parity-numpy.json).
    Not numpy input noise (``noise_rng``): torch draws z's contiguous noise vectorised (1.8 ms per
    32x128x128 draw vs numpy's 4.5 ms; no gain in the ladder). torch.compile is left out: ~7% at
    128 px for ~4 minutes of compiling. Other devices: unchanged. The report's profiles do not use
    this: their numerics are fixed per profile (``runs``).
    """
    cfg = cfg or FitConfig()
    dev = resolve_device(cfg.device if device is None else device)
    if dev.type == "cuda":
        return replace(
            cfg,
            precision="fp32",
            channels_last=False,
            cudnn_benchmark=True,
            tf32=True,
            adam_impl="fused",
            cuda_graphs=True,
        )
    if dev.type == "cpu":
        bf16 = cpu_has_native_bf16()  # channels_last only with bf16: in fp32 it measured no faster
        return replace(
            cfg,
            precision="bf16" if bf16 else "fp32",
            channels_last=bf16,
            adam_impl="fused",
            threads=idle_cpu_threads(),
        )
    return cfg


@dataclass
class CheckState:
    """What callbacks see at a check. ``output`` is the iterate (1, C, H, W) on the device (the
    output for the perturbed input); ``clean_output`` f_theta(z) and its PSNRs exist with a ground truth."""

    iteration: int
    loss: float
    psnr: float | None
    psnr_observed: float
    elapsed: float
    output: torch.Tensor
    restored: bool = False
    psnr_clean: float | None = None
    psnr_hole: float | None = None
    clean_output: torch.Tensor | None = None


class Callback(Protocol):
    """A plain function ``f(state) -> bool | None`` works too (called at checks; True stops)."""

    def on_check(self, state: CheckState) -> bool | None: ...


@dataclass
class History:
    iteration: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    psnr: list[float | None] = field(default_factory=list)  # the iterate (perturbed input); None at the final check
    psnr_observed: list[float] = field(default_factory=list)
    elapsed: list[float] = field(default_factory=list)
    restored: list[bool] = field(default_factory=list)
    psnr_clean: list[float | None] = field(default_factory=list)  # f_theta(z) vs the ground truth
    psnr_hole: list[float | None] = field(default_factory=list)  # f_theta(z) on the missing pixels only

    def to_dict(self) -> dict[str, list]:
        return asdict(self)


@dataclass
class FitResult:
    """Outputs are float32 (C, H, W) numpy arrays; PSNRs in dB (None without ground truth).

    ``best`` is the clean output at the best clean check (the oracle; the final output is a check,
    so best_psnr >= final_psnr); ``*_hole_psnr`` are over the missing pixels only."""

    history: History
    final: np.ndarray
    ema: np.ndarray
    best: np.ndarray | None
    best_iteration: int | None
    best_psnr: float | None
    final_psnr: float | None
    final_ssim: float | None
    ema_psnr: float | None
    best_hole_psnr: float | None
    final_hole_psnr: float | None
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
            "best_hole_psnr": self.best_hole_psnr,
            "final_psnr": self.final_psnr,
            "final_hole_psnr": self.final_hole_psnr,
            "final_ssim": self.final_ssim,
            "ema_psnr": self.ema_psnr,
            "guard_restores": self.guard_restores,
            "iterations_run": self.iterations_run,
            "stopped_at": self.stopped_at,
            "wall_time": self.wall_time,
            "device": self.device,
        }


class FitDiverged(DipError):
    """The loss or the output became non-finite and the guard could not restore good weights."""
