"""Benchmark of the DIP loop: time per iteration, FLOP/s and peak memory per preset, size and mode.

``python -m dip_lib bench [--device D] [--sizes ...] [--modes ...] [--threads T ...] [--out FILE]``
writes JSON. Modes:
  original   the original repository's loop (``dip_lib.speed.original``): closure, default Adam,
             ``normal_`` input noise, fp32 eager, PSNRs with scikit-image every iteration;
  reference  dip_lib's plain loop as the notebooks run it: fp32, eager, NCHW, loss and PSNRs on the
             host every iteration (``fit`` with log_every=1; on an accelerator a callback also moves
             the output to the host and computes the PSNRs with numpy, as the notebooks did);
  fast       ``fit`` with ``fast_config`` (checks every 10 iterations, on the device);
  batched    ``fit_many`` with K problems in one pass (times are per problem-iteration).
On the CPU every row runs at the same thread count (``--threads``, default 1: on a shared machine
more threads measure the neighbours, not the code; several counts make a scaling ladder, each
row's speedups against the rows of its own count), and a matmul/conv microbenchmark in fp32 and
bf16 gives the machine's ceiling: each row reports its achieved GFLOP/s (analytic conv FLOPs)
as a fraction of the ceiling of its precision.
Modes run interleaved in rounds (original, reference, fast, batched, original, ...) so a shared
machine's load hits them alike. A chunk runs N+1 iterations and times those between its first
and last check (setup, cudnn autotuning, graph capture and compile land before the first check
and are reported apart); results are medians over rounds.

Other studies (each writes its own JSON): ``--levers`` (every speed lever's effect, one row each),
``--parity`` (bf16 levers vs fp32: the rule of ``dip_lib.speed.parity`` over 3 images x ``--parity-seeds``
seeds, every arm with the ``--parity-noise`` input-noise generator),
``--memory-study`` (peak memory with and without activation checkpointing), ``--selfcheck``
(CUDA graphs and fit_many against the plain loop).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.batched import fit_many
from ..core.config import LEVERS
from ..core.device import idle_cpu_threads, resolve_device, tf32_flags
from ..core.errors import DipError
from ..core.masks import bernoulli_mask
from ..core.metrics import masked_psnr, psnr
from ..core.nets import conv_flops, min_size
from ..core.presets import Preset, get_preset
from ..core.solver import FitConfig, FitResult, fast_config, fit

log = logging.getLogger(__name__)

PRESET_NAMES = ("table1-paper", "text")
MODES = ("original", "reference", "fast", "batched")


# ---------------------------------------------------------------------------------------------
# analytic FLOPs


# ---------------------------------------------------------------------------------------------
# machine, problems, memory


def machine_info(device: torch.device) -> dict[str, Any]:
    """CPU model, core count, GPU name, torch version and the date: what a timing depends on."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "host": socket.gethostname(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    with contextlib.suppress(OSError):
        info["load_average"] = list(os.getloadavg())
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
        info["tf32_default_conv_matmul"] = list(tf32_flags())
    return info


def _rss_bytes() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> None:
    """Linux: restart the peak-RSS mark (VmHWM) at the current RSS."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _max_rss_bytes() -> int:
    """Peak RSS of this process image: VmHWM on Linux (ru_maxrss would carry the parent's peak
    across fork and exec), else ru_maxrss."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


@lru_cache(maxsize=32)
def bench_image(size: int, index: int = 0) -> np.ndarray:
    """A natural (3, size, size) image in [0, 1]: scikit-image's bundled astronaut, resized; problem
    ``index`` gets a shifted copy so batched problems differ. Falls back to smooth synthetic data."""
    from skimage.transform import resize

    try:
        from skimage import data

        img = data.astronaut().astype(np.float32) / 255.0
    except (ImportError, OSError, ValueError):  # no bundled data: a smooth pattern keeps the benchmark running
        yy, xx = np.mgrid[0:512, 0:512] / 512.0
        img = np.stack([np.sin(6 * xx) * 0.5 + 0.5, np.cos(5 * yy) * 0.5 + 0.5, xx * yy], -1).astype(np.float32)
    img = np.roll(img, 37 * index, axis=1)
    out = resize(img, (size, size), anti_aliasing=True, preserve_range=True)
    out = np.ascontiguousarray(np.clip(out, 0, 1).transpose(2, 0, 1), dtype=np.float32)
    out.setflags(write=False)  # cached and shared
    return out


@dataclass
class Problems:
    """K inpainting problems of one preset and size (Bernoulli masks, half the pixels missing)."""

    nets: list[torch.nn.Module]
    inputs: list[torch.Tensor]
    observed: list[np.ndarray]
    masks: list[np.ndarray]
    truths: list[np.ndarray]

    @classmethod
    def make(cls, preset: Preset, size: int, k: int = 1, seed: int = 0, **net_overrides: Any) -> Problems:
        """Problem i: image shift i, mask seed i, network and input seeded ``seed + i``."""
        truths = [bench_image(size, i) for i in range(k)]
        masks = [bernoulli_mask((size, size), 0.5, seed=i) for i in range(k)]
        built = [preset.setup((3, size, size), seed=seed + i, net=net_overrides)[:2] for i in range(k)]
        return cls(
            nets=[net for net, _ in built],
            inputs=[z for _, z in built],
            observed=[t * m for t, m in zip(truths, masks)],
            masks=masks,
            truths=truths,
        )


