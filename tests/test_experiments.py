"""Runs, their ids, the results store and resumable, shared, failure-proof execution (tiny CPU runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from dip_lib.core import presets
from dip_lib.core.errors import DipError
from dip_lib.report import compute, runner
from dip_lib.report.registry import plan
from dip_lib.report.runs import ALL_TABLE1, Run, get_profile, load_problem, pairs
from dip_lib.report.store import SCHEMA, InvalidRecord, ResultStore

ROOT = Path(__file__).resolve().parents[1]
NET = pairs(channels_down=(8, 8, 8), channels_skip=(4, 4, 4), channels_up=(8, 8, 8))
TIMING = {"wall_time", "elapsed", "ms_per_iteration", "date"}


def tiny_runs(n: int = 2, **kw) -> list[Run]:
    base = dict(
        experiment="table1",
        profile="smoke",
        image="camera",
        source="embedded",
        crop=48,
        mask="bernoulli",
        preset="table1-seed",
        net=NET,
        iterations=30,
        log_every=3,
    )
    base.update(kw)
    return [Run(mask_seed=k, seed=k, **base) for k in range(n)]


def without_timing(obj):
    if isinstance(obj, dict):
        return {k: without_timing(v) for k, v in obj.items() if k not in TIMING}
    if isinstance(obj, list):
        return [without_timing(v) for v in obj]
    return obj


def test_run_id_covers_everything_that_changes_numbers(monkeypatch):
    a, b = tiny_runs(2)
    assert a.run_id != b.run_id
    assert a.run_id == Run.from_dict(json.loads(json.dumps(a.to_dict()))).run_id
    assert a.problem_id != b.problem_id  # the mask seed differs
    assert replace(a, seed=7).problem_id == a.problem_id  # seeds share the problem
    assert replace(a, label="shown differently").run_id == a.run_id  # display text is not configuration
    # the numerics: threads, precision, device
    assert replace(a, numerics=pairs(**{**dict(a.numerics), "threads": 2})).run_id != a.run_id
    assert replace(a, numerics=pairs(**{**dict(a.numerics), "precision": "bf16"})).run_id != a.run_id
    assert plan("table1", "smoke", device="cuda")[0].run_id != plan("table1", "smoke")[0].run_id
    # a changed recipe (lr, guard, noise) gives new ids to the runs that use it
    before = a.run_id
    for change in ({"lr": 0.02}, {"guard": True}, {"reg_noise_std": 0.05}):
        monkeypatch.setitem(presets.PRESETS, "table1-seed", replace(presets.PRESETS["table1-seed"], **change))
        assert a.run_id != before, change
    monkeypatch.undo()
    assert a.run_id == before


def test_plans_cover_the_experiments():
    quick = plan("table1", "quick")
    assert {r.image for r in quick} == set(ALL_TABLE1)
    assert {r.method for r in quick} == {"dip", "biharmonic", "csc"}
    assert {r.preset for r in quick if r.method == "dip"} == {"table1-paper", "table1-seed"}
    assert len({r.mask_seed for r in quick}) == 11  # one fixed mask per image, shared by every method
    # seed 0 of every image comes before any seed 1 (a partial budget yields whole seeds)
    seeds = [r.seed for r in quick if r.method == "dip"]
    assert seeds == sorted(seeds)
    arch = plan("arch", "quick")
    assert sorted({r.filters for r in arch if not r.label.startswith("depth")}) == [4, 8, 16, 32, 64, 128]
    depth = {(r.depth, r.skip, r.seed) for r in arch if r.label.startswith("depth")}
    assert depth == {(d, s, k) for d in range(1, 9) for s in (True, False) for k in (0, 1)}
    optim = plan("optim", "quick")
    assert len(optim) == 12 and {r.seed for r in optim} == {0, 1}
    assert {(r.lr, r.guard, r.iterations) for r in optim if r.label.startswith("trial 3")} == {
        (0.1, False, 12001),
        (0.1, True, 12001),
    }
    figures = plan("figures", "quick")
    assert {r.target for r in figures} == {"image", "noisy", "shuffled", "noise"}
    assert {r.method for r in figures if r.mask == "file"} == {"dip", "biharmonic"}
    with pytest.raises(DipError, match="unknown experiment"):
        plan("nope", "quick")
    with pytest.raises(DipError, match="unknown profile"):
        plan("table1", "huge")


def test_results_are_stored_and_resumed(tmp_path):
    store = ResultStore(tmp_path)
    runs = tiny_runs(2)
    out = runner.run_all(runs, store, progress=False)
    assert out.computed == runs and not out.failed
    records = [rec for _, rec in runner.load_records(runs, store)]
    for run, rec in zip(runs, records):
        assert rec["schema"] == SCHEMA and rec["run_id"] == run.run_id
        assert rec["config"] == json.loads(json.dumps(run.to_dict()))
        s = rec["summary"]
        assert s["oracle_psnr"] > rec["history"]["psnr_clean"][0] + 1  # it fits
        assert s["oracle_psnr"] >= s["final_psnr"] and s["oracle_psnr"] == max(rec["history"]["psnr_clean"])
        assert s["oracle_hole_psnr"] is not None and s["final_hole_psnr"] is not None
        assert set(rec["images"]) >= {"final", "best", "observed"}
        assert store.image(run, "final").shape == (1, 48, 48)
    stamp = [store.path(r).stat().st_mtime_ns for r in runs]
    assert not runner.run_all(runs, store, progress=False).computed  # nothing computed again
    assert [store.path(r).stat().st_mtime_ns for r in runs] == stamp
    assert not list(tmp_path.rglob("*.tmp"))
    # strict JSON: no NaN or Infinity tokens anywhere
    for r in runs:
        json.loads(store.path(r).read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON token {c}"))


def test_budget_keeps_finished_runs_and_reports_the_rest(tmp_path):
    store = ResultStore(tmp_path)
    runs = tiny_runs(3)
    runner.run_all(runs[:1], store, progress=False)
    out = runner.run_all(runs, store, budget_seconds=0, progress=False)
    assert out.remaining == runs[1:] and not out.computed
    assert [store.exists(r) for r in runs] == [True, False, False]
    with pytest.raises(DipError, match="2 of 3 runs have no stored result"):
        runner.load_records(runs, store)
    partial = runner.load_records(runs, store, partial=True)
    assert [r for r, _ in partial] == runs[:1]
    cov = runner.coverage(runs, store)
    assert (cov["stored"], cov["planned"], cov["seeds"], cov["missing"]) == (1, 3, [0], runs[1:])
    for bad in (float("nan"), -1.0):
        with pytest.raises(DipError, match="budget"):
            runner.run_all(runs, store, budget_seconds=bad, progress=False)


def test_a_diverging_run_fails_and_is_never_stored(tmp_path):
    store = ResultStore(tmp_path)
    bad, good = tiny_runs(2, lr=1e30, guard=False)[0], tiny_runs(2)[1]
    out = runner.run_all([bad, good], store, progress=False)
    assert [r for r, _ in out.failed] == [bad] and "diverged" in out.failed[0][1]
    assert out.computed == [good]
    assert not store.path(bad).exists() and not list(store.folder(bad).glob(f"{bad.run_id}*"))


def test_records_that_do_not_belong_to_their_run_are_reported_and_recomputed(tmp_path, caplog):
    store = ResultStore(tmp_path)
    a, b = tiny_runs(2)
    runner.run_all([a, b], store, progress=False)
    good_b = store.path(b).read_text()
    store.path(b).write_text(store.path(a).read_text())  # another run's record under b's id
    with pytest.raises(InvalidRecord, match=f"invalid record {store.path(b)}.*delete it to recompute"):
        store.load(b)
    store.path(a).write_text("{}")
    with pytest.raises(InvalidRecord, match="missing"):
        store.load(a)
    assert store.missing([a, b]) == [a, b]
    out = runner.run_all([a, b], store, progress=False)
    assert out.computed == [a, b]
    assert without_timing(json.loads(store.path(b).read_text())) == without_timing(json.loads(good_b))


def test_leftovers_of_killed_runs_are_removed(tmp_path):
    store = ResultStore(tmp_path)
    a, b = tiny_runs(2)
    runner.run_all([a], store, progress=False)
    folder = store.folder(a)
    junk = [folder / f".{b.run_id}.json.abc.tmp", folder / f"{b.run_id}-final.png"]
    for p in junk:
        p.write_bytes(b"x")
        os.utime(p, (time.time() - 3600, time.time() - 3600))
    kept = folder / f"{a.run_id}-final.png"
    assert store.clean_leftovers([a, b]) == 2
    assert not any(p.exists() for p in junk) and kept.exists()


CHILD = """
import json, sys
from dip_lib.report import runner
from dip_lib.report.runs import Run
from dip_lib.report.store import ResultStore
runs = [Run.from_dict(d) for d in json.loads(sys.argv[2])]
out = runner.run_all(runs, ResultStore(sys.argv[1]), progress=False)
print(json.dumps([r.run_id for r in out.computed]))
"""


def _child(store: Path, runs: list[Run], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(store), json.dumps([r.to_dict() for r in runs])],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def test_same_runs_in_separate_processes_under_different_load_give_identical_records(tmp_path):
    """The thread count is part of the run (1 on CPU), not chosen from the machine's load."""
    runs = tiny_runs(2)
    first = _child(tmp_path / "a", runs)
    assert first.wait(timeout=300) == 0, first.stderr.read()
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        second = _child(tmp_path / "b", runs, env={"OMP_NUM_THREADS": "2"})
        assert second.wait(timeout=300) == 0, second.stderr.read()
    finally:
        for p in burners:
            p.kill()
    for r in runs:
        a = json.loads((tmp_path / "a" / r.profile / r.experiment / f"{r.run_id}.json").read_text())
        b = json.loads((tmp_path / "b" / r.profile / r.experiment / f"{r.run_id}.json").read_text())
        assert without_timing(a) == without_timing(b)


