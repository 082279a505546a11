"""Cost against quality from records: budgets read off checks, the Pareto front, the cheap choice."""

from __future__ import annotations

import pytest

from dip_lib.core.presets import get_preset
from dip_lib.report import cost
from dip_lib.report.compute import run_gflop
from dip_lib.report.runs import Run, pairs


def _run(width: int, seed: int = 0, preset: str = "table1-seed", image: str = "house", lr: float | None = None) -> Run:
    skip = 4 if preset == "table1-paper" else width
    net = pairs(channels_down=(width,) * 5, channels_up=(width,) * 5, channels_skip=(skip,) * 5)
    return Run("cost", "smoke", image, crop=64, preset=preset, net=net, seed=seed, lr=lr, iterations=100)


def _rec(psnrs: list[float], every: int = 25) -> dict:
    its = [every * (k + 1) for k in range(len(psnrs))]
    return {
        "summary": {},
        "history": {
            "iteration": its,
            "psnr_clean": psnrs,
            "psnr_hole": [p - 1 for p in psnrs],
            "elapsed": [0.1 * it for it in its],
        },
    }


def test_a_budget_is_the_last_check_at_or_before_it():
    rec = _rec([20.0, 22.0, 23.0, 22.5])  # checks at 25, 50, 75, 100
    assert cost.at_budget(rec, 60) == (22.0, 21.0, pytest.approx(5.0))
    assert cost.at_budget(rec, 100)[0] == 22.5
    assert cost.at_budget(rec, 101) is None  # the run never got there


def test_points_average_runs_and_scale_compute_with_the_budget():
    records = [(_run(8, seed=s), _rec([20.0 + s, 22.0 + s, 23.0 + s, 24.0 + s])) for s in (0, 1)]
    pts = cost.points(records, budgets=(50,))
    assert [p.iterations for p in pts] == [50, 100]
    p50, p100 = pts
    assert p50.psnr == pytest.approx(22.5) and p50.n == 2 and p50.std == pytest.approx(0.7071, abs=1e-3)
    assert p100.full and not p50.full
    assert p100.gflop == pytest.approx(2 * p50.gflop)
    assert p50.gflop == pytest.approx(50 * run_gflop(records[0][0]))


def test_front_and_choice():
    # a narrow net that is cheap and nearly as good, a wide one that is best at full count
    records = [
        (_run(8), _rec([20.0, 24.0, 25.6, 25.7])),
        (_run(32), _rec([22.0, 25.0, 26.0, 26.1])),
    ]
    pts = cost.points(records, budgets=(25, 50, 75))
    fr = cost.front(pts)
    assert all(b.psnr > a.psnr and b.gflop >= a.gflop for a, b in zip(fr, fr[1:]))
    choice = cost.choose(pts, [p for p in pts if p.full], tolerance_db=0.5)
    assert choice.reference.width == 32 and choice.reference.psnr == 26.1
    assert (choice.point.width, choice.point.iterations) == (8, 75)  # 25.6 >= 26.1 - 0.5, the cheapest such
    assert choice.saving == pytest.approx(choice.reference.gflop / choice.point.gflop)
    assert choice.met == (choice.saving >= cost.MIN_SAVING)
    assert cost.choose([], []) is None


def test_preset_from_a_point_is_that_recipe():
    records = [(_run(16, preset="table1-paper", lr=0.01), _rec([20.0, 21.0, 22.0, 23.0]))]
    p = cost.points(records, budgets=())[0]
    fast = cost.preset_from(p, "fast", "x")
    base = get_preset("table1-paper")
    assert (fast.lr, fast.iterations) == (0.01, 100)
    assert (fast.net.channels_down, fast.net.channels_skip) == ((16,) * 5, (4,) * 5)
    assert fast.net.upsample_mode == base.net.upsample_mode and fast.reg_noise_std == base.reg_noise_std


def test_the_fast_preset_is_the_choice_of_the_committed_cost_sweep():
    """The `fast` preset is not typed from memory: it must be the cheapest point within tolerance of
    the best recipe in the committed quick results (update it when those results change)."""
    from pathlib import Path

    from dip_lib.core.presets import PRESETS
    from dip_lib.report import pages
    from dip_lib.report.store import ResultStore

    study = pages.cost_study("quick", ResultStore(Path(__file__).resolve().parents[1] / "results"))
    choice = study.panels[0][3]
    fast = PRESETS["fast"]
    assert choice is not None
    assert cost.preset_from(choice.point, fast.name, fast.description) == fast


def test_the_cli_offers_the_fast_preset_with_its_own_estimate():
    from dip_lib.core.presets import get_preset
    from dip_lib.inpaint import _fast_hint

    cfg = get_preset("text").fit_config(progress=False)
    line = _fast_hint(3, 64, 64, cfg)
    assert line.startswith("hint: --preset fast (") and "would take about" in line and "06_cost_quality" in line