class HostMetrics:
    """The notebooks' per-iteration host work on an accelerator: output to numpy, PSNRs there."""

    def __init__(self, truth: np.ndarray, observed: np.ndarray, mask: np.ndarray) -> None:
        self.truth, self.observed, self.mask = truth, observed, mask

    def on_check(self, state) -> None:
        out = state.output.detach().float().cpu().numpy()[0]
        psnr(self.truth, out)
        masked_psnr(self.observed, out, self.mask)


# ---------------------------------------------------------------------------------------------
# variants and timing


@dataclass
class Variant:
    """One way of running the loop: ``fast`` starts from fast_config; ``overrides`` go on top."""

    name: str
    description: str
    k: int = 1
    log_every: int = 10
    fast: bool = False
    host_metrics: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)  # threads="idle": the idle cores now
    original: bool = False  # the original repository's loop (dip_lib.speed.original), not ``fit``

    def config(self, preset: Preset, device: torch.device, iterations: int) -> FitConfig:
        cfg = preset.fit_config(
            iterations=iterations, seed=0, device=str(device), log_every=self.log_every, progress=False
        )
        if self.fast:
            cfg = fast_config(cfg, device)
        over = dict(self.overrides)
        if over.get("threads") == "idle":
            over["threads"] = idle_cpu_threads()
        return replace(cfg, **over)


def original_variant() -> Variant:
    return Variant(
        "original",
        "the original repository's loop (dip_lib.speed.original): closure, default Adam, normal_ noise, "
        "fp32 eager, PSNRs with scikit-image every iteration",
        log_every=1,
        original=True,
    )


def with_threads(v: Variant, threads: int) -> Variant:
    """``v`` pinned to ``threads`` torch threads (its name gets the count when the ladder has several)."""
    return replace(v, overrides={**v.overrides, "threads": threads})


def reference_variant() -> Variant:
    return Variant(
        "reference",
        "original loop: fp32 eager NCHW, loss and PSNR on the host every iteration",
        log_every=1,
        host_metrics=True,
    )


def mode_variant(mode: str, k: int, checkpointing: bool = False) -> Variant:
    extra = {"checkpointing": True} if checkpointing else {}
    if mode == "original":
        return original_variant()
    if mode == "reference":
        return reference_variant()
    if mode == "fast":
        return Variant("fast", "fit with fast_config, checks every 10 iterations", fast=True, overrides=extra)
    if mode == "batched":
        return Variant("batched", f"fit_many with K={k} problems, fast_config", k=k, fast=True, overrides=extra)
    raise DipError(f"unknown mode {mode!r}; modes: {', '.join(MODES)}")


class Deadline:
    """Fit callback that ends a timing chunk once ``seconds`` have passed since its first check
    (so a loop slowed down 10x by a busy machine still finishes); shared by a chunk's problems,
    which all stop at the same iteration."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.first: float | None = None
        self.stop_at: int | None = None

    def on_check(self, state) -> bool:
        if self.stop_at is not None:
            return state.iteration >= self.stop_at
        if self.first is None:
            self.first = state.elapsed
        elif state.elapsed - self.first >= self.seconds:
            self.stop_at = state.iteration
            return True
        return False


def run_chunk(
    v: Variant, preset: Preset, size: int, device: torch.device, iterations: int, budget_s: float | None = None
) -> dict[str, Any]:
    """Run ``iterations`` + 1 iterations of variant ``v`` (fewer if ``budget_s`` runs out); time
    per problem-iteration between the first and the last check, the time to the first check, and
    (CUDA) the peak memory."""
    probs = Problems.make(preset, size, v.k)
    cfg = v.config(preset, device, iterations + 1)
    if v.original:
        return _original_chunk(probs, cfg, iterations + 1, budget_s)
    deadline = [Deadline(budget_s)] if budget_s else []
    callbacks = [
        ([HostMetrics(t, o, m)] if v.host_metrics and device.type != "cpu" else []) + deadline
        for t, o, m in zip(probs.truths, probs.observed, probs.masks)
    ]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    results = _fit_problems(probs, cfg, callbacks)
    h = results[0].history
    span = h.iteration[-1] - h.iteration[0]
    out: dict[str, Any] = {
        "ms": 1000 * (h.elapsed[-1] - h.elapsed[0]) / span / v.k,
        "first_check_s": h.elapsed[0],
        "restores": sum(r.guard_restores for r in results),
    }
    if device.type == "cuda":
        out["peak_bytes"] = torch.cuda.max_memory_allocated(device) - base
    return out


def _original_chunk(probs: Problems, cfg: FitConfig, iterations: int, budget_s: float | None) -> dict[str, Any]:
    from .original import original_loop

    saved = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        t = original_loop(
            probs.nets[0],
            probs.inputs[0],
            probs.truths[0],
            probs.masks[0],
            iterations,
            cfg.lr,
            cfg.reg_noise_std,
            budget_s,
        )
    finally:
        torch.set_num_threads(saved)
    e = t.elapsed
    return {"ms": 1000 * (e[-1] - e[0]) / (len(e) - 1), "first_check_s": e[0], "restores": 0}


def _fit_problems(probs: Problems, cfg: FitConfig, callbacks: list[list]) -> list[FitResult]:
    if len(probs.nets) == 1:
        return [
            fit(probs.nets[0], probs.inputs[0], probs.observed[0], probs.masks[0], cfg, probs.truths[0], callbacks[0])
        ]
    return fit_many(
        probs.nets,
        probs.inputs,
        probs.observed,
        probs.masks,
        cfg,
        probs.truths,
        seeds=[cfg.seed + i for i in range(len(probs.nets))],
        callbacks=callbacks,
    )


def time_variants(
    variants: list[Variant],
    preset: Preset,
    size: int,
    device: torch.device,
    iterations: int,
    rounds: int,
    budget_s: float | None = None,
) -> dict[str, dict[str, Any]]:
    """Interleave the variants for ``rounds`` rounds; median ms per problem-iteration for each."""
    samples: dict[str, list[dict[str, Any]]] = {v.name: [] for v in variants}
    for r in range(rounds):
        for v in variants:
            try:
                samples[v.name].append(run_chunk(v, preset, size, device, iterations, budget_s))
            except torch.cuda.OutOfMemoryError as exc:
                log.warning("%s at %d px: out of memory (%s)", v.name, size, str(exc).splitlines()[0])
                samples[v.name].append({"ms": float("nan"), "error": "out of memory"})
                torch.cuda.empty_cache()
            log.info("%s %d px %s round %d: %.1f ms", preset.name, size, v.name, r, samples[v.name][-1]["ms"])
    out = {}
    for v in variants:
        s = samples[v.name]
        ms = [c["ms"] for c in s]
        entry: dict[str, Any] = {
            "ms_per_iteration": statistics.median(ms),
            "samples_ms": [round(x, 3) for x in ms],
            "first_check_s": statistics.median(c.get("first_check_s", float("nan")) for c in s),
            "guard_restores": sum(c.get("restores", 0) for c in s),
        }
        peaks = [c["peak_bytes"] for c in s if "peak_bytes" in c]
        if peaks:
            entry["peak_memory_mb"] = max(peaks) / 2**20
        out[v.name] = entry
    return out


# ---------------------------------------------------------------------------------------------
# memory on the CPU: peak RSS of a fresh process


def memory_probe(spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``spec['iterations']`` iterations of a variant in this process and return the peak RSS
    growth over the RSS just before the fit (meant for a fresh process: freed memory stays mapped)."""
    v = Variant(**spec["variant"])
    preset = get_preset(spec["preset"])
    device = torch.device(spec.get("device", "cpu"))
    # one thread: with more, per-thread malloc arenas keep freed memory and inflate the RSS
    cfg = replace(v.config(preset, device, spec.get("iterations", 1)), threads=1)
    # a first fit at the smallest size loads the kernels and thread pools (~150 MiB here) so that
    # they do not count; its few MiB of freed activations may be reused (a small undercount)
    small = Problems.make(preset, min_size(preset.net), v.k)
    _fit_problems(small, replace(cfg, iterations=1), [[] for _ in small.nets])
    probs = Problems.make(preset, spec["size"], v.k)
    _reset_peak_rss()
    base = _rss_bytes()
    _fit_problems(probs, cfg, [[] for _ in probs.nets])
    return {"peak_bytes": _max_rss_bytes() - base}


