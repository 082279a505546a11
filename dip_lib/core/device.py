"""What this machine is and how torch uses it: device resolution, host probes (CPU model, flags,
load) and the backend switches a fit sets and restores (CPU threads, cudnn.benchmark, TF32)."""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import torch

from .errors import DipError


class BackendSettings(Protocol):
    """The fields of a fit configuration (``config.FitConfig``) that ``backend_flags`` reads."""

    threads: int | None
    cudnn_benchmark: bool
    tf32: bool | None


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu; an unknown or absent device is a DipError."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise DipError(f"unknown device {device!r} (auto, cpu, cuda, cuda:N, mps)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DipError(f"device {device!r} requested but no CUDA device is available")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DipError(f"device {device!r} requested but MPS is not available")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise DipError(f"device {device!r} cannot run a fit (auto, cpu, cuda, cuda:N, mps)")
    return dev


@lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    """The first processor's entries of /proc/cpuinfo (empty off Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    info: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break
        key, _, value = line.partition(":")
        info[key.strip()] = value.strip()
    return info


def cpu_name() -> str:
    return _cpuinfo().get("model name") or platform.processor() or "cpu"


def cpu_flags() -> set[str]:
    return set(_cpuinfo().get("flags", "").split())


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (avx512_bf16 or AMX); elsewhere bf16 is emulated and slow."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def usable_cores() -> int:
    """The cores this process may run on (its affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_threads() -> int:
    """OMP_NUM_THREADS when it is set, else the usable cores that other processes leave idle now (at
    least 1; recorded in --history): an OpenMP op waits for its slowest thread, so one thread on a
    busy core stalls them all (2 threads beside one CPU burner ran 3-12x slower than 1 here)."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    cores, idle = usable_cores(), idle_cores()
    return cores if idle is None else min(cores, idle)


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
    free = idle_cores()
    if free is None:
        return None
    return None if free >= min(os.cpu_count() or 1, torch.get_num_threads()) else free


def idle_cores() -> int | None:
    """The machine's cores that other processes leave idle now (at least 1); None: not measurable."""
    others = other_cpu_load()
    return None if others is None else max(1, int((os.cpu_count() or 1) - others + 0.5))


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
def backend_flags(cfg: BackendSettings, device: torch.device) -> Iterator[None]:
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