def test_two_processes_on_one_store_share_the_work(tmp_path):
    runs = tiny_runs(4)
    procs = [_child(tmp_path, runs), _child(tmp_path, runs)]
    done = []
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
        done.append(json.loads(p.stdout.read().strip().splitlines()[-1]))
    assert sorted(done[0] + done[1]) == sorted(r.run_id for r in runs)  # each run computed exactly once
    assert all(ResultStore(tmp_path).exists(r) for r in runs)


def test_problems_are_deterministic():
    run = tiny_runs(1)[0]
    (a, ma), (b, mb) = load_problem(run), load_problem(run)
    assert a.shape == (1, 48, 48) and ma.shape == (1, 48, 48)
    np.testing.assert_array_equal(ma, mb)
    np.testing.assert_array_equal(a, b)
    assert abs(ma.mean() - 0.5) < 0.1


def test_fig2_targets():
    base = tiny_runs(1, mask="none")[0]
    image, mask = load_problem(base)
    assert mask.min() == 1
    shuffled, _ = load_problem(replace(base, target="shuffled"))
    np.testing.assert_allclose(np.sort(shuffled.ravel()), np.sort(image.ravel()))  # same pixels, other places
    noise, _ = load_problem(replace(base, target="noise"))
    assert 0 <= noise.min() and noise.max() <= 1 and abs(noise.mean() - 0.5) < 0.05