def memory_in_subprocess(
    v: Variant, preset: Preset, size: int, iterations: int = 1, timeout: float = 1800
) -> float | None:
    """Peak RSS growth (MiB) of the variant in a fresh Python process, or None if that failed."""
    spec = {"variant": asdict(v), "preset": preset.name, "size": size, "iterations": iterations}
    code = (
        "import json, sys; from dip_lib.speed.bench import memory_probe; "
        "print(json.dumps(memory_probe(json.loads(sys.argv[1]))))"
    )
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=True,
        )
        return json.loads(proc.stdout.strip().splitlines()[-1])["peak_bytes"] / 2**20
    except (subprocess.SubprocessError, ValueError, IndexError, KeyError) as exc:
        log.warning("memory probe %s %s %d failed: %s", v.name, preset.name, size, exc)
        return None


CPU_MEMORY_METHOD = (
    "peak RSS growth of a fresh process over the fit (resource.getrusage ru_maxrss minus the RSS "
    "before it, via psutil or /proc/self/statm) after a warm-up fit at the smallest size; includes "
    "parameters, gradients, Adam state and allocator slack"
)
CUDA_MEMORY_METHOD = "torch.cuda.max_memory_allocated minus memory_allocated before the fit"


# ---------------------------------------------------------------------------------------------
# the studies


def default_sizes(device: torch.device) -> list[int]:
    return [256, 512] if device.type == "cuda" else [64, 128]


def default_batch(device: torch.device, size: int) -> int:
    if device.type == "cuda":
        return 8 if size <= 256 else 4
    return 2


def machine_ceiling(threads: int, reps: int = 5) -> dict[str, Any]:
    """What this machine's cores can do at ``threads`` threads: GFLOP/s of a 1024^3 matmul and of
    a 128->128 3x3 conv (forward, batch 1, 128x128, channels_last: oneDNN's best layout) in fp32
    and bf16; median of ``reps`` timed calls after a warm-up. ``ceiling_gflops`` per precision is
    the better of the two: the rate a conv network could reach if only its convs cost time."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    out: dict[str, Any] = {"threads": threads}
    try:
        g = torch.Generator().manual_seed(0)
        for dt, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
            a = torch.randn(1024, 1024, generator=g).to(dt)
            x = torch.randn(1, 128, 128, 128, generator=g).to(dt).contiguous(memory_format=torch.channels_last)
            w = torch.randn(128, 128, 3, 3, generator=g).to(dt).contiguous(memory_format=torch.channels_last)
            jobs = {
                "matmul": (lambda a=a: a @ a, 2.0 * 1024**3),
                "conv": (lambda x=x, w=w: torch.nn.functional.conv2d(x, w, padding=1), 2.0 * 9 * 128 * 128 * 128 * 128),
            }
            for kind, (fn, flop) in jobs.items():
                fn()
                times = []
                for _ in range(reps):
                    t = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - t)
                out[f"{name}_{kind}_gflops"] = round(flop / statistics.median(times) / 1e9, 1)
            out[f"{name}_ceiling_gflops"] = max(out[f"{name}_matmul_gflops"], out[f"{name}_conv_gflops"])
    finally:
        torch.set_num_threads(saved)
    return out


def _best_ceilings(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Per key the best of several ceiling measurements (a busy machine only ever lowers it)."""
    return {k: max(c[k] for c in samples) for k in samples[0]}


