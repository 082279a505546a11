"""Shared fixtures: the repository root and the shared data folder (tests needing it skip without it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]

# Test machines have few, busy cores: one thread avoids oversubscription (about 10x faster here).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` next to the checkout (read-only reference data)."""
    path = REPO_ROOT.parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path}")
    return path


@pytest.fixture(scope="session")
def data_files() -> None:
    """The registry's images in the data cache (fetched from ``DIP_DATA_MIRROR``, ``../shared/data``
    or the public URLs); a test that draws on them is skipped, with the reason, when they cannot be had."""
    from dip_lib.core import data
    from dip_lib.core.errors import DipError

    shared = REPO_ROOT.parent / "shared" / "data"
    env = {} if os.environ.get("DIP_DATA_MIRROR") or not shared.is_dir() else {"DIP_DATA_MIRROR": str(shared)}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        try:
            data.fetch("all")
        except DipError as exc:
            pytest.skip(f"the images cannot be had here: {exc}")


@pytest.fixture
def small(tmp_path) -> Path:
    """A 64x64 RGB noise image file (the inpaint tests' input)."""
    import numpy as np
    from PIL import Image

    path = tmp_path / "small.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    return path
