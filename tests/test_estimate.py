"""The cost estimator: memory and time models, the memory refusal and --max-minutes (no timed
assertions: rates are synthetic or only checked for sanity)."""

from __future__ import annotations

import itertools
import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from dip_lib.cli import main
from dip_lib.core import estimate as est
from dip_lib.core.errors import DipError
from dip_lib.core.inputs import make_input
from dip_lib.core.nets import SkipNet
from dip_lib.core.presets import get_preset
from dip_lib.core.solver import FitConfig

TEXT = replace(get_preset("text").net, out_channels=3)
T1 = replace(get_preset("table1-paper").net, out_channels=3)
TINY = replace(T1, channels_down=(8,) * 5, channels_up=(8,) * 5)
RATE = est.Rate(flops=100e9, warmup_s=1.0, shape=(128, 128))  # a made-up machine: 100 GFLOP/s


def test_activation_count_matches_a_real_forward():
    """The meta-device count equals the element count of a real CPU forward at the same size."""
    side = 2**TINY.depth * 8
    total = 0

    def hook(_m, _i, out):
        nonlocal total
        total += out.numel()

    net = SkipNet(TINY)
    for m in net.modules():
        if not list(m.children()):
            m.register_forward_hook(hook)
    with torch.no_grad():
        net(torch.zeros(1, TINY.in_channels, side, side))
    assert est.activation_elements_per_pixel(TINY) == pytest.approx(total / side**2)
    assert est.param_count(TEXT) == get_preset("text").param_count(3)


def test_memory_and_time_grow_with_size():
    sizes = [64, 128, 256, 512, 1024, 2048]
    for cfg in (TEXT, T1):
        mem = [est.peak_memory_bytes(cfg, s, s) for s in sizes]
        gflop = [est.iteration_gflop(cfg, s, s) for s in sizes]
        secs = [est.estimate(cfg, s, s, 100, FitConfig(), RATE).seconds for s in sizes]
        for seq in (mem, gflop, secs):
            assert all(b > a for a, b in itertools.pairwise(seq))
        # activations dominate at large sizes: 4x the pixels, close to 4x the memory
        assert 3.5 < (mem[-1] - est.BASE_BYTES) / (mem[-2] - est.BASE_BYTES) < 4.01
    assert est.peak_memory_bytes(TEXT, 512, 512, "checkpointing") < est.peak_memory_bytes(TEXT, 512, 512, "fp32")
    assert est.peak_memory_bytes(TEXT, 512, 512) > est.peak_memory_bytes(T1, 512, 512)  # 128 vs 4 skip channels


def test_the_time_model_is_flops_over_the_rate():
    e = est.estimate(T1, 128, 128, 1000, FitConfig(), RATE)
    assert e.gflop_per_iteration == pytest.approx(29.0, rel=0.03)  # the issue's ~29 GFLOP at 128 px
    assert e.seconds == pytest.approx(1000 * e.gflop_per_iteration / 100 + 1.0)
    assert e.mode == "fp32" and est.estimate(T1, 128, 128, 1, FitConfig(precision="bf16"), RATE).mode == "bf16"


def test_memory_refusal_for_a_3000x2000_photo_allocates_nothing():
    cfg = FitConfig()
    with pytest.raises(DipError) as err:
        est.check_memory(TEXT, 2000, 3000, cfg, available=8 * 2**30)
    msg = str(err.value)
    assert "\n" not in msg
    m = re.fullmatch(
        r"a 3000x2000 fit needs about ([\d.]+) GB of memory but ([\d.]+) GB is available: --size (\d+) fits "
        r"\(about ([\d.]+) GB\); --checkpointing would need about ([\d.]+) GB.*",
        msg,
    )
    assert m, msg
    need, avail, side, at_side, ckpt = float(m[1]), float(m[2]), int(m[3]), float(m[4]), float(m[5])
    assert need > avail >= at_side and ckpt < need and side % 32 == 0 and side < 3000
    h, w = est.scaled_shape(2000, 3000, side + 32)
    assert est.peak_memory_bytes(TEXT, h, w) > 8 * 2**30 + est.BASE_BYTES  # the next size up would not fit
    assert est.check_memory(TEXT, 256, 256, cfg, available=8 * 2**30) == est.peak_memory_bytes(TEXT, 256, 256)