def bench(
    device: torch.device,
    presets: list[str],
    sizes: list[int],
    modes: list[str],
    iterations: int,
    rounds: int,
    batch: int | None,
    checkpointing: bool = False,
    memory: bool = True,
    budget_s: float | None = None,
    threads: tuple[int, ...] = (1,),
) -> dict[str, Any]:
    """The main table: per preset, size, mode and thread count the median ms per problem-iteration,
    achieved GFLOP/s as a fraction of the machine's ceiling (CPU), the speedups over the original
    loop and the reference at the same thread count, and peak memory."""
    t_start = time.perf_counter()
    cpu = device.type == "cpu"
    ceilings = {t: [machine_ceiling(t)] for t in threads} if cpu else {}
    rows = []
    for name in presets:
        preset = get_preset(name)
        for size in sizes:
            k = batch or default_batch(device, size)
            variants = []
            for t in threads:
                for m in modes:
                    v = mode_variant(m, k, checkpointing)
                    if cpu:
                        v = with_threads(v, t)
                        v.name = v.name if len(threads) == 1 else f"{m}@{t}"
                    variants.append(v)
            timed = time_variants(variants, preset, size, device, iterations, rounds, budget_s)
            flops = conv_flops(replace(preset.net, out_channels=3), size, size)
            for v in variants:
                e = timed[v.name]
                ms = e["ms_per_iteration"]
                mode = v.name.split("@")[0]
                t = v.overrides.get("threads") if cpu else None
                same = "" if len(threads) == 1 or not cpu else f"@{t}"
                orig_ms = timed.get(f"original{same}", {}).get("ms_per_iteration")
                ref_ms = timed.get(f"reference{same}", {}).get("ms_per_iteration")
                cfg = v.config(preset, device, iterations + 1)
                row = {
                    "preset": name,
                    "size": size,
                    "mode": mode,
                    "threads": t,
                    "batch": v.k,
                    "description": v.description,
                    "config": _config_summary(cfg),
                    "ms_per_iteration": round(ms, 3),
                    "iterations_per_s": round(1000 / ms, 3),
                    "gflop_forward": round(flops["forward"] / 1e9, 3),
                    "gflop_backward": round(flops["backward"] / 1e9, 3),
                    "gflop_per_iteration": round(flops["total"] / 1e9, 3),
                    "gflops_achieved": round(flops["total"] / ms / 1e6, 2),
                    "tflops_achieved": round(flops["total"] / ms / 1e9, 4),
                    "speedup_vs_original": round(orig_ms / ms, 3) if orig_ms else None,
                    "speedup_vs_reference": round(ref_ms / ms, 3) if ref_ms else None,
                    **{k2: e[k2] for k2 in ("samples_ms", "first_check_s", "guard_restores")},
                }
                if device.type == "cuda":
                    row["peak_memory_mb"] = round(e.get("peak_memory_mb", float("nan")), 1)
                elif memory and mode not in ("reference", "original"):  # the same network and precision as fast
                    mb = memory_in_subprocess(v, preset, size)
                    row["peak_memory_mb"] = None if mb is None else round(mb, 1)
                if "peak_memory_mb" in row and row["peak_memory_mb"] is not None and v.k > 1:
                    row["peak_memory_per_problem_mb"] = round(row["peak_memory_mb"] / v.k, 1)
                rows.append(row)
            for t, samples in ceilings.items():
                samples.append(machine_ceiling(t, reps=3))
    best = {t: _best_ceilings(c) for t, c in ceilings.items()}
    for r in rows:
        if cpu:
            c = best[r["threads"]][f"{r['config']['precision']}_ceiling_gflops"]
            r["ceiling_gflops"] = c
            r["ceiling_fraction"] = round(r["gflops_achieved"] / c, 3)
    return {
        "results": rows,
        "ceiling": {
            "per_threads": {str(t): best[t] for t in best},
            "samples": {str(t): c for t, c in ceilings.items()},
            "method": "best of the microbenchmark runs at the start and after each (preset, size) "
            "block; a row's fraction uses the ceiling of its precision",
        }
        if cpu
        else None,
        "settings": {
            "iterations": iterations,
            "rounds": rounds,
            "sizes": sizes,
            "presets": presets,
            "threads": list(threads),
            "modes": modes,
            "checkpointing": checkpointing,
            "chunk_budget_s": budget_s,
            "memory_method": CUDA_MEMORY_METHOD if device.type == "cuda" else CPU_MEMORY_METHOD,
        },
        "wall_s": round(time.perf_counter() - t_start, 1),
    }


def _config_summary(cfg: FitConfig) -> dict[str, Any]:
    return {k: getattr(cfg, k) for k in ("log_every", *LEVERS)}


