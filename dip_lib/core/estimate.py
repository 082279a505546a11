"""What a fit will cost before it runs: peak memory from the network's shape, time from its FLOPs.

Memory (no allocation): every tensor of the forward pass grows with the pixel count, so one
forward of the network on a small probe image, counting the elements of every module's output,
gives activation elements per pixel. Peak memory is then

    peak = BASE + 16 B x parameters (weights, gradients, Adam's two moments)
           + K[mode] x 4 B x activation elements per pixel x H x W

where K (what autograd keeps and the allocator adds, relative to one fp32 copy of every module
output) was calibrated against the peak RSS (VmHWM) of fresh processes at three sizes on this
project's CPU VM (``bench.calibrate_memory``; the constants below say when and where). ``mode`` is
fp32, bf16 (autocast) or checkpointing.

Time: the analytic conv FLOPs (``nets.conv_flops``) of one iteration at the target size divided
by the rate (FLOP/s) that the very same fit configuration reaches on this machine over 4 timed
iterations (their median step; on a CPU in process CPU time per thread, see ``measure_rate``) at
a calibration size (the target size when that is cheap, else a smaller image of the same aspect
with about ``CALIBRATION_GFLOP`` per iteration), plus the first iteration's warm-up. The estimate
is a quiet machine's; when other jobs load the CPU at calibration, ``describe`` also names the time
at that load.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .errors import DipError
from .nets import SkipConfig, build_net, conv_flops, count_params, min_size
from .solver import FitConfig, fit

log = logging.getLogger(__name__)

BASE_BYTES = 460 * 2**20  # python, torch, numpy, the CLI's modules and a first small fit (RSS, this VM)
# activation multiplier per mode: bench.calibrate_memory() on the VM (AMD EPYC with avx512_bf16, 2 cores,
# torch 2.13 CPU, 2026-11-29), the larger of text (256/384/512 px: 1.108, 0.757, 0.848) and
# table1-paper (256/512 px: 1.148, 0.731, 0.824), rounded up
K_ACTIVATIONS = {"fp32": 1.15, "bf16": 0.76, "checkpointing": 0.85}
CALIBRATION_GFLOP = 40.0  # work per calibration iteration (about 0.2-0.4 s on one core here)
CANDIDATE_SIDES = (128, 192, 256, 320, 384, 448, 512, 640, 768, 896, 1024, 1280, 1536, 1792, 2048, 2560, 3072, 4096)
LONG_FIT_S = 15 * 60  # a fit longer than this gets a suggested smaller size
BUSY = 1.25  # a calibration whose wall time exceeds its CPU time by this much names the load


@dataclass(frozen=True)
class Estimate:
    """The cost of a fit of ``iterations`` iterations at height x width (seconds and bytes)."""

    height: int
    width: int
    iterations: int
    gflop_per_iteration: float
    seconds_per_iteration: float
    seconds: float
    peak_bytes: int
    mode: str
    busy: float = 1.0  # the calibration's load factor (Rate.busy)


def memory_mode(cfg: FitConfig) -> str:
    """The memory model's mode of a fit configuration: checkpointing, bf16 or fp32."""
    return "checkpointing" if cfg.checkpointing else cfg.precision


def activation_elements_per_pixel(net_cfg: SkipConfig) -> float:
    """Elements of every module output in one forward pass, per input pixel (measured on a probe
    image of a few hundred pixels per side: the deepest maps are then large enough that ceil
    rounding does not matter)."""
    return _elements_per_pixel(net_cfg)


def _elements_per_pixel(net_cfg: SkipConfig) -> float:
    side = max(min_size(net_cfg), 2**net_cfg.depth * 8)
    net = build_net(net_cfg)
    total = 0

    def hook(_module, _inp, out) -> None:
        nonlocal total
        if isinstance(out, torch.Tensor):
            total += out.numel()

    for m in net.modules():
        if not list(m.children()):  # leaves only: a container's output is its last leaf's
            m.register_forward_hook(hook)
    with torch.no_grad():
        # the meta device computes shapes without allocating or computing anything
        net = net.to("meta")
        net(torch.empty(1, net_cfg.in_channels, side, side, device="meta"))
    return total / (side * side)


