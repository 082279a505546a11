"""``inpaint`` never overwrites its inputs, refuses what cannot work before any work, keeps the
progress on Ctrl-C and SIGTERM, and takes masks as users make them (issues 34 and 35)."""

from __future__ import annotations

import json
import os
import re
import signal
import warnings

import numpy as np
import pytest
from PIL import Image

from dip_lib import inpaint
from dip_lib.cli import build_parser, main
from dip_lib.core import device, solver
from dip_lib.core import estimate as est

FAST = ["--preset", "table1-paper", "--iterations", "2"]


def no_work(*a, **k):
    pytest.fail("work started")


@pytest.fixture
def mask_file(tmp_path):
    m = np.full((64, 64), 255, np.uint8)
    m[20:30, 10:50] = 0
    path = tmp_path / "mask.png"
    Image.fromarray(m).save(path)
    return path


def _refused(capsys, argv, monkeypatch) -> str:
    monkeypatch.setattr(est, "calibrate_time", no_work)
    monkeypatch.setattr(solver, "fit", no_work)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err


# ---------------------------------------------------------------- no output lands on an input


def test_no_output_option_can_overwrite_the_image_or_the_mask(small, mask_file, tmp_path, monkeypatch, capsys):
    before = {p: p.read_bytes() for p in (small, mask_file)}
    m = ["inpaint", str(small), "--mask", str(mask_file)]
    for argv in (
        [*m, "--masked", str(mask_file), "-o", str(tmp_path / "o.png")],
        [*m, "-o", str(mask_file)],
        [*m, "--history", str(tmp_path / "." / "mask.png"), "-o", str(tmp_path / "o.png")],
        ["inpaint", str(small), "--bernoulli", "0.5", "-o", str(small)],
    ):
        assert "would be overwritten" in _refused(capsys, argv, monkeypatch)
    # the same file under another name: a hard link, and a symbolic link given as the input
    os.link(mask_file, tmp_path / "hard.png")
    os.symlink(small, tmp_path / "link.png")
    assert "is the mask" in _refused(capsys, [*m, "-o", str(tmp_path / "hard.png")], monkeypatch)
    argv = ["inpaint", str(tmp_path / "link.png"), "--bernoulli", "0.5", "-o", str(small)]
    assert "is the input image" in _refused(capsys, argv, monkeypatch)
    assert {p: p.read_bytes() for p in (small, mask_file)} == before


def test_an_input_named_like_a_partial_output_or_a_saved_state_is_refused(small, tmp_path, monkeypatch, capsys):
    partial = tmp_path / "out.partial.png"
    partial.write_bytes(small.read_bytes())
    argv = ["inpaint", str(partial), "--bernoulli", "0.5", "-o", str(tmp_path / "out.png")]
    assert "partial output" in _refused(capsys, argv, monkeypatch)
    state = tmp_path / "inpaint-0123.pt"
    state.write_bytes(b"x")
    argv = ["inpaint", str(small), "--mask", str(state), "-o", str(tmp_path / "o.png"), "--resume-dir", str(tmp_path)]
    assert "saved state" in _refused(capsys, argv, monkeypatch)


# ---------------------------------------------------------------- limits before work