def cpu_lever_variants(k: int, compile_: bool = False) -> list[Variant]:
    """CPU: the original loop, then one lever per row (cumulative up to '+numpy noise'), the bf16
    NCHW rows alone, then fast_config, batched and (``compile_``) torch.compile. Threads are set by
    the caller."""
    variants = [original_variant(), reference_variant()]
    steps: list[tuple[str, str, dict[str, Any]]] = [
        ("checks/10", "dip_lib's loop, checks every 10 iterations", {}),
        ("+fused adam", "fused Adam", {"adam_impl": "fused"}),
        ("+channels_last", "NHWC activations and weights (fp32)", {"channels_last": True}),
        (
            "+bf16 autocast",
            "bf16 autocast of the network forward (fp32 master weights, loss, Adam)",
            {"precision": "bf16"},
        ),
        ("+numpy noise", "input noise from numpy's ziggurat into a reused buffer", {"noise_rng": "numpy"}),
    ]
    acc: dict[str, Any] = {}
    for name, desc, over in steps:
        acc = {**acc, **over}
        variants.append(Variant(name, desc, overrides=dict(acc)))
    variants.append(
        Variant(
            "bf16 NCHW",
            "fused Adam + bf16 autocast without channels_last",
            overrides={"adam_impl": "fused", "precision": "bf16"},
        )
    )
    variants.append(
        Variant(
            "bf16 NCHW + numpy noise",
            "fused Adam + bf16 autocast + numpy input noise without channels_last",
            overrides={"adam_impl": "fused", "precision": "bf16", "noise_rng": "numpy"},
        )
    )
    if compile_:
        variants.append(
            Variant(
                "+torch.compile",
                "the ladder's top with torch.compile (inductor) of the network",
                overrides={**acc, "compile": True},
            )
        )
    variants.append(Variant("fast_config", "fit with fast_config", fast=True))
    variants.append(Variant(f"batched K={k}", f"fit_many with K={k}, fast_config", k=k, fast=True))
    return variants


def lever_variants(device: torch.device, k: int, compile_: bool = False) -> list[Variant]:
    """The cumulative ladder from the reference loop to the fastest, one lever per step."""
    if device.type == "cpu":
        return cpu_lever_variants(k, compile_)
    steps: list[tuple[str, str, dict[str, Any]]] = [("checks/10", "checks every 10 iterations (on the device)", {})]
    steps.append(("+fused adam", "fused Adam", {"adam_impl": "fused"}))
    steps += [
        ("+cudnn.benchmark", "cudnn autotuning", {"cudnn_benchmark": True}),
        ("+tf32", "TF32 convs and matmuls (torch's default for convs)", {"tf32": True}),
        ("+cuda graphs", "forward+backward replayed from a CUDA graph", {"cuda_graphs": True}),
    ]
    variants = [reference_variant()]
    acc: dict[str, Any] = {}
    for name, desc, over in steps:
        acc = {**acc, **over}
        variants.append(Variant(name, desc, overrides=dict(acc)))
    best = dict(acc)
    variants += [
        Variant("graphs, tf32 off", "the ladder's top with exact fp32 convs", overrides={**best, "tf32": False}),
        Variant("graphs + channels_last", "the ladder's top in NHWC", overrides={**best, "channels_last": True}),
        Variant("graphs + bf16", "the ladder's top with bf16 autocast", overrides={**best, "precision": "bf16"}),
        Variant(
            "graphs + bf16 + channels_last",
            "the ladder's top with bf16 autocast in NHWC",
            overrides={**best, "precision": "bf16", "channels_last": True},
        ),
    ]
    if compile_:
        over = {**best, "cuda_graphs": False, "compile": True}
        variants.append(Variant("compile", "torch.compile instead of CUDA graphs", overrides=over))
    variants.append(Variant("fast_config", "fit with fast_config", fast=True))
    variants.append(Variant(f"batched K={k}", f"fit_many with K={k}, fast_config", k=k, fast=True))
    return variants


def lever_study(
    device: torch.device,
    presets: list[str],
    sizes: list[int],
    iterations: int,
    rounds: int,
    batch: int | None,
    compile_: bool = False,
    budget_s: float | None = None,
    threads: int = 1,
) -> dict[str, Any]:
    """Each lever's time per iteration, interleaved at ``threads`` threads for every row (CPU), with
    its gain over the previous row, the reference and the original loop."""
    cpu = device.type == "cpu"
    ceiling = machine_ceiling(threads) if cpu else None
    rows = []
    for name in presets:
        preset = get_preset(name)
        flops_of = {}
        for size in sizes:
            k = batch or default_batch(device, size)
            variants = lever_variants(device, k, compile_)
            if cpu:
                variants = [with_threads(v, threads) for v in variants]
            timed = time_variants(variants, preset, size, device, iterations, rounds, budget_s)
            flops_of[size] = conv_flops(replace(preset.net, out_channels=3), size, size)["total"]
            ref = timed["reference"]["ms_per_iteration"]
            orig = timed.get("original", {}).get("ms_per_iteration")
            prev = orig or ref
            for v in variants:
                e = timed[v.name]
                ms = e["ms_per_iteration"]
                cfg = v.config(preset, device, iterations + 1)
                row = {
                    "preset": name,
                    "size": size,
                    "variant": v.name,
                    "description": v.description,
                    "batch": v.k,
                    "threads": cfg.threads,
                    "config": _config_summary(cfg),
                    "ms_per_iteration": round(ms, 3),
                    "gflops_achieved": round(flops_of[size] / ms / 1e6, 2),
                    "speedup_vs_original": round(orig / ms, 3) if orig else None,
                    "speedup_vs_reference": round(ref / ms, 3),
                    "speedup_vs_previous_row": round(prev / ms, 3),
                    "samples_ms": e["samples_ms"],
                    "first_check_s": round(e["first_check_s"], 3),
                    "peak_memory_mb": e.get("peak_memory_mb"),
                }
                if ceiling:
                    row["ceiling_fraction"] = round(
                        row["gflops_achieved"] / ceiling[f"{cfg.precision}_ceiling_gflops"], 3
                    )
                rows.append(row)
                prev = ms
    return {
        "levers": rows,
        "ceiling": ceiling,
        "settings": {
            "iterations": iterations,
            "rounds": rounds,
            "sizes": sizes,
            "presets": presets,
            "threads": threads,
            "note": "rows from 'checks/10' to '+numpy noise' are cumulative; the others stand alone",
        },
    }


