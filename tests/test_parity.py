"""The parity rule on synthetic numbers (no fits) and the study on a tiny network."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dip_lib.core import config
from dip_lib.speed.parity import ARMS, measure_parity, parity_verdict


def arms(shift: float = 0.0, noise: float = 0.05, per_image: dict[str, float] | None = None, seeds=(0, 1, 2), seed=0):
    """Baseline PSNRs for 3 images x seeds, and a candidate = baseline + shift + N(0, noise)."""
    rng = np.random.default_rng(seed)
    base, cand = {}, {}
    for i, img in enumerate(("a", "b", "c")):
        for s in seeds:
            base[(img, s)] = 25.0 + i + rng.normal(0, 0.5)  # the seed moves PSNR by ~0.5 dB
            cand[(img, s)] = base[(img, s)] + shift + (per_image or {}).get(img, 0.0) + rng.normal(0, noise)
    return base, cand


def test_identical_and_tiny_differences_pass():
    base, cand = arms(0.0, 0.05)
    v = parity_verdict(base, cand)
    assert v.passed and v.n_pairs == 9 and v.tolerance_db == 0.2
    assert v.ci_low_db <= v.mean_diff_db <= v.ci_high_db
    assert "lies within" in v.reason
    assert parity_verdict(base, dict(base)).passed  # no difference at all


def test_a_systematic_loss_fails():
    base, cand = arms(-0.3, 0.05)
    v = parity_verdict(base, cand)
    assert not v.passed and v.mean_diff_db == pytest.approx(-0.3, abs=0.06)
    assert "not within" in v.reason


def test_noisy_differences_fail_even_with_a_mean_near_zero():
    """Equivalence needs evidence: a wide CI (few, scattered pairs) is not parity."""
    base, cand = arms(0.0, 0.5)
    v = parity_verdict(base, cand)
    assert not v.passed and v.ci_high_db - v.ci_low_db > 0.35


def test_the_fp32_control_widens_the_tolerance():
    base, cand = arms(0.0, 0.25, seed=3)
    assert not parity_verdict(base, cand).passed
    rng = np.random.default_rng(9)
    control = {k: v + rng.normal(0, 0.4) for k, v in base.items()}  # fp32 itself moves this much
    v = parity_verdict(base, cand, control)
    assert v.control_rms_db > 0.2 and v.tolerance_db == v.control_rms_db
    assert v.passed


def test_one_image_losing_fails_although_the_mean_is_fine():
    base, cand = arms(0.0, 0.01, per_image={"a": -0.3, "b": 0.15, "c": 0.15})
    v = parity_verdict(base, cand, tol_db=0.2)
    assert abs(v.mean_diff_db) < 0.02 and -0.2 <= v.ci_low_db and v.ci_high_db <= 0.2
    assert not v.passed and "image a loses" in v.reason
    assert v.per_image["a"]["mean_diff_db"] == pytest.approx(-0.3, abs=0.02)


def test_bad_inputs_are_refused():
    base, cand = arms(seeds=(0, 1))
    with pytest.raises(ValueError, match=">= 3"):
        parity_verdict(base, cand)
    base, cand = arms()
    with pytest.raises(ValueError, match="same"):
        parity_verdict(base, {k: v for k, v in list(cand.items())[1:]})
    cand[("a", 0)] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        parity_verdict(base, cand)


TINY = {"channels_down": (8,) * 5, "channels_up": (8,) * 5, "channels_skip": (4,) * 5}


def test_measure_parity_on_a_tiny_network():
    out = measure_parity(
        images=("camera",), seeds=(0, 1, 2), size=40, iterations=6, arms=("fp32", "fp32-control", "bf16"), **TINY
    )["parity"]
    assert len(out["runs"]) == 9 and set(out["verdicts"]) == {"bf16"}
    v = out["verdicts"]["bf16"]
    assert v["passed"] == v["final_psnr"]["passed"] and v["final_psnr"]["n_pairs"] == 3
    finals = {(r["arm"], r["seed"]): r["final_psnr"] for r in out["runs"]}
    assert finals[("bf16", 0)] != finals[("fp32", 0)]  # bf16 really ran
    assert set(ARMS) >= set(out["arms"])
    assert out["common_overrides"] == {}


def test_common_overrides_reach_every_arm_the_baseline_included():
    """With numpy noise everywhere the fp32 baseline itself draws another noise stream."""
    kw = {"images": ("camera",), "seeds": (0, 1, 2), "size": 40, "iterations": 6, "arms": ("fp32",), **TINY}
    plain = measure_parity(**kw)["parity"]
    numpy_noise = measure_parity(common={"noise_rng": "numpy"}, **kw)["parity"]
    assert numpy_noise["common_overrides"] == {"noise_rng": "numpy"}
    assert [r["final_psnr"] for r in plain["runs"]] != [r["final_psnr"] for r in numpy_noise["runs"]]


def test_the_cpu_fast_path_is_backed_by_a_passing_committed_study(monkeypatch):
    """fast_config's CPU arithmetic (bf16 in channels_last, torch's input noise) is the arm that passed
    in results/bench-vm-cpu-parity.json, measured with the noise generator fast_config keeps."""
    monkeypatch.setattr(config, "cpu_has_native_bf16", lambda: True)
    cfg = config.fast_config(config.FitConfig(device="cpu"))
    study = json.loads((Path(__file__).parents[1] / "results" / "bench-vm-cpu-parity.json").read_text())["parity"]
    assert all(getattr(cfg, k) == v for k, v in study["common_overrides"].items())
    assert cfg.noise_rng == config.FitConfig().noise_rng
    arm = {"precision": cfg.precision, "channels_last": cfg.channels_last}
    name = next(n for n, overrides in study["arms"].items() if overrides == arm)
    assert study["verdicts"][name]["passed"] and len(study["seeds"]) >= 3
