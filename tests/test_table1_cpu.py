"""The native-size Table-1 plan on a CPU: its runs are the paper profile's, its table reads the records."""

from __future__ import annotations

import pytest

from dip_lib.core.errors import DipError
from dip_lib.report import registry, runs, table1_cpu


def test_the_plan_is_the_paper_profiles_runs_of_the_256_px_images_on_bf16():
    planned = registry.plan("table1-cpu", "paper")
    dip = [r for r in planned if r.method == "dip"]
    assert [r.image for r in dip] == list(runs.TABLE1_CPU_IMAGES)
    paper = {(r.image, r.preset, r.seed): r for r in registry.plan("table1", "paper")}
    for r in dip:
        twin = paper[(r.image, "table1-paper", 0)]
        # the same problem and recipe as the paper profile's run (mask seed included), other numerics
        assert (r.mask_seed, r.crop, r.net, r.iterations) == (twin.mask_seed, None, twin.net, 11000)
        assert dict(r.numerics)["precision"] == "bf16" and dict(r.numerics)["threads"] == 1
    # the ids of the runs computed on 2026-12-02 stay theirs
    assert {r.image: r.run_id for r in dip}["house"] == "a2073bf7d6a22a18"
    assert sorted(r.method for r in planned if r.method != "dip") == ["biharmonic"] * 4 + ["csc"] * 4
    with pytest.raises(DipError, match="paper profile"):
        registry.plan("table1-cpu", "quick")


def _record(final, oracle, wall=7200.0):
    return {
        "summary": {"final_psnr": final, "oracle_psnr": oracle, "oracle_iteration": 9000, "restores": 0},
        "eswmv": {"psnr": oracle - 1},
        "config": {"crop": None},
        "wall_time": wall,
        "environment": {"device_name": "AMD EPYC"},
    }


def test_table_and_summary_set_the_final_output_beside_the_papers_value():
    planned = {(r.image, r.method): r for r in registry.plan("table1-cpu", "paper")}
    records = [
        (planned[("house", "dip")], _record(38.16, 38.5)),  # paper 39.16, Papyan 34.58
        (planned[("peppers", "dip")], _record(34.05, 34.2)),  # paper 33.05
        (planned[("house", "biharmonic")], {"summary": {"final_psnr": 30.0}}),
    ]
    df = table1_cpu.table(records)
    house = df[df["image"] == "House"].iloc[0]
    assert house["paper DIP"] == 39.16 and house["final - paper"] == -1.0 and house["biharmonic"] == 30.0
    assert df["image"].iloc[-1] == "mean (2 images)"
    s = table1_cpu.summary(records)
    assert (s.images, s.of_table, s.planned) == (2, 11, 4)
    assert s.mean_diff == pytest.approx(0.0) and s.closest[1] in (-1.0, 1.0) and s.hours == pytest.approx(4.0)
    assert "precision bf16" in s.numerics and s.device == "AMD EPYC"
    assert table1_cpu.table([]).empty and table1_cpu.summary([]).images == 0