def memory_study(
    device: torch.device,
    presets: list[str],
    sizes: list[int],
    iterations: int = 1,
    precisions: tuple[str, ...] = ("fp32",),
) -> dict[str, Any]:
    """Peak memory of one fit iteration with and without activation checkpointing."""
    rows = []
    for name in presets:
        preset = get_preset(name)
        for size in sizes:
            for precision in precisions:
                for ckpt in (False, True):
                    # no cudnn.benchmark: its trial runs allocate large workspaces that would count
                    v = Variant(
                        f"{precision}{' ckpt' if ckpt else ''}",
                        "",
                        fast=device.type == "cuda",
                        overrides={
                            "precision": precision,
                            "checkpointing": ckpt,
                            "cuda_graphs": False,
                            "cudnn_benchmark": False,
                        },
                    )
                    if device.type == "cuda":
                        try:
                            mb = run_chunk(v, preset, size, device, iterations)["peak_bytes"] / 2**20
                        except torch.cuda.OutOfMemoryError:
                            mb = None
                            torch.cuda.empty_cache()
                    else:
                        mb = memory_in_subprocess(v, preset, size, iterations)
                    rows.append(
                        {
                            "preset": name,
                            "size": size,
                            "precision": precision,
                            "checkpointing": ckpt,
                            "peak_memory_mb": None if mb is None else round(mb, 1),
                        }
                    )
                    log.info("memory %s %d %s ckpt=%s: %s MiB", name, size, precision, ckpt, mb)
    for r in rows:
        if r["peak_memory_mb"] is not None and r["size"] < 2048:
            scale = (2048 / r["size"]) ** 2
            r["extrapolated_2048_mb"] = round(r["peak_memory_mb"] * scale, 0)
    return {
        "memory_study": rows,
        "settings": {
            "iterations": iterations,
            "method": CUDA_MEMORY_METHOD if device.type == "cuda" else CPU_MEMORY_METHOD,
            "extrapolation": "peak x (2048 / size)^2: activations grow with the pixel count",
        },
    }


def selfcheck(
    device: torch.device, preset_name: str = "table1-paper", size: int = 128, iterations: int = 60, k: int = 3
) -> dict[str, Any]:
    """Fast paths against the plain loop on one device: CUDA graphs vs eager (fp32 and bf16) and
    fit_many vs separate fits; first-check loss and PSNR gap over ``iterations``."""
    preset = get_preset(preset_name)
    checks = {}

    def hist(over: dict[str, Any], kk: int = 1) -> list:
        probs = Problems.make(preset, size, kk)
        cfg = replace(
            preset.fit_config(iterations=iterations, device=str(device), log_every=10, progress=False), **over
        )
        res = _fit_problems(probs, cfg, [[] for _ in range(kk)])
        return [(r.history.loss, r.history.psnr) for r in res]

    pairs = {
        "cuda_graphs_fp32": ({"cuda_graphs": False}, {"cuda_graphs": True}),
        "cuda_graphs_bf16": ({"precision": "bf16", "cuda_graphs": False}, {"precision": "bf16", "cuda_graphs": True}),
        "channels_last": ({}, {"channels_last": True}),
    }
    if device.type != "cuda":
        pairs = {"channels_last": pairs["channels_last"]}
    for name, (a_over, b_over) in pairs.items():
        ((la, pa),) = hist(a_over)
        ((lb, pb),) = hist(b_over)
        checks[name] = {
            "first_loss_rel_diff": abs(lb[0] - la[0]) / abs(la[0]),
            "max_psnr_diff_db": float(np.max(np.abs(np.subtract(pa, pb)))),
            "psnr_a": pa,
            "psnr_b": pb,
        }
    fast = {
        f: v for f, v in _config_summary(fast_config(FitConfig(), device)).items() if f not in ("log_every", "threads")
    }
    sep = []
    for i in range(k):
        probs = Problems.make(preset, size, k)
        cfg = replace(
            preset.fit_config(iterations=iterations, device=str(device), log_every=10, progress=False, seed=i), **fast
        )
        r = fit(probs.nets[i], probs.inputs[i], probs.observed[i], probs.masks[i], cfg, probs.truths[i])
        sep.append((r.history.loss, r.history.psnr))
    probs = Problems.make(preset, size, k)
    cfg = replace(preset.fit_config(iterations=iterations, device=str(device), log_every=10, progress=False), **fast)
    many = _fit_problems(probs, cfg, [[] for _ in range(k)])
    checks["fit_many_vs_fit"] = [
        {
            "first_loss_rel_diff": abs(m.history.loss[0] - s[0][0]) / abs(s[0][0]),
            "max_psnr_diff_db": float(np.max(np.abs(np.subtract(m.history.psnr, s[1])))),
        }
        for m, s in zip(many, sep)
    ]
    return {"selfcheck": {"preset": preset_name, "size": size, "iterations": iterations, "checks": checks}}


# ---------------------------------------------------------------------------------------------
# command line