@functools.lru_cache(maxsize=64)  # the size searches call it once per candidate side
def param_count(net_cfg: SkipConfig) -> int:
    with torch.device("meta"):
        return count_params(build_net(net_cfg))


def peak_memory_bytes(net_cfg: SkipConfig, height: int, width: int, mode: str = "fp32") -> int:
    """Estimated peak resident memory (bytes) of a fit at height x width (see the module docstring)."""
    if mode not in K_ACTIVATIONS:
        raise ValueError(f"mode must be one of {tuple(K_ACTIVATIONS)}")
    acts = K_ACTIVATIONS[mode] * 4 * elements_per_pixel(net_cfg) * height * width
    return int(BASE_BYTES + 16 * param_count(net_cfg) + acts)


_EPP_CACHE: dict[SkipConfig, float] = {}


def elements_per_pixel(net_cfg: SkipConfig) -> float:
    if net_cfg not in _EPP_CACHE:
        _EPP_CACHE[net_cfg] = _elements_per_pixel(net_cfg)
    return _EPP_CACHE[net_cfg]


def available_memory_bytes() -> int | None:
    """What a fit may still allocate: MemAvailable from /proc/meminfo, lowered by a cgroup memory
    limit and by an address-space limit (``ulimit -v``, less the address space already mapped);
    None when none of them can be read (no refusal)."""
    limits = []
    meminfo = _read_kib("/proc/meminfo", "MemAvailable:")
    if meminfo is not None:
        limits.append(meminfo)
    try:  # cgroup v2: the container's limit less what it already uses
        cap = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if cap != "max":
            limits.append(int(cap) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    except (OSError, ValueError):
        pass
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        mapped = _read_kib("/proc/self/status", "VmSize:")
        if soft != resource.RLIM_INFINITY and mapped is not None:
            # torch maps far more address space than it touches: count a fit's need twice against it
            limits.append((soft - mapped) // 2)
    except (ImportError, OSError, ValueError):
        pass
    return max(0, min(limits)) if limits else None


def _read_kib(path: str, key: str) -> int | None:
    """The value of ``key`` (in kB) in a /proc file, in bytes."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def scaled_shape(height: int, width: int, side: int) -> tuple[int, int]:
    """(h, w) with the longer side ``side`` and the same aspect."""
    scale = side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def smallest_side(net_cfg: SkipConfig, height: int, width: int) -> int:
    """The smallest longer side of CANDIDATE_SIDES the network takes at this aspect (the current one
    when none is smaller)."""
    lo = min_size(net_cfg)
    for side in CANDIDATE_SIDES:
        if side >= max(height, width):
            break
        if min(scaled_shape(height, width, side)) >= lo:
            return side
    return max(height, width)


def largest_side_that_fits(net_cfg: SkipConfig, height: int, width: int, mode: str, limit_bytes: int) -> int | None:
    """The largest longer side (a multiple of 32, below the current one) whose estimated peak
    memory stays under ``limit_bytes``, or None when not even the network's minimum size fits."""
    lo = min_size(net_cfg)
    side = (max(height, width) // 32) * 32
    while side >= lo:
        h, w = scaled_shape(height, width, side)
        if min(h, w) >= lo and peak_memory_bytes(net_cfg, h, w, mode) <= limit_bytes:
            return side
        side -= 32
    return None


def check_memory(net_cfg: SkipConfig, height: int, width: int, cfg: FitConfig, available: int | None = None) -> int:
    """Estimated peak bytes of the fit; raises DipError (one line) when it exceeds the available
    memory, naming the largest --size that fits and what --checkpointing would need."""
    mode = memory_mode(cfg)
    need = peak_memory_bytes(net_cfg, height, width, mode)
    avail = available_memory_bytes() if available is None else available
    # this process already holds BASE_BYTES (counted in MemAvailable's complement): the fit needs the rest
    if avail is None or need - BASE_BYTES <= avail:
        return need
    avail += BASE_BYTES
    side = largest_side_that_fits(net_cfg, height, width, mode, avail)
    fix = (
        f"--size {side} fits (about {fmt_bytes(peak_memory_bytes(net_cfg, *scaled_shape(height, width, side), mode))})"
        if side
        else "no size fits"
    )
    ckpt = ""
    if mode != "checkpointing":
        ckpt_need = peak_memory_bytes(net_cfg, height, width, "checkpointing")
        ckpt = f"; --checkpointing would need about {fmt_bytes(ckpt_need)}" + (
            ""
            if ckpt_need <= avail
            else f" (too much too; with it --size "
            f"{largest_side_that_fits(net_cfg, height, width, 'checkpointing', avail)} fits)"
        )
    raise DipError(
        f"a {width}x{height} fit needs about {fmt_bytes(need)} of memory but {fmt_bytes(avail)} is available: "
        f"{fix}{ckpt}"
    )


# ---------------------------------------------------------------------------------------------
# time


def iteration_gflop(net_cfg: SkipConfig, height: int, width: int) -> float:
    return conv_flops(net_cfg, height, width)["total"] / 1e9


def calibration_shape(
    net_cfg: SkipConfig, height: int, width: int, gflop: float = CALIBRATION_GFLOP
) -> tuple[int, int]:
    """The target shape when an iteration there costs at most ``gflop``, else a smaller one of the
    same aspect that costs about that much (never below the network's minimum size)."""
    g = iteration_gflop(net_cfg, height, width)
    if g <= gflop:
        return height, width
    side = max(math.ceil(max(height, width) * math.sqrt(gflop / g)), min_size(net_cfg))
    h, w = scaled_shape(height, width, side)
    lo = min_size(net_cfg)
    if min(h, w) < lo:  # a very elongated image: keep the short side at the minimum
        f = lo / min(h, w)
        h, w = math.ceil(h * f), math.ceil(w * f)
    return h, w


def measure_rate(
    net: torch.nn.Module, net_input: torch.Tensor, cfg: FitConfig, iterations: int = 4
) -> tuple[float, float, float]:
    """(seconds per iteration, seconds the first iteration takes beyond that, how busy the CPU is)
    of ``fit`` with ``cfg`` at the input's size, from ``iterations`` + 1 iterations: the first one
    pays the warm-up (lazy inits, oneDNN primitive creation) and is timed apart.

    On a CPU a step's seconds are its process CPU time over the fit's threads, not its wall time:
    when other jobs take the cores, the wall time of a step grows with their load but its CPU time
    does not, so two calls give the same estimate on a quiet and on a busy machine. The third value
    (median wall / CPU-based step, >= 1) says how much longer the load of the moment makes it."""
    stamps: list[tuple[float, float, int]] = []
    h, w = net_input.shape[-2:]
    c = net.cfg.out_channels if hasattr(net, "cfg") else 3
    rng = np.random.default_rng(0)
    truth = rng.random((c, h, w), dtype=np.float32)
    mask = (rng.random((1, h, w)) > 0.5).astype(np.float32)

    def on_iteration(it: int, _out: torch.Tensor) -> None:
        stamps.append((time.perf_counter(), time.process_time(), torch.get_num_threads()))

    hook = type("Stamp", (), {"on_iteration": staticmethod(on_iteration)})()
    run = replace(cfg, iterations=iterations + 1, progress=False, log_every=cfg.log_every, snapshots=(), guard=False)
    t0 = time.perf_counter()
    fit(net, net_input, truth * mask, mask, run, callbacks=[hook])
    # on_iteration runs after each forward: stamp i is iteration i's forward end
    wall = float(np.median(np.diff([s[0] for s in stamps])))
    per = wall
    if net_input.device.type == "cpu":
        # the median step: one iteration slowed down by a neighbour's burst does not set the rate
        per = min(wall, float(np.median(np.diff([s[1] for s in stamps]))) / stamps[-1][2])
    busy = max(1.0, wall / per) if per > 0 else 1.0
    return per, max(0.0, stamps[0][0] - t0 - wall), busy


@dataclass(frozen=True)
class Rate:
    """What a calibration measured: FLOP/s of the fit's iterations, the first iteration's extra
    seconds (scaled to the target size by FLOPs) and the shape it ran at."""

    flops: float
    warmup_s: float
    shape: tuple[int, int]
    busy: float = 1.0  # wall time over the CPU-time step at calibration: > 1 on a loaded machine


def calibrate_time(
    net_cfg: SkipConfig, height: int, width: int, cfg: FitConfig, make_input, iterations: int = 4
) -> Rate:
    """Time ``iterations`` + 1 iterations of ``cfg`` for this network on this machine at the
    calibration shape. ``make_input(h, w)`` builds the network input."""
    h, w = calibration_shape(net_cfg, height, width)
    net = build_net(net_cfg)
    per, warm, busy = measure_rate(net, make_input(h, w), cfg, iterations)
    return Rate(flops=iteration_gflop(net_cfg, h, w) * 1e9 / per, warmup_s=warm, shape=(h, w), busy=busy)


def estimate(net_cfg: SkipConfig, height: int, width: int, iterations: int, cfg: FitConfig, rate: Rate) -> Estimate:
    """Time and peak memory of a fit from a measured rate (``calibrate_time``): iterations x
    FLOPs per iteration / rate, plus the warm-up scaled by the FLOPs ratio."""
    g = iteration_gflop(net_cfg, height, width)
    s_it = g * 1e9 / rate.flops
    warm = rate.warmup_s * g / iteration_gflop(net_cfg, *rate.shape)
    return Estimate(
        height=height,
        width=width,
        iterations=iterations,
        gflop_per_iteration=g,
        seconds_per_iteration=s_it,
        seconds=s_it * iterations + warm,
        peak_bytes=peak_memory_bytes(net_cfg, height, width, memory_mode(cfg)),
        mode=memory_mode(cfg),
        busy=rate.busy,
    )


def largest_side_within(
    net_cfg: SkipConfig,
    height: int,
    width: int,
    iterations: int,
    rate: Rate,
    seconds: float,
    cfg: FitConfig | None = None,
) -> int | None:
    """The largest longer side (from CANDIDATE_SIDES, at most the current one) whose fit takes at
    most ``seconds`` at ``rate``; None when not even the smallest fits."""
    cfg = cfg or FitConfig()
    lo = min_size(net_cfg)
    best = None
    for side in (*CANDIDATE_SIDES, max(height, width)):
        if side > max(height, width):
            continue
        h, w = scaled_shape(height, width, side)
        if min(h, w) < lo:
            continue
        if estimate(net_cfg, h, w, iterations, cfg, rate).seconds <= seconds and (best is None or side > best):
            best = side
    return best


def fmt_seconds(s: float) -> str:
    if s < 90:
        return f"{max(1, round(s))} s"
    m = round(s / 60)
    return f"{m} min" if m < 60 else f"{m // 60} h {m % 60} min"


def fmt_bytes(b: float) -> str:
    """Bytes in the unit that shows them: 1.5 GB, 300 MB, 4.2 MB, 12 KB."""
    if b >= 2**30:
        return f"{b / 2**30:.1f} GB"
    if b >= 10 * 2**20:
        return f"{round(b / 2**20)} MB"
    if b >= 2**20:
        return f"{b / 2**20:.1f} MB"
    return f"{max(1, round(b / 2**10))} KB"


def describe(est: Estimate, device: str, suggestion: tuple[int, float] | None = None) -> str:
    """One line: 'about 2 h 10 min and 3.1 GB on this CPU (6001 iterations); --size 256 would take about 25 min'."""
    where = "this CPU" if device == "cpu" else device
    line = f"about {fmt_seconds(est.seconds)} and {fmt_bytes(est.peak_bytes)} on {where} ({est.iterations} iterations)"
    if suggestion is not None:
        line += f"; --size {suggestion[0]} would take about {fmt_seconds(suggestion[1])}"
    if est.busy > BUSY:
        line += f" (other jobs load the CPU now: at this load about {fmt_seconds(est.seconds * est.busy)})"
    return line


def require_positive_minutes(value: float | None) -> None:
    if value is not None and not value > 0:
        raise DipError(f"--max-minutes must be positive, got {value:g}")