def test_describe_and_the_largest_size_within_a_time():
    e = est.Estimate(512, 512, 6001, 460.0, 1.3, 7800.0, int(3.1 * 2**30), "fp32")
    assert (
        est.describe(e, "cpu", (256, 1500.0))
        == "about 2 h 10 min and 3.1 GB on this CPU (6001 iterations); --size 256 would take about 25 min"
    )
    assert est.fmt_seconds(42) == "42 s" and est.fmt_bytes(300 * 2**20) == "300 MB"
    side = est.largest_side_within(T1, 1000, 1500, 1000, RATE, 20 * 60)
    inside = est.estimate(T1, *est.scaled_shape(1000, 1500, side), 1000, FitConfig(), RATE).seconds
    nxt = est.CANDIDATE_SIDES[est.CANDIDATE_SIDES.index(side) + 1]
    above = est.estimate(T1, *est.scaled_shape(1000, 1500, nxt), 1000, FitConfig(), RATE).seconds
    assert inside <= 20 * 60 < above
    assert est.largest_side_within(T1, 1000, 1500, 10**9, RATE, 60) is None


def test_calibration_shape_and_a_real_calibration():
    h, w = est.calibration_shape(TEXT, 2000, 3000)
    assert h / w == pytest.approx(2 / 3, rel=0.02) and est.iteration_gflop(TEXT, h, w) <= est.CALIBRATION_GFLOP * 1.05
    assert est.calibration_shape(TINY, 64, 64) == (64, 64)  # cheap enough: calibrated at the target size
    rate = est.calibrate_time(
        TINY, 48, 48, FitConfig(threads=1), lambda h, w: make_input("noise", TINY.in_channels, h, w, 0), iterations=2
    )
    assert rate.flops > 0 and rate.warmup_s >= 0 and rate.shape == (48, 48)


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (2000, 3000, 3), dtype=np.uint8)).save(path)
    return path


def test_cli_refuses_a_3000x2000_photo_in_one_line_before_any_fit(photo, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(est, "available_memory_bytes", lambda: 8 * 2**30)
    monkeypatch.setattr(est, "calibrate_time", lambda *a, **k: pytest.fail("calibrated before refusing"))
    assert main(["inpaint", str(photo), "--text", "Hello world", "-o", str(tmp_path / "out.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: a 3000x2000 fit needs about ")
    assert "--size " in err and "--checkpointing" in err and "Traceback" not in err
    assert not (tmp_path / "out.png").exists()


def test_cli_prints_the_estimate_and_max_minutes_picks_a_size(tmp_path, monkeypatch, capsys):
    path = tmp_path / "small.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (96, 144, 3), dtype=np.uint8)).save(path)
    out = tmp_path / "out.png"
    args = ["inpaint", str(path), "--bernoulli", "0.5", "--preset", "table1-paper", "--iterations", "2", "-o", str(out)]
    assert main([*args, "--no-budget"]) == 0
    printed = capsys.readouterr().out
    # the load note appears when other jobs share the CPU
    line = r"^estimate: about \d+ s and \d+ MB on this CPU \(2 iterations\)( \(other jobs load the CPU now: .*\))?$"
    assert re.search(line, printed, re.MULTILINE), printed
    # a synthetic rate: at 0.4 GFLOP/s the 144 px fit takes 121 s and the 128 px one 96 s, so 100 s
    # (1 2/3 min) needs a smaller size
    monkeypatch.setattr(est, "calibrate_time", lambda *a, **k: est.Rate(flops=0.4e9, warmup_s=0.0, shape=(64, 96)))
    assert main([*args, "--max-minutes", str(100 / 60)]) == 0
    m = re.search(
        r"^--max-minutes 1.66667: chose --size (\d+) \((\d+)x(\d+)\), about", capsys.readouterr().out, re.MULTILINE
    )
    assert m and int(m[1]) < 144 and int(m[2]) / int(m[3]) == pytest.approx(1.5, rel=0.05)
    assert main([*args, "--max-minutes", "0"]) == 2
    assert "--max-minutes must be positive" in capsys.readouterr().err