def _print_table(payload: dict[str, Any]) -> None:
    def x(v: float | None) -> str:
        return "   -  " if v is None else f"x{v:5.2f}"

    def frac(r: dict[str, Any]) -> str:
        return f"{100 * r['ceiling_fraction']:4.0f}% of ceiling" if r.get("ceiling_fraction") is not None else ""

    c = payload.get("ceiling") or {}
    for t, v in sorted((c.get("per_threads") or ({str(c["threads"]): c} if "threads" in c else {})).items()):
        print(
            f"ceiling at {t} thread(s): fp32 matmul {v['fp32_matmul_gflops']} conv {v['fp32_conv_gflops']} GFLOP/s, "
            f"bf16 matmul {v['bf16_matmul_gflops']} conv {v['bf16_conv_gflops']} GFLOP/s"
        )
    for r in payload.get("results", []):
        mem = r.get("peak_memory_mb")
        print(
            f"{r['preset']:<13}{r['size']:>5} {r['mode']:<10} threads={r.get('threads') or '-'} K={r['batch']:<2} "
            f"{r['ms_per_iteration']:>9.1f} ms/it {r['gflops_achieved']:>7.1f} GFLOP/s {frac(r)}  "
            f"{x(r.get('speedup_vs_original'))} vs original {x(r['speedup_vs_reference'])} vs reference  "
            f"peak {mem if mem is not None else '-'} MiB"
        )
    for r in payload.get("levers", []):
        print(
            f"{r['preset']:<13}{r['size']:>5} {r['variant']:<16} threads={r.get('threads') or '-'} "
            f"{r['ms_per_iteration']:>9.1f} ms/it {frac(r)}  {x(r.get('speedup_vs_original'))} vs original "
            f"{x(r['speedup_vs_reference'])} vs reference {x(r['speedup_vs_previous_row'])} vs previous row"
        )
    if "parity" in payload:
        p = payload["parity"]
        for arm, v in p["verdicts"].items():
            f = v["final_psnr"]
            print(
                f"parity {arm} vs fp32 ({f['n_pairs']} pairs): mean {f['mean_diff_db']:+.3f} dB, CI "
                f"[{f['ci_low_db']:+.3f}, "
                f"{f['ci_high_db']:+.3f}], tolerance {f['tolerance_db']:.3f} dB -> "
                f"{'PASSED' if v['passed'] else 'FAILED'} "
                f"({f['reason']})"
            )
    for r in payload.get("memory_study", []):
        print(
            f"memory {r['preset']:<13}{r['size']:>5} {r['precision']} checkpointing={r['checkpointing']!s:<5} "
            f"peak {r['peak_memory_mb']} MiB  (~{r.get('extrapolated_2048_mb', '-')} MiB at 2048)"
        )
    if "selfcheck" in payload:
        print(json.dumps(payload["selfcheck"]["checks"], default=lambda x: round(x, 4))[:2000])


MAX_SIDE = 4096  # a bench image beyond this is a typo (``--sizes 30000`` allocated until killed)


def check_args(args: argparse.Namespace, device: torch.device) -> None:
    """Refuse, before any timing, what would fail or make no sense after it: an --out that cannot be
    written, a non-finite or negative --chunk-budget, sizes out of range or beyond the memory."""
    from ..core import estimate
    from ..core.imageio import check_writable
    from ..core.nets import SkipConfig

    if args.out is not None:
        check_writable(args.out, "--out")
    if args.chunk_budget is not None and not 0 <= args.chunk_budget < float("inf"):
        raise DipError(f"--chunk-budget must be a finite number of seconds >= 0, got {args.chunk_budget}")
    for size in args.sizes or []:
        if not 8 <= size <= MAX_SIDE:
            raise DipError(f"--sizes: {size} px is out of range (8..{MAX_SIDE})")
    for name in args.presets:
        net = get_preset(name).net_config(3)
        if device.type == "cpu" and isinstance(net, SkipConfig):
            side = max(args.sizes or default_sizes(device))
            k = args.batch or 1
            need = k * (estimate.peak_memory_bytes(net, side, side) - estimate.BASE_BYTES) + estimate.BASE_BYTES
            avail = estimate.available_memory_bytes()
            if avail is not None and need - estimate.BASE_BYTES > avail:
                raise DipError(
                    f"--sizes {side} with {name!r} needs about {estimate.fmt_bytes(need)} of memory but "
                    f"{estimate.fmt_bytes(avail)} is available"
                )


def finite_json(obj: Any) -> Any:
    """``obj`` with every non-finite float (a timing that failed) as None: strict JSON has no NaN."""
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    return obj


def _cell_ms(preset_name: str, size: int, threads: int, seconds: float) -> float:
    """ms per iteration of the ``inpaint`` fit (fast_config, a check per iteration) of a bench image at
    ``threads`` threads, timed over about ``seconds``."""
    v = Variant("inpaint", "fit with fast_config", fast=True, log_every=1, overrides={"threads": threads})
    return run_chunk(v, get_preset(preset_name), size, torch.device("cpu"), 10**6, seconds)["ms"]


