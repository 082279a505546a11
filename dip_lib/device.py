"""What this machine is: device resolution and host probes (CPU model and flags)."""
from __future__ import annotations

import platform
from functools import lru_cache
from pathlib import Path

import torch

from .errors import DipError


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
