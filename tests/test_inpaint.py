"""``inpaint`` keeps every fit and every budget: refusals before the fit, fallbacks after it, Ctrl-C,
fixed threads and a history that says how the numbers were made."""

from __future__ import annotations

import errno
import json
import re
import time

import numpy as np
import pytest
import torch
from PIL import Image

from dip_lib import inpaint
from dip_lib.cli import main
from dip_lib.core import estimate as est
from dip_lib.core import imageio, solver
from dip_lib.core.config import CheckState, FitConfig
from dip_lib.core.nets import SkipConfig, SkipNet

SLOW = est.Rate(flops=100e9, warmup_s=0.0, shape=(64, 64))  # a made-up machine: 100 GFLOP/s


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)).save(path)
    return path


def no_fit(*a, **k):
    pytest.fail("a fit started")


def test_max_minutes_never_starts_a_fit_beyond_its_budget_and_names_what_fits(photo, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(est, "calibrate_time", lambda *a, **k: SLOW)
    monkeypatch.setattr(solver, "fit", no_fit)
    out = tmp_path / "out.png"
    assert main(["inpaint", str(photo), "--text", "Hello world", "--max-minutes", "3", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: no size of preset 'text' fits in 3 min")
    # what would fit: the smallest size's time, the fast preset at some size, or fewer iterations
    assert re.search(r"--size 128 would take about \d+ (h|min)", err), err
    assert "--preset fast --size" in err and re.search(r"--size 128 --iterations \d+ fits", err), err
    assert not out.exists()


def test_max_minutes_keeps_the_chosen_fit_within_the_budget(photo, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(est, "calibrate_time", lambda *a, **k: SLOW)
    monkeypatch.setattr(solver, "fit", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    args = ["inpaint", str(photo), "--bernoulli", "0.5", "--preset", "fast", "--max-minutes", "5"]
    assert main([*args, "-o", str(tmp_path / "o.png")]) == 130  # the fake fit is interrupted at once
    m = re.search(r"chose --size (\d+) \(\d+x\d+\), about (?:(\d+) min|(\d+) s)", capsys.readouterr().out)
    assert m and int(m[1]) < 512 and (m[2] is None or int(m[2]) <= 5)


def test_a_long_fit_without_budget_names_the_largest_size_within_15_minutes(photo, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(est, "calibrate_time", lambda *a, **k: est.Rate(flops=2000e9, warmup_s=0.0, shape=(64, 64)))
    monkeypatch.setattr(solver, "fit", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    args = ["inpaint", str(photo), "--bernoulli", "0.5", "--preset", "table1-paper", "--no-budget"]
    main([*args, "-o", str(tmp_path / "o.png")])
    printed = capsys.readouterr().out
    m = re.search(r"^estimate: about .*; --size (\d+) would take about (\d+) min", printed, re.MULTILINE)
    assert m and int(m[1]) < 512 and int(m[2]) <= 15, printed
    # with no size under 15 min it says so, with the smallest size's time
    monkeypatch.setattr(est, "calibrate_time", lambda *a, **k: SLOW)
    main([*args, "-o", str(tmp_path / "o.png")])
    assert re.search(r"no smaller --size fits in 15 min: --size 128 would take about", capsys.readouterr().out)


def test_a_huge_size_is_refused_before_anything_is_resized(small, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(est, "available_memory_bytes", lambda: 8 * 2**30)
    monkeypatch.setattr(imageio, "resize_longer_side", lambda *a: pytest.fail("resized before the memory check"))
    monkeypatch.setattr(est, "calibrate_time", lambda *a, **k: pytest.fail("calibrated before the memory check"))
    assert main(["inpaint", str(small), "--bernoulli", "0.5", "--size", "30000", "-o", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: a 30000x30000 fit needs about ")


def test_memory_limits_count_the_address_space_limit(monkeypatch):
    import resource

    monkeypatch.setattr(resource, "getrlimit", lambda which: (3 * 2**30, resource.RLIM_INFINITY))
    monkeypatch.setattr(est, "_read_kib", lambda path, key: 2**30 if key == "VmSize:" else 20 * 2**30)
    assert est.available_memory_bytes() == 2**30  # (3 GB limit - 1 GB mapped) / 2


def test_full_disk_is_refused_before_the_fit(small, tmp_path, monkeypatch, capsys):
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=10_000))
    monkeypatch.setattr(solver, "fit", no_fit)
    args = ["inpaint", str(small), "--bernoulli", "0.5", "--preset", "table1-paper", "--iterations", "2"]
    assert main([*args, "-o", str(tmp_path / "o.png"), "--history", str(tmp_path / "h.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the outputs need about" in err and "is free" in err
    assert list(tmp_path.glob("o*")) == [] and not (tmp_path / "h.json").exists()


def test_a_write_that_fails_after_the_fit_goes_to_a_fallback_named_in_one_line(small, tmp_path, monkeypatch, capsys):
    real = imageio.atomic_write_bytes
    out = tmp_path / "out.png"

    def full_disk(path, data):
        if path == out:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(imageio, "atomic_write_bytes", full_disk)
    spare = tmp_path / "spare"
    spare.mkdir()
    monkeypatch.setattr(inpaint.tempfile, "gettempdir", lambda: str(spare))
    args = ["inpaint", str(small), "--bernoulli", "0.5", "--preset", "table1-paper", "--iterations", "2"]
    assert main([*args, "-o", str(out), "--masked", str(tmp_path / "m.png")]) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error")]
    assert len(err) == 1 and "No space left on device" in err[0] and str(spare) in err[0]
    kept = list(spare.glob("dip-*-out.png"))
    assert len(kept) == 1 and imageio.load_image(kept[0]).shape == (3, 64, 64)
    assert (tmp_path / "m.png").exists() and not out.exists()


def test_ctrl_c_writes_the_best_output_so_far_as_partial_and_exits_130(small, tmp_path, monkeypatch, capsys):
    def interrupted_fit(net, z, observed, mask, cfg, ground_truth=None, callbacks=(), resume=None):
        best = torch.full((1, 3, 64, 64), 0.25)
        for it, psnr, value in ((10, 20.0, 0.25), (20, 18.0, 0.75)):  # the best check is the first
            state = CheckState(
                iteration=it,
                loss=0.1,
                psnr=psnr,
                psnr_observed=psnr,
                elapsed=1.0,
                output=torch.full_like(best, value),
                psnr_clean=psnr,
                clean_output=torch.full_like(best, value),
            )
            for cb in callbacks:
                cb.on_check(state)
        raise KeyboardInterrupt

    monkeypatch.setattr(solver, "fit", interrupted_fit)
    out = tmp_path / "out.png"
    args = ["inpaint", str(small), "--bernoulli", "0.5", "--preset", "table1-paper", "--no-budget"]
    assert main([*args, "-o", str(out)]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    partial = tmp_path / "out.partial-10.png"  # named by iteration: never replaces one that got further
    assert len(err) == 1 and "iteration 10" in err[0] and str(partial) in err[0]
    assert np.allclose(imageio.load_image(partial), 0.25, atol=1 / 255) and not out.exists()


def test_threads_are_fixed_and_the_history_records_how_the_numbers_were_made(small, tmp_path, monkeypatch):
    from dip_lib.core import device

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(device, "other_cpu_load", lambda: 0.0)
    assert device.default_threads() == len(__import__("os").sched_getaffinity(0))
    monkeypatch.setattr(device, "other_cpu_load", lambda: 50.0)  # a loaded machine: one thread, no collapse
    assert device.default_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert device.default_threads() == 1
    h = tmp_path / "h.json"
    args = ["inpaint", str(small), "--bernoulli", "0.5", "--preset", "table1-paper", "--iterations", "2", "--seed", "3"]
    assert main([*args, "-o", str(tmp_path / "o.png"), "--history", str(h)]) == 0
    rec = json.loads(h.read_text())
    assert rec["seed"] == 3 and rec["threads"] == 1 and rec["config"]["threads"] == 1
    assert rec["config"]["seed"] == 3 and rec["config"]["precision"] in ("bf16", "fp32")
    assert rec["net"]["out_channels"] == 3 and rec["mask"]["bernoulli"] == 0.5
    assert {"torch", "numpy", "scikit-image", "pillow", "dip-inpainting"} <= set(rec["environment"])
    assert main([*args, "--threads", "2", "-o", str(tmp_path / "o2.png"), "--history", str(h)]) == 0
    assert json.loads(h.read_text())["threads"] == 2


def test_the_rate_counts_cpu_time_so_a_busy_machine_does_not_change_the_estimate(monkeypatch):
    """A neighbour that takes half of every step's wall time: the CPU-time step stays, the load is named."""
    real = time.perf_counter
    start = real()
    monkeypatch.setattr(time, "process_time", lambda: (real() - start) / 2)
    cfg = SkipConfig(in_channels=4, out_channels=3, channels_down=(8,), channels_up=(8,), channels_skip=(4,))
    z = torch.rand(1, 4, 32, 32)
    per, _, busy = est.measure_rate(SkipNet(cfg), z, FitConfig(threads=1, progress=False), iterations=4)
    assert busy == pytest.approx(2.0, rel=0.05)
    e = est.Estimate(32, 32, 100, 1.0, per, 100 * per, 2**20, "fp32", busy=busy)
    assert "other jobs load the CPU now: at this load about" in est.describe(e, "cpu")


def test_resume_dir_continues_an_interrupted_fit_bit_identically(small, tmp_path, monkeypatch, capsys):
    from dip_lib.core import resume

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(resume, "EVERY_S", 1e-6)  # save after every iteration
    args = ["inpaint", str(small), "--bernoulli", "0.5", "--preset", "table1-seed", "--iterations", "40"]
    assert main([*args, "-o", str(tmp_path / "whole.png"), "--history", str(tmp_path / "whole.json")]) == 0

    states = tmp_path / "states"
    real = inpaint.KeepBest.on_check

    def stop_at_20(self, state):
        real(self, state)
        if state.iteration >= 20:
            raise KeyboardInterrupt

    monkeypatch.setattr(inpaint.KeepBest, "on_check", stop_at_20)
    out, hist = tmp_path / "out.png", tmp_path / "out.json"
    cut = [*args, "-o", str(out), "--history", str(hist), "--resume-dir", str(states)]
    assert main(cut) == 130
    assert "the same command continues it from" in capsys.readouterr().err
    assert len(list(states.glob("inpaint-*.pt"))) == 1
    monkeypatch.setattr(inpaint.KeepBest, "on_check", real)
    assert main(cut) == 0
    assert "continuing the fit saved in" in capsys.readouterr().out
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(tmp_path / "whole.png")))
    a, b = json.loads(hist.read_text())["history"], json.loads((tmp_path / "whole.json").read_text())["history"]
    assert a["loss"] == b["loss"] and a["psnr_clean"] == b["psnr_clean"]
    assert list(states.glob("*.pt")) == []  # removed once the outputs are written
    # another command (here another seed) never continues from this one's state
    assert inpaint.resume_key(*_key_args(small, seed=0)) != inpaint.resume_key(*_key_args(small, seed=1))


def _key_args(path, seed):
    import argparse

    from dip_lib.core.presets import get_preset

    p = get_preset("table1-seed")
    ns = argparse.Namespace(
        image=path, mask=None, bernoulli=0.5, text=None, per_channel=False, invert_mask=False, crop=False, stop="none"
    )
    return ns, p.fit_config(seed=seed), p.net_config(3), (3, 64, 64)


def test_an_address_space_limit_is_a_one_line_refusal(photo, tmp_path):
    """ulimit -v below what a 512 px text fit needs: refused before the fit, naming a size that fits."""
    import resource
    import subprocess
    import sys

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))

    out = tmp_path / "o.png"
    proc = subprocess.run(
        [sys.executable, "-m", "dip_lib", "inpaint", str(photo), "--text", "Hi", "--iterations", "2", "-o", str(out)],
        capture_output=True,
        text=True,
        preexec_fn=limit,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "fit needs about" in proc.stderr and "--size " in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()