def threads_under_load(preset_name: str = "table1-paper", size: int = 64, seconds: float = 3.0) -> dict[str, Any]:
    """ms per iteration with 1 thread and with ``inpaint``'s default threads, idle and beside one
    CPU-burning process, under each OpenMP wait policy (libgomp's default, which spins, and PASSIVE,
    which did not help here): each cell in a fresh process, since OpenMP reads the policy once."""
    from ..core.device import default_threads

    threads = sorted({1, default_threads()})
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    code = (
        "import sys; from dip_lib.speed.bench import _cell_ms; "
        "print(_cell_ms(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])))"
    )
    rows = []
    for load in ("idle", "one burner"):
        burner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load != "idle" else None
        try:
            for policy in ("default", "PASSIVE"):
                for t in threads:
                    run_env = env if policy == "default" else {**env, "OMP_WAIT_POLICY": policy}
                    argv = [sys.executable, "-c", code, preset_name, str(size), str(t), str(seconds)]
                    out = subprocess.run(argv, env=run_env, capture_output=True, text=True, timeout=600, check=True)
                    ms = float(out.stdout.split()[-1])
                    rows.append({"load": load, "omp_wait_policy": policy, "threads": t, "ms_per_iteration": ms})
                    print(f"{load:<11} OMP_WAIT_POLICY={policy:<8} threads={t}: {ms:8.1f} ms/it", flush=True)
        finally:
            if burner is not None:
                burner.kill()
                burner.wait()
    return {"threads_under_load": {"preset": preset_name, "size": size, "seconds_per_cell": seconds, "rows": rows}}


def cmd_bench(args: argparse.Namespace) -> int:
    from ..core.imageio import atomic_write_bytes

    try:
        device = resolve_device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("CUDA is not available")
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError) as exc:
        raise DipError(f"device {args.device!r} is not usable: {exc}") from None
    check_args(args, device)
    threads = tuple(args.threads or [1])
    budget = (5.0 if device.type == "cpu" else None) if args.chunk_budget is None else (args.chunk_budget or None)
    t0 = time.perf_counter()
    info = machine_info(device)
    sizes = args.sizes or default_sizes(device)
    if args.threads_under_load:
        if device.type != "cpu":
            raise DipError("--threads-under-load measures CPU threads: add --device cpu")
        print(f"{info['cpu']}, {info['cpu_count']} cores: ms per iteration of {args.presets[0]} at {sizes[0]} px")
        payload = threads_under_load(args.presets[0], sizes[0])
    elif args.parity:
        if device.type != "cpu":
            raise DipError("--parity runs on the CPU (GPU parity: results/bench-gpu-h200-parity.json)")
        from .parity import measure_parity

        payload = measure_parity(
            args.presets[0],
            seeds=tuple(range(args.parity_seeds)),
            size=(args.sizes or [64])[0],
            iterations=args.parity_iterations or 300,
            workers=args.workers,
            threads=threads[0],
            common={"noise_rng": args.parity_noise} if args.parity_noise != "torch" else {},
        )
    elif args.levers:
        payload = lever_study(
            device,
            args.presets,
            sizes,
            args.iterations or _default_iterations(device),
            args.rounds or _default_rounds(device),
            args.batch,
            args.compile,
            budget,
            threads[0],
        )
    elif args.memory_study:
        payload = memory_study(
            device,
            args.presets,
            args.sizes or [512],
            precisions=("fp32", "bf16") if device.type == "cuda" else ("fp32",),
        )
    elif args.selfcheck:
        payload = selfcheck(device, args.presets[0], (args.sizes or [128])[0])
    else:
        payload = bench(
            device,
            args.presets,
            sizes,
            args.modes,
            args.iterations or _default_iterations(device),
            args.rounds or _default_rounds(device),
            args.batch,
            args.checkpointing,
            memory=not args.no_memory,
            budget_s=budget,
            threads=threads,
        )
    with contextlib.suppress(OSError):
        info["load_average_end"] = list(os.getloadavg())
    payload = {
        "schema": "dip-bench/1",
        "machine": info,
        "argv": sys.argv[1:],
        **payload,
        "total_s": round(time.perf_counter() - t0, 1),
    }
    _print_table(payload)
    if args.out:
        text = json.dumps(finite_json(payload), indent=1, default=float, allow_nan=False)
        atomic_write_bytes(args.out, (text + "\n").encode())
        print(f"wrote {args.out} in {payload['total_s']:.0f} s")
    return 0


def _default_iterations(device: torch.device) -> int:
    return 40 if device.type == "cuda" else 5


def _default_rounds(device: torch.device) -> int:
    return 2


def calibrate_memory(preset_name: str, sizes: tuple[int, ...] = (256, 384, 512), mode: str = "fp32") -> dict:
    """Fit K[mode] against the measured peak RSS (fresh processes, ``memory_in_subprocess``)
    at ``sizes``: least squares of (measured - BASE - 16 P) on 4 B x activation elements."""
    from ..core.estimate import elements_per_pixel, param_count
    from ..core.presets import get_preset

    preset = get_preset(preset_name)
    over = {
        "precision": "bf16" if mode == "bf16" else "fp32",
        "checkpointing": mode == "checkpointing",
        "adam_impl": "fused",
    }
    v = Variant(mode, "", overrides=over)
    net_cfg = replace(preset.net, out_channels=3)
    rows = []
    for s in sizes:
        mb = memory_in_subprocess(v, preset, s, iterations=2)
        acts = 4 * elements_per_pixel(net_cfg) * s * s
        rows.append(
            {
                "size": s,
                "measured_mb": mb,
                "activation_mb": acts / 2**20,
                "params_mb": 16 * param_count(net_cfg) / 2**20,
            }
        )
    ok = [r for r in rows if r["measured_mb"] is not None]
    x = np.array([r["activation_mb"] for r in ok])
    y = np.array([r["measured_mb"] - r["params_mb"] for r in ok])  # growth over the RSS before the fit
    k = float((x @ y) / (x @ x)) if len(ok) else float("nan")
    return {"preset": preset_name, "mode": mode, "k": k, "rows": rows}