def test_threads_are_capped_at_the_usable_cores_and_recorded(small, tmp_path, capsys):
    cores = device.usable_cores()
    h = tmp_path / "h.json"
    assert (
        main(
            [
                "inpaint",
                str(small),
                "--bernoulli",
                "0.5",
                *FAST,
                "--threads",
                "999",
                "-o",
                str(tmp_path / "o.png"),
                "--history",
                str(h),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert f"--threads 999: this process may use {cores} cores; using {cores}" in out
    assert json.loads(h.read_text())["threads"] == cores
    assert re.search(rf", {cores} threads? in ", out) and ("1 threads" not in out)


def test_a_huge_iteration_count_is_refused_unless_no_budget(small, tmp_path, monkeypatch, capsys):
    slow = est.Rate(flops=100e9, warmup_s=0.0, shape=(64, 64))
    monkeypatch.setattr(est, "calibrate_time", lambda *a, **k: slow)
    monkeypatch.setattr(solver, "fit", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    argv = ["inpaint", str(small), "--bernoulli", "0.5", "--iterations", "1000000000000", "-o", str(tmp_path / "o.png")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "default budget of 10 min" in err and "--no-budget" in err
    assert main([*argv, "--size", "64"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "more than 24 h" in err and "--no-budget" in err
    assert main([*argv, "--no-budget"]) == 130  # asked for: it starts (the fake fit is interrupted at once)


def test_without_size_the_default_budget_chooses_the_size_in_one_line(tmp_path, monkeypatch, capsys):
    path = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 450, 3), dtype=np.uint8)).save(path)
    monkeypatch.setattr(est, "calibrate_time", lambda *a, **k: est.Rate(flops=2000e9, warmup_s=0.0, shape=(64, 64)))
    monkeypatch.setattr(solver, "fit", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    argv = ["inpaint", str(path), "--bernoulli", "0.5", "--preset", "table1-paper", "-o", str(tmp_path / "o.png")]
    assert main(argv) == 130
    m = re.search(
        r"^budget 10 min \(default\): chose --size (\d+) \(\d+x\d+\), about (\d+) (s|min)",
        capsys.readouterr().out,
        re.M,
    )
    assert m and int(m[1]) < 450 and (m[3] == "s" or int(m[2]) <= 10)


def test_the_free_space_refusal_names_sizes_in_their_unit(small, tmp_path, monkeypatch, capsys):
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=4096))
    monkeypatch.setattr(solver, "fit", no_work)
    assert main(["inpaint", str(small), "--bernoulli", "0.5", *FAST, "-o", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err
    assert re.search(r"need about \d+ KB in .* but 4 KB is free", err), err
    assert est.fmt_bytes(1.5 * 2**20) == "1.5 MB" and est.fmt_bytes(300 * 2**20) == "300 MB"


@pytest.mark.parametrize("how", [["--text", "\u200b"], ["--bernoulli", "1e-9"]], ids=["zero-width-text", "tiny-p"])
def test_a_mask_that_hides_nothing_is_refused_in_one_line(small, tmp_path, monkeypatch, capsys, how):
    monkeypatch.setattr(solver, "fit", no_work)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy RuntimeWarning (an "inf dB" PSNR) either
        assert main(["inpaint", str(small), *how, *FAST, "-o", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "hides no pixel" in err


# ---------------------------------------------------------------- signals and resume


def _signal_at(monkeypatch, signum: int, iteration: int) -> None:
    real = inpaint.KeepBest.on_check

    def on_check(self, state):
        real(self, state)
        if state.iteration == iteration:
            signal.raise_signal(signum)

    monkeypatch.setattr(inpaint.KeepBest, "on_check", on_check)


def test_sigterm_writes_the_partial_output_and_exits_143(small, tmp_path, monkeypatch, capsys):
    _signal_at(monkeypatch, signal.SIGTERM, 10)
    out = tmp_path / "out.png"
    argv = ["inpaint", str(small), "--bernoulli", "0.5", "--preset", "table1-paper", "--iterations", "40"]
    assert main([*argv, "-o", str(out)]) == 143
    err = capsys.readouterr().err
    assert "interrupted; wrote the best output so far" in err and (tmp_path / "out.partial-10.png").exists()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # restored


def test_ctrl_c_saves_the_state_at_once_and_a_rerun_keeps_the_partial_that_got_further(
    small, tmp_path, monkeypatch, capsys
):
    states = tmp_path / "states"
    out = tmp_path / "out.png"
    argv = ["inpaint", str(small), "--bernoulli", "0.5", "--preset", "table1-paper", "--iterations", "60"]
    argv += ["-o", str(out), "--resume-dir", str(states)]
    _signal_at(monkeypatch, signal.SIGINT, 30)  # long before the first 5-minute save
    assert main(argv) == 130
    captured = capsys.readouterr()
    assert "saving the fit's state" in captured.out and "the same command continues it from" in captured.err
    assert len(list(states.glob("inpaint-*.pt"))) == 1 and (tmp_path / "out.partial-30.png").exists()
    _signal_at(monkeypatch, signal.SIGINT, 50)
    assert main(argv) == 130
    assert "continuing the fit saved in" in capsys.readouterr().out
    assert (tmp_path / "out.partial-30.png").exists() and (tmp_path / "out.partial-50.png").exists()


# ---------------------------------------------------------------- masks as users make them


def test_a_mask_is_resized_with_its_image_so_no_stroke_survives(tmp_path, monkeypatch, capsys):
    """White strokes painted on a grey photo, the mask marking them: after --size no known pixel holds stroke colour."""
    img = np.full((200, 300, 3), 100, np.uint8)
    mask = np.full((200, 300), 255, np.uint8)
    for y in (40, 90, 150):
        img[y : y + 3, 20:280] = 255
        mask[y : y + 3, 20:280] = 0
    Image.fromarray(img).save(tmp_path / "photo.png")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    seen = {}

    def capture(net, z, observed, mask, cfg, **k):
        seen["observed"], seen["mask"] = np.asarray(observed), np.asarray(mask)
        raise KeyboardInterrupt

    monkeypatch.setattr(solver, "fit", capture)
    for extra in (["--size", "100"], ["--size", "150", "--crop"], ["--max-minutes", "0.5"]):
        argv = ["inpaint", str(tmp_path / "photo.png"), "--mask", str(tmp_path / "mask.png"), *FAST, *extra]
        assert main([*argv, "-o", str(tmp_path / "o.png")]) == 130, capsys.readouterr().err
        known = seen["mask"][0] == 1
        assert seen["observed"].shape[1:] == seen["mask"].shape[1:]
        assert np.abs(seen["observed"][:, known] - 100 / 255).max() < 1 / 255  # no stroke colour among known pixels
        assert (~known).any() and known.mean() > 0.5


def test_an_inverted_looking_mask_is_named_and_invert_mask_fixes_it(small, tmp_path, capsys):
    m = np.zeros((64, 64), np.uint8)
    m[20:24, 8:56] = 255  # white strokes on black: 94% "missing"
    Image.fromarray(m).save(tmp_path / "strokes.png")
    argv = ["inpaint", str(small), "--mask", str(tmp_path / "strokes.png"), *FAST, "-o", str(tmp_path / "o.png")]
    assert main(argv) == 0
    captured = capsys.readouterr()
    warning = [ln for ln in captured.err.splitlines() if ln.startswith("warning")]
    assert len(warning) == 1 and "white = known" in warning[0] and "--invert-mask" in warning[0]
    assert re.search(r"known pixels: output vs masked input PSNR \d+\.\d+ dB", captured.out)
    assert main([*argv, "--invert-mask"]) == 0
    assert "warning" not in capsys.readouterr().err


# ---------------------------------------------------------------- help


def test_every_inpaint_option_has_help_and_the_defaults_show():
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["inpaint"]
    for action in sub._actions:
        assert action.help, action.option_strings or action.dest
    text = sub.format_help().split("options:", 1)[1]
    for opt in ("--preset", "--iterations", "--size", "--device", "--history", "--masked", "--seed"):
        block = re.search(rf"^  {opt} .*?(?=^  -|\Z)", text, re.S | re.M)
        assert block and "default" in block[0], opt


def test_the_report_hint_is_a_path_from_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    page = inpaint._report_page("06_cost_quality.html")
    assert (tmp_path / page).resolve() == (
        inpaint.Path(inpaint.__file__).parents[1] / "report/quick/06_cost_quality.html"
    )


def test_without_a_preset_the_fast_one_is_taken_when_text_fits_no_size_in_the_default_budget(
    small, tmp_path, monkeypatch, capsys
):
    """The README's plain example runs in minutes: the text recipe when it fits the default budget,
    the fast one when it does not; a preset the user named is refused instead."""
    seen = []

    def preflight(preset, shape, cfg, args):
        seen.append(preset.name)
        if preset.name == "text":
            raise inpaint.NoSizeFits("no size of preset 'text' fits")
        return shape[1:]

    monkeypatch.setattr(inpaint, "preflight", preflight)

    class Fitted(Exception):
        pass

    monkeypatch.setattr(solver, "fit", lambda *a, **k: (_ for _ in ()).throw(Fitted()))  # no real fit
    history = tmp_path / "h.json"
    args = ["inpaint", str(small), "--text", "Hi", "-o", str(tmp_path / "o.png"), "--history", str(history)]
    with pytest.raises(Fitted):  # what matters is the preset chosen before the fit
        main(args)
    assert seen == ["text", "fast"] and "the fast preset instead" in capsys.readouterr().out
    seen.clear()
    assert main([*args[:4], "--preset", "text", *args[4:]]) == 2 and seen == ["text"]
