"""Run configs, the results store and resumable execution (tiny smoke runs on CPU)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dip_lib import experiments as ex
from dip_lib.errors import DipError


def _tiny_runs(n: int = 2) -> list[ex.Run]:
    net = (("channels_down", (8, 8, 8)), ("channels_skip", (4, 4, 4)), ("channels_up", (8, 8, 8)))
    return [ex.Run("table1", "smoke", "camera", "embedded", crop=48, mask="bernoulli", mask_seed=k, preset="table1-seed",
                   net=net, iterations=30, seed=k, log_every=3) for k in range(n)]


def test_run_id_is_a_stable_hash_of_the_whole_config():
    a, b = _tiny_runs(2)
    assert a.run_id != b.run_id
    assert a.run_id == ex.Run.from_dict(json.loads(json.dumps(a.to_dict()))).run_id
    assert a.problem_id != b.problem_id  # the mask seed differs
    assert ex.Run(**{**a.__dict__, "seed": 7}).problem_id == a.problem_id  # seeds share the problem


def test_plans_cover_the_experiments():
    quick = ex.plan("table1", "quick")
    assert {r.image for r in quick} == set(ex.ALL_TABLE1)
    assert {r.method for r in quick} == {"dip", "biharmonic", "csc"}
    assert {r.preset for r in quick if r.method == "dip"} == {"table1-paper", "table1-seed"}
    masks = {r.image: r.mask_seed for r in quick}
    assert len(set(masks.values())) == 11  # one fixed mask per image, shared by every method
    paper = ex.plan("arch", "paper")
    labels = {r.label for r in paper}
    assert {f"filters={f}" for f in (4, 16, 32, 64, 128)} <= labels
    assert {f"depth={d},skip={s}" for d in range(1, 9) for s in (0, 1)} <= labels
    assert len(ex.plan("optim", "paper")) == 8  # 4 optimisers x 2 seeds
    with pytest.raises(DipError, match="unknown experiment"):
        ex.plan("nope", "quick")
    with pytest.raises(DipError, match="unknown profile"):
        ex.plan("table1", "huge")


def test_results_are_stored_and_resumed(tmp_path):
    store = ex.ResultStore(tmp_path)
    runs = _tiny_runs(2)
    records = ex.run_all(runs, store, device="cpu", progress=False)
    assert len(records) == 2
    for run, rec in zip(runs, records):
        assert store.path(run).exists()
        assert rec["config"] == json.loads(json.dumps(run.to_dict()))
        assert rec["summary"]["best_psnr"] > rec["history"]["psnr"][0] + 1  # it fits
        assert set(rec["images"]) >= {"final", "best", "observed"}
        assert store.image(run, "final").shape == (1, 48, 48)
        assert rec["environment"]["torch"]
    stamp = [store.path(r).stat().st_mtime_ns for r in runs]
    again = ex.run_all(runs, store, device="cpu", compute=False, progress=False)  # nothing computed
    assert [store.path(r).stat().st_mtime_ns for r in runs] == stamp
    assert again == records
    assert not list(tmp_path.rglob("*.tmp"))


def test_budget_keeps_finished_runs_and_reports_the_rest(tmp_path):
    store = ex.ResultStore(tmp_path)
    runs = _tiny_runs(3)
    ex.run_all(runs[:1], store, device="cpu", progress=False)
    ex.run_all(runs, store, device="cpu", budget_seconds=0, progress=False)
    assert [store.exists(r) for r in runs] == [True, False, False]
    with pytest.raises(DipError, match="2 of 3 runs have no stored result"):
        ex.run_all(runs, store, compute=False)


def test_problems_are_deterministic():
    run = _tiny_runs(1)[0]
    (a, ma), (b, mb) = ex.load_problem(run), ex.load_problem(run)
    assert a.shape == (1, 48, 48) and ma.shape == (1, 48, 48)
    np.testing.assert_array_equal(ma, mb)
    assert abs(ma.mean() - 0.5) < 0.1


def test_batched_runs_match_separate_runs(tmp_path):
    """The GPU path (K problems in one grouped pass) stores what separate runs store, here on CPU.

    oneDNN rounds grouped and plain convolutions differently in the last bit, and a fit amplifies
    that; without it the two paths agree exactly."""
    import torch

    runs = _tiny_runs(2)
    with torch.backends.mkldnn.flags(enabled=False):
        one = ex.run_all(runs, ex.ResultStore(tmp_path / "one"), device="cpu", batch=1, progress=False)
        two = ex.run_all(runs, ex.ResultStore(tmp_path / "two"), device="cpu", batch=2, progress=False)
    assert all(r.get("batched") == 2 for r in two) and not any("batched" in r for r in one)
    for a, b in zip(one, two):
        assert a["run_id"] == b["run_id"]
        assert a["history"]["iteration"] == b["history"]["iteration"]
        np.testing.assert_allclose(a["history"]["loss"], b["history"]["loss"], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(a["history"]["psnr"], b["history"]["psnr"], rtol=1e-5)
        assert abs(a["summary"]["final_psnr"] - b["summary"]["final_psnr"]) < 1e-3
        assert a["eswmv"]["iteration"] == b["eswmv"]["iteration"]
