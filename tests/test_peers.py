"""Classical peers: shapes, quality well above the masked input, run_peers, missing sporco, bad input."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from skimage import data

from dip_lib.core import peers
from dip_lib.core.errors import DipError
from dip_lib.core.masks import bernoulli_mask
from dip_lib.core.metrics import psnr


def _camera(size: int = 48) -> np.ndarray:
    return (data.camera()[200 : 200 + size, 200 : 200 + size] / 255.0).astype(np.float32)[None]


def _astronaut(size: int = 32) -> np.ndarray:
    return np.moveaxis(data.astronaut()[100 : 100 + size, 180 : 180 + size] / 255.0, -1, 0).astype(np.float32)


@pytest.mark.parametrize("per_channel", [False, True])
def test_biharmonic_fills_holes(per_channel):
    img = _astronaut()
    mask = bernoulli_mask(img.shape[1:], 0.5, seed=0, channels=3 if per_channel else 1)
    out = peers.biharmonic(img * mask, mask)
    assert out.shape == img.shape and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    known = np.broadcast_to(mask > 0.5, img.shape)
    np.testing.assert_allclose(out[known], img[known], atol=1e-6)  # observed pixels stay
    assert psnr(img, out) > psnr(img, img * mask) + 10


def test_biharmonic_is_exact_on_a_ramp():
    ramp = np.tile(np.linspace(0.1, 0.9, 32, dtype=np.float32), (32, 1))[None]
    mask = bernoulli_mask((32, 32), 0.5, seed=3)
    assert psnr(ramp, peers.biharmonic(ramp * mask, mask)) > 40


def test_csc_grey_and_colour():
    img = _camera()
    mask = bernoulli_mask(img.shape[1:], 0.5, seed=0)
    out = peers.csc(img * mask, mask, iterations=10)
    assert out.shape == img.shape and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    assert psnr(img, out) > psnr(img, img * mask) + 12
    rgb = _astronaut()
    rgb_mask = bernoulli_mask(rgb.shape[1:], 0.5, seed=1, channels=3)
    out_rgb = peers.csc(rgb * rgb_mask, rgb_mask, iterations=5)
    assert out_rgb.shape == rgb.shape and psnr(rgb, out_rgb) > psnr(rgb, rgb * rgb_mask) + 10


def test_run_peers_records():
    img = _camera(40)
    mask = bernoulli_mask(img.shape[1:], 0.5, seed=0)
    res = peers.run_peers(img, mask, csc_iterations=5)
    assert set(res) == {"biharmonic", "csc"}
    for rec in res.values():
        assert set(rec) == {"psnr", "ssim", "wall_time", "output", "params"}
        assert rec["psnr"] == pytest.approx(psnr(img, rec["output"]))
        assert 0 < rec["ssim"] <= 1 and rec["wall_time"] >= 0
    assert res["csc"]["params"]["iterations"] == 5 and res["csc"]["params"]["dictionary"] == peers.CSC_DICTIONARY
    only = peers.run_peers(img, mask, methods=("biharmonic",))
    assert set(only) == {"biharmonic"}


def test_missing_sporco(monkeypatch, caplog):
    for name in [m for m in sys.modules if m == "sporco" or m.startswith("sporco.")] + ["sporco"]:
        monkeypatch.setitem(sys.modules, name, None)  # makes `import sporco...` fail
    img = _camera(32)
    mask = bernoulli_mask(img.shape[1:], 0.5, seed=0)
    with pytest.raises(DipError, match="pip install sporco") as exc:
        peers.run_peers(img, mask)
    assert "\n" not in str(exc.value)
    with caplog.at_level("WARNING"):
        res = peers.run_peers(img, mask, missing="skip")
    assert set(res) == {"biharmonic"} and "skipping csc" in caplog.text


def test_bad_input():
    img = _camera(32)
    mask = bernoulli_mask((32, 32), 0.5, seed=0)
    with pytest.raises(DipError, match="mask"):
        peers.biharmonic(img, mask[:, :16])
    with pytest.raises(DipError, match="no observed"):
        peers.biharmonic(img, np.zeros_like(mask))
    with pytest.raises(DipError, match="dictionary"):
        peers.csc(img, mask, dictionary="nope")
    with pytest.raises(DipError, match="iterations"):
        peers.csc(img, mask, iterations=0)
    with pytest.raises(DipError, match="unknown peer"):
        peers.run_peers(img, mask, methods=("bm3d",))
