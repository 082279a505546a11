"""Resumable fits: a fit killed with SIGKILL continues from its saved state, bit-identically on a CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from dip_lib.core.device import cpu_has_native_bf16
from dip_lib.core.drops import DropRecorder
from dip_lib.core.masks import bernoulli_mask
from dip_lib.core.presets import get_preset
from dip_lib.core.resume import SavedState
from dip_lib.core.solver import fit
from dip_lib.core.stopping import ESWMV

REPO = Path(__file__).resolve().parents[1]
NET = dict(channels_down=(8,) * 3, channels_up=(8,) * 3, channels_skip=(4,) * 3)
# the report's CPU numerics, and the bf16 ones of the paper-scale CPU runs where the CPU has bf16
NUMERICS = [dict(adam_impl="fused", precision="fp32", threads=1)]
if cpu_has_native_bf16():
    NUMERICS.append(dict(adam_impl="fused", precision="bf16", channels_last=True, threads=1))


class KillAt:
    """A callback that kills its own process with SIGKILL at one iteration (no cleanup can run)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_iteration(self, it: int, out) -> None:
        if it == self.at:
            os.kill(os.getpid(), signal.SIGKILL)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def problem(numerics: dict, kill_at: int = -1, guard_drop_db: float = 5.0):
    """A 32 px Bernoulli problem with the table1-paper recipe (input noise on), 60 iterations."""
    img = np.random.default_rng(0).random((1, 32, 32), dtype=np.float32)
    mask = bernoulli_mask((32, 32), 0.5, seed=1)
    net, z, cfg = get_preset("table1-paper").setup(
        img.shape, seed=3, iterations=60, net=NET, log_every=5, progress=False, device="cpu", **numerics
    )
    callbacks = [ESWMV(5, 15, stop=False), DropRecorder(threshold_db=0.0), KillAt(kill_at)]
    return net, z, img, mask, cfg, callbacks


def run(numerics: dict, state: Path | None = None, kill_at: int = -1, every_s: float = 1e-9):
    net, z, img, mask, cfg, callbacks = problem(numerics, kill_at)
    resume = SavedState(state, "key", every_s=every_s) if state is not None else None
    return fit(net, z, img * mask, mask, cfg, ground_truth=img, callbacks=callbacks, resume=resume), callbacks


def same(a, ca, b, cb) -> None:
    ha, hb = a.history.to_dict(), b.history.to_dict()
    ha.pop("elapsed"), hb.pop("elapsed")
    assert ha == hb
    for name in ("final", "best", "ema"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert (a.best_psnr, a.best_iteration, a.guard_restores) == (b.best_psnr, b.best_iteration, b.guard_restores)
    assert ca[0].variances == cb[0].variances and ca[0].best_iteration == cb[0].best_iteration
    assert np.array_equal(ca[0].best_output, cb[0].best_output)
    da, db = ca[1].result(), cb[1].result()
    assert [(d.start_iteration, d.to_psnr) for d in da] == [(d.start_iteration, d.to_psnr) for d in db]
    assert all(np.array_equal(x.output, y.output) for x, y in zip(da, db))


@pytest.mark.parametrize("numerics", NUMERICS, ids=lambda n: n["precision"])
def test_a_killed_fit_resumes_bit_identically(tmp_path, numerics):
    state = tmp_path / "fit.pt"
    script = textwrap.dedent(
        f"""
        import sys, torch
        sys.path.insert(0, {str(REPO / "tests")!r})
        torch.set_num_threads(1)
        from test_resume import run
        run({numerics!r}, state=__import__("pathlib").Path({str(state)!r}), kill_at=37)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    saved = torch.load(state, weights_only=True)
    assert saved["problem"]["it"] == 37  # saved after iteration 36, killed during iteration 37
    resumed, cb = run(numerics, state=state)
    whole, cw = run(numerics)
    same(resumed, cb, whole, cw)
    assert resumed.iterations_run == 60


def test_a_foreign_or_broken_state_is_discarded_not_used(tmp_path, caplog):
    numerics = NUMERICS[0]
    state = tmp_path / "fit.pt"
    run(numerics, state=state, every_s=1e-9)
    SavedState(state, "another fit").save(torch.load(state, weights_only=True))  # same content, other key
    whole, cw = run(numerics)
    resumed, cb = run(numerics, state=state, every_s=1e9)
    assert "belongs to another fit" in caplog.text and not state.exists()
    same(resumed, cb, whole, cw)
    state.write_bytes(b"not a state")
    resumed, cb = run(numerics, state=state, every_s=1e9)
    assert "cannot be read" in caplog.text and not state.exists()
    same(resumed, cb, whole, cw)


def test_an_unwritable_state_folder_does_not_stop_the_fit(tmp_path, caplog):
    (tmp_path / "file").write_text("")
    result, _ = run(NUMERICS[0], state=tmp_path / "file" / "fit.pt")
    assert result.iterations_run == 60 and "cannot save the fit's state" in caplog.text


def test_reproduce_resumes_a_killed_run_and_removes_its_state(tmp_path, data_files):
    """``run_all`` on a store: a run killed after saving its state is resumed by the next call and
    gives the record an uninterrupted run gives; the state goes once the run is stored."""
    from dip_lib.report.registry import plan
    from dip_lib.report.runner import run_all
    from dip_lib.report.store import ResultStore

    run_ = plan("table1", "smoke", seeds=(0,))[0]
    script = textwrap.dedent(
        f"""
        import os, signal, torch
        torch.set_num_threads(1)
        import dip_lib.core.resume as r
        from dip_lib.report.runner import run_all
        from dip_lib.report.registry import plan
        from dip_lib.report.store import ResultStore
        r.EVERY_S = 1e-9
        save = r.SavedState.save
        def save_then_die(self, state):
            save(self, state)
            if state["problem"]["it"] == 23:
                os.kill(os.getpid(), signal.SIGKILL)
        r.SavedState.save = save_then_die
        run_all([plan("table1", "smoke", seeds=(0,))[0]], ResultStore({str(tmp_path / "a")!r}), progress=False)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    store = ResultStore(tmp_path / "a")
    assert store.resume_state(run_).exists() and not store.exists(run_)
    run_all([run_], store, progress=False)
    assert not store.resume_state(run_).exists()
    run_all([run_], ResultStore(tmp_path / "b"), progress=False)
    a, b = (json.loads(ResultStore(tmp_path / k).path(run_).read_text()) for k in "ab")
    for rec in (a, b):
        for key in ("wall_time", "ms_per_iteration"):
            rec["summary"].pop(key)
        rec["history"].pop("elapsed")
    assert a["summary"] == b["summary"] and a["history"] == b["history"] and a["eswmv"] == b["eswmv"]
    assert a["drops"] == b["drops"]


def test_every_run_that_outlasts_a_save_interval_saves_its_state_however_short_its_estimate(
    tmp_path, monkeypatch, data_files
):
    """The FLOP prior is several times too fast on a CPU (a 29-minute library fit was estimated at 6), so
    resumability does not hang on it: a run with a resume folder saves once a save interval has passed."""
    import dip_lib.core.resume
    from dip_lib.report import compute
    from dip_lib.report.registry import plan

    run_ = plan("table1", "smoke", seeds=(0,))[0]
    assert compute.prior_seconds(run_) < 60
    monkeypatch.setattr(dip_lib.core.resume, "EVERY_S", 1e-9)
    compute.execute(run_, tmp_path)
    assert (tmp_path / f"{run_.run_id}.pt").exists()
