"""dip_lib: a faithful, modern Deep Image Prior inpainting library (Ulyanov et al., CVPR 2018).

The names below are imported on first use, so that ``python -m dip_lib`` answers (and refuses bad
input) without first paying for torch's import.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_NAMES = {
    "core.errors": ("DipError",),
    "core.config": ("CheckState", "FitConfig", "FitResult", "History"),
    "core.solver": ("fit",),
    "core.device": ("resolve_device",),
    "core.imageio": ("load_image", "load_mask", "save_image"),
    "core.inputs": ("make_input", "meshgrid_input", "noise_input"),
    "core.masks": ("Inpainting", "bernoulli_mask", "recipe_text_mask", "text_mask", "user_text_mask"),
    "core.metrics": ("masked_psnr", "psnr", "ssim"),
    "core.nets": ("SkipConfig", "SkipNet", "count_params"),
    "core.presets": ("PRESETS", "Preset", "get_preset", "sweep_net"),
}
_WHERE = {name: module for module, names in _NAMES.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'dip_lib' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