def test_batched_runs_match_separate_runs(tmp_path):
    """The GPU path (K problems in one grouped pass) stores what separate runs store, here on CPU.

    oneDNN rounds grouped and plain convolutions differently in the last bit, and a fit amplifies
    that; without it the two paths agree exactly."""
    import torch

    runs = tiny_runs(2)
    with torch.backends.mkldnn.flags(enabled=False):
        runner.run_all(runs, ResultStore(tmp_path / "one"), batch=1, progress=False)
        runner.run_all(runs, ResultStore(tmp_path / "two"), batch=2, progress=False)
    one = [x for _, x in runner.load_records(runs, ResultStore(tmp_path / "one"))]
    two = [x for _, x in runner.load_records(runs, ResultStore(tmp_path / "two"))]
    assert all(r.get("batched") == 2 for r in two) and not any("batched" in r for r in one)
    for a, b in zip(one, two):
        assert a["run_id"] == b["run_id"]
        assert a["history"]["iteration"] == b["history"]["iteration"]
        np.testing.assert_allclose(a["history"]["loss"], b["history"]["loss"], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(a["history"]["psnr_clean"], b["history"]["psnr_clean"], rtol=1e-5)
        assert abs(a["summary"]["final_psnr"] - b["summary"]["final_psnr"]) < 1e-3
        assert a["eswmv"]["iteration"] == b["eswmv"]["iteration"]


def test_unwritable_results_folder_is_refused_before_any_fit(tmp_path):
    if os.geteuid() == 0:  # root writes anywhere: a file where the profile's folder should be
        (tmp_path / "results").mkdir()
        (tmp_path / "results" / "smoke").write_text("a file where the folder should be")
        store = ResultStore(tmp_path / "results")
    else:
        (tmp_path / "ro").mkdir(mode=0o500)
        store = ResultStore(tmp_path / "ro")
    t0 = time.perf_counter()
    with pytest.raises(DipError, match="cannot write results"):
        runner.run_all(tiny_runs(1), store, progress=False)
    assert time.perf_counter() - t0 < 5


def test_run_ids_of_the_stored_profiles_do_not_move():
    """Stored results are found by id: a refactoring that changes an id orphans hours of runs. These
    ids belong to runs in results/ (or, for paper, to the GPU loans' runs); change them only on purpose."""
    assert plan("table1", "quick")[0].run_id == "6f7873057f93ee3d"
    assert plan("arch", "quick")[0].run_id == "fd98dd52e5753a24"
    assert plan("optim", "quick")[0].run_id == "c21c41ac146fa63a"
    assert plan("figures", "quick")[0].run_id == "426609ec5599c115"
    assert plan("table1", "paper")[0].run_id == "d1f8d180b58653c8"
    assert plan("cost", "quick")[0].run_id == "6f356451b93578e4"
    assert plan("claims", "quick")[0].run_id == "4fd631e77e36a73f"


def test_the_claims_runs_are_new_runs_and_the_library_keeps_its_aspect(monkeypatch, data_files):
    """The claims experiment adds runs without touching a stored one: its ids are nobody else's, no
    earlier plan sets both crop and resize (so cropping before resizing changes no stored problem), and
    the wide library image becomes a square window of itself with its holes, not a squashed copy."""
    from dip_lib.report.registry import EXPERIMENTS
    from dip_lib.report.runs import PROFILES, SHALLOW

    others = [r for e in EXPERIMENTS if e != "claims" for p in PROFILES for r in plan(e, p)]
    assert not [r for r in others if r.crop and r.resize]
    claims = plan("claims", "quick")
    prof = get_profile("quick").claims
    assert not {r.run_id for r in claims} & {r.run_id for r in others}
    # with skips at every depth, without them only at the shallow depths claim 6 reads
    depths_run = len(prof.depths) + len([d for d in prof.depths if d in SHALLOW])
    assert len(claims) == len(prof.seeds) * (2 + len(prof.images) * depths_run)
    assert {r.preset for r in claims if r.label.endswith("text mask")} == {"table1-paper", "table1-seed"}
    recipes = {r.preset: r for r in claims if r.image == "kate" and r.resize == get_profile("quick").kate_size}
    table1 = {r.preset: r for r in plan("table1", "quick") if r.method == "dip"}
    for preset, run in recipes.items():  # the same recipe and network as Table 1's runs, on another task
        assert (run.net, run.iterations) == (table1[preset].net, table1[preset].iterations)
    lib = next(r for r in plan("claims", "smoke") if r.image == "library")
    image, mask = load_problem(lib)
    assert image.shape == (3, 64, 64) and 0.1 < 1 - mask.mean() < 0.4


def test_cost_runs_share_table1_problems_at_other_widths():
    """The cost sweep's problems are Table 1's (same crop and mask), so Table 1's own runs are its
    table1_width points; a width named in cost_iterations gets its own budget, 0 leaves it out."""
    prof = get_profile("quick")
    table1 = {(r.image, r.problem_id) for r in plan("table1", "quick") if r.method == "dip"}
    cost = plan("cost", "quick")
    assert {(r.image, r.problem_id) for r in cost} <= table1
    assert {r.filters for r in cost} == set(prof.cost_widths) and prof.table1_width not in prof.cost_widths
    assert not [r for r in cost if r.preset == "table1-paper" and r.filters == 128]
    assert {r.iterations for r in cost if r.filters == 128} == {prof.cost_iterations["table1-seed@128"]}
    assert {r.seed for r in cost} == set(prof.seeds_sweep)


def test_the_time_model_scales_the_flop_prior_by_the_stored_runs():
    """Missing runs are estimated from the FLOP prior (fixed cost + FLOPs per iteration) times the
    median measured/prior ratio of the stored runs; a run slowed by a neighbour does not set it."""
    runs = plan("cost", "quick")[:4]
    stored = [
        (r, {"summary": {"wall_time": k * compute.prior_seconds(r), "iterations_run": r.iterations}})
        for r, k in zip(runs[:3], (2.0, 2.0, 9.0))
    ]
    seconds = compute.seconds_model(stored)
    assert seconds(runs[3]) == pytest.approx(2.0 * compute.prior_seconds(runs[3]))
    assert compute.seconds_model([])(runs[3]) == compute.prior_seconds(runs[3])
    wide, narrow = (next(r for r in plan("cost", "quick") if r.filters == f) for f in (128, 8))
    per_it = [compute.prior_seconds(r) / r.iterations for r in (narrow, wide)]
    assert per_it[0] >= compute.PRIOR_OVERHEAD_S["cpu"] and per_it[1] > 5 * per_it[0]  # the fixed cost, then FLOPs


def _store_with(tmp_path: Path, folder: str, n: int) -> ResultStore:
    """A store holding the first ``n`` committed records of ``results/<folder>``, each with the images it
    names (a record is valid with them)."""
    import shutil

    root = Path(__file__).resolve().parents[1] / "results" / folder
    for f in sorted(root.glob("*.json"))[:n]:
        for name in [f.name, *json.loads(f.read_text())["images"].values()]:
            (tmp_path / folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(root / name, tmp_path / folder / name)
    return ResultStore(tmp_path)


def test_the_estimate_of_an_experiment_with_nothing_stored_scales_from_the_profiles_other_runs(tmp_path):
    """The machine's scale comes from every stored run of the profile, not only the chosen experiment's."""
    store = _store_with(tmp_path, "quick/table1", 3)
    line = runner._estimate_line("quick", None, plan("arch", "quick"), store)
    assert line.startswith("44 runs to compute: about ") and line.endswith("(scaled from 3 stored runs)"), line


def test_reproduce_on_a_complete_store_says_that_nothing_needed_computing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ResultStore, "missing", lambda self, runs: [])  # every run stored
    outcomes = runner.reproduce("smoke", only=["optim", "arch"], results_dir=tmp_path)
    assert all(not o.computed and not o.failed and not o.remaining for o in outcomes.values())
    total = len(plan("optim", "smoke")) + len(plan("arch", "smoke"))
    out = capsys.readouterr().out
    assert f"nothing to compute: all {total} runs of optim, arch are stored in {tmp_path / 'smoke'}" in out


def test_the_estimate_of_an_extra_plan_scales_from_its_own_stored_runs(tmp_path):
    """The fig8 plan's stored runs scale the estimate of its missing ones (they are no profile experiment's)."""
    store = _store_with(tmp_path, "paper/fig8", 2)
    line = runner._estimate_line("paper", None, plan("fig8", "paper")[-3:], store, ["fig8"])
    assert line.startswith("3 runs to compute: about ") and line.endswith("(scaled from 2 stored runs)"), line


def test_reproduce_computes_the_seeds_asked_for_and_refuses_bad_ones_in_one_line(tmp_path, monkeypatch, capsys):
    """--seeds replaces each plan's own seeds (a plan's next replicates, computed before the plan names
    them); a negative seed is one line on stderr and exit 2, before any work."""
    from dip_lib.cli import main

    asked = []
    monkeypatch.setattr(ResultStore, "missing", lambda self, runs: asked.extend(runs) or [])
    base = ["reproduce", "--profile", "paper", "--only", "table1-cpu", "--results-dir", str(tmp_path), "--workers", "1"]
    assert main(base + ["--seeds", "1"]) == 0
    n = len(plan("table1-cpu", "paper", seeds=(1,)))
    assert {r.seed for r in asked if r.method == "dip"} == {1}
    assert f"table1-cpu: {n} of {n} runs stored" in capsys.readouterr().out
    assert main(base + ["--seeds", "-1"]) == 2
    assert capsys.readouterr().err.strip() == "error: --seeds must be integers >= 0, got -1"


def test_reproduce_refuses_a_device_for_plans_that_fix_their_numerics(tmp_path, monkeypatch, capsys):
    """table1-cpu and fig8 name CPU bf16 numerics in their run ids: --device cuda would compute the same
    CPU runs, so it is one line on stderr and exit 2, before any work."""
    from dip_lib.cli import main

    monkeypatch.setattr(ResultStore, "missing", lambda self, runs: pytest.fail("no work before the refusal"))
    for only in ("fig8", "table1-cpu"):
        args = ["reproduce", "--profile", "paper", "--only", only, "--device", "cuda", "--results-dir", str(tmp_path)]
        assert main(args) == 2
        assert capsys.readouterr().err.strip() == (
            f"error: --device does not apply to {only}: its runs fix their numerics (bf16 on one CPU thread)"
        )
