"""The command line on bad and good inputs (subprocesses, as a user runs it), and strict image I/O."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from dip_lib.core.errors import DipError
from dip_lib.core.imageio import load_image, load_mask, pil_to_array

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def run_cli(repo_root: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dip_lib", *map(str, args)],
        cwd=repo_root,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Small input files shared by the tests of this module."""
    d = tmp_path_factory.mktemp("cli_inputs")
    rgb = data.astronaut()[::8, ::8][:48, :48]  # 48x48x3 uint8
    gray = data.camera()[100:148, 250:298]  # 48x48 uint8
    paths = {
        name: d / f"{name}.png"
        for name in ("rgb", "gray", "rgba", "small", "mask_other_size", "mask_gray", "not_image", "truncated")
    }
    Image.fromarray(rgb).save(paths["rgb"])
    Image.fromarray(gray).save(paths["gray"])
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)])).save(paths["rgba"])
    Image.fromarray(gray[:16, :16]).save(paths["small"])
    Image.fromarray(np.full((40, 40), 255, np.uint8)).save(paths["mask_other_size"])
    not_binary = np.full((48, 48), 255, np.uint8)
    not_binary[:10, :10] = 0
    not_binary[20, 3:10] = 128  # 7 pixels neither 0 nor 255
    Image.fromarray(not_binary).save(paths["mask_gray"])
    paths["not_image"].write_text("this is not an image\n")
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)  # incompressible
    Image.fromarray(noise).save(d / "full.png")
    whole = (d / "full.png").read_bytes()
    paths["truncated"].write_bytes(whole[: len(whole) // 2])
    paths["missing"] = d / "does_not_exist.png"
    paths["folder"] = d / "a_folder.png"
    paths["folder"].mkdir()
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(d / "mask_black.png")
    paths["mask_black"] = d / "mask_black.png"
    paths["symlink"] = d / "link.png"
    paths["symlink"].symlink_to(paths["gray"])
    return paths


BAD = {
    "missing file": (["{missing}", "--bernoulli", "0.5"], "file not found"),
    "not an image": (["{not_image}", "--bernoulli", "0.5"], "not an image"),
    "truncated png": (["{truncated}", "--bernoulli", "0.5"], "truncated or corrupt"),
    "mask of another size": (["{gray}", "--mask", "{mask_other_size}"], "40x40 but the image is 48x48"),
    "mask not binary": (["{gray}", "--mask", "{mask_gray}"], "not binary: 7 pixels are neither 0 nor 255"),
    "image too small": (["{small}", "--bernoulli", "0.5"], "needs at least 33x33"),
    "unknown preset": (["{gray}", "--bernoulli", "0.5", "--preset", "nope"], "unknown preset 'nope'"),
    "bernoulli 0": (["{gray}", "--bernoulli", "0"], "--bernoulli must be in (0, 1)"),
    "bernoulli 1.5": (["{gray}", "--bernoulli", "1.5"], "--bernoulli must be in (0, 1)"),
    "iterations 0": (["{gray}", "--bernoulli", "0.5", "--iterations", "0"], "--iterations must be positive"),
    "iterations -3": (["{gray}", "--bernoulli", "0.5", "--iterations", "-3"], "--iterations must be positive"),
    "lr -1": (["{gray}", "--bernoulli", "0.5", "--lr", "-1"], "--lr must be a positive finite number"),
    "lr inf": (["{gray}", "--bernoulli", "0.5", "--lr", "inf"], "--lr must be a positive finite number"),
    "lr 1e30 diverges": (
        ["{gray}", "--bernoulli", "0.5", "--lr", "1e30", "--preset", "text", "--iterations", "25"],
        "diverged",
    ),
    "seed -1": (["{gray}", "--bernoulli", "0.5", "--seed", "-1"], "--seed must be in [0, 2^63)"),
    "device meta": (["{gray}", "--bernoulli", "0.5", "--device", "meta"], "cannot run a fit"),
    "all-black mask": (["{gray}", "--mask", "{mask_black}"], "all black"),
    "output parent is a file": (["{gray}", "--bernoulli", "0.5", "-o", "{not_image}/out.png"], "is not a folder"),
    "history parent is a file": (
        ["{gray}", "--bernoulli", "0.5", "--history", "{not_image}/h.json"],
        "is not a folder",
    ),
    "output is a symlink": (["{gray}", "--bernoulli", "0.5", "-o", "{symlink}"], "symbolic link"),
    "output .gif": (["{gray}", "--bernoulli", "0.5", "-o", "{folder}/../x.gif"], "unknown image extension '.gif'"),
    "output without extension": (["{gray}", "--bernoulli", "0.5", "-o", "{folder}/../x"], "unknown image extension"),
    "unknown device": (["{gray}", "--bernoulli", "0.5", "--device", "foo"], "unknown device 'foo'"),
    "output is a folder": (["{gray}", "--bernoulli", "0.5", "-o", "{folder}"], "is not a regular file"),
    "resume dir is a file": (["{gray}", "--bernoulli", "0.5", "--resume-dir", "{not_image}"], "is not a folder"),
    "threads 0": (["{gray}", "--bernoulli", "0.5", "--threads", "0"], "must be positive"),
}


@pytest.fixture(scope="module")
def bad_runs(files, repo_root, tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """Every BAD case run once, two at a time (each start mostly imports torch): case -> (process, output folder)."""
    jobs = {}
    for case, (args, _) in BAD.items():
        out_dir = tmp_path_factory.mktemp("bad_out")
        argv = [a.format(**files) for a in args]
        if "--preset" not in argv:
            argv += ["--preset", "table1-paper"]
        if "--iterations" not in argv:
            argv += ["--iterations", "2"]  # a bug letting bad input through then fails fast
        if "-o" not in argv:
            argv += ["-o", out_dir / "out.png"]
        if "--history" not in argv:
            argv += ["--history", out_dir / "h.json"]
        argv += ["--masked", out_dir / "masked.png"]
        jobs[case] = (argv, out_dir)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {case: pool.submit(run_cli, repo_root, "inpaint", *argv) for case, (argv, _) in jobs.items()}
        return {case: (futures[case].result(), jobs[case][1]) for case in jobs}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_a_one_line_error(case, bad_runs):
    proc, out_dir = bad_runs[case]
    assert proc.returncode == 2, proc.stderr
    # the progress bar of a fit that ran until it diverged is not part of the error
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip() and "DIP fit:" not in ln]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert BAD[case][1] in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert list(out_dir.iterdir()) == []  # nothing written, not even a temporary file


@pytest.fixture(scope="module")
def good_run(files, repo_root, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """One tiny successful run (48x48 RGBA, 3 iterations) writing every output: (process, output folder)."""
    d = tmp_path_factory.mktemp("good_out")
    proc = run_cli(
        repo_root,
        "inpaint",
        files["rgba"],
        "--bernoulli",
        "0.5",
        "--preset",
        "table1-paper",
        "--iterations",
        "3",
        "-o",
        d / "out.png",
        "--history",
        d / "h.json",
        "--masked",
        d / "masked.png",
    )
    return proc, d


def test_successful_tiny_run_writes_all_outputs(good_run):
    proc, d = good_run
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "final PSNR" in proc.stdout and "best PSNR" in proc.stdout
    assert load_image(d / "out.png").shape == (3, 48, 48)
    masked = load_image(d / "masked.png")
    assert masked.shape == (3, 48, 48)
    assert 0.4 < np.mean(np.all(masked == 0, axis=0)) < 0.6  # the 50% pixelwise mask shows as black pixels
    payload = json.loads((d / "h.json").read_text())
    assert payload["preset"] == "table1-paper"
    assert payload["summary"]["iterations_run"] == 3
    assert len(payload["history"]["loss"]) == len(payload["history"]["iteration"]) >= 2
    assert sorted(p.name for p in d.iterdir()) == ["h.json", "masked.png", "out.png"]  # no temporary files left


def test_rgba_input_works_and_warns_that_alpha_is_dropped(good_run):
    proc, d = good_run
    assert proc.returncode == 0, proc.stderr
    assert "WARNING" in proc.stderr and "alpha" in proc.stderr
    assert load_image(d / "out.png").shape == (3, 48, 48)


def test_presets_command_prints_the_parameter_counts(repo_root):
    proc = run_cli(repo_root, "presets")
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line for line in proc.stdout.splitlines()[1:] if line.strip()}
    assert {"text", "table1-paper", "table1-seed", "vase", "library-depth6"} <= set(rows)
    assert "3,002,369" in rows["text"] and "3,002,627" in rows["text"]
    assert "2,217,573" in rows["table1-paper"]
    assert "2,157,955" in rows["vase"]
    assert "2,996,467" in rows["library-depth6"]


def test_a_reader_that_goes_away_ends_the_output_quietly(repo_root):
    """``python -m dip_lib presets | head -1``: no traceback when the pipe closes before the output."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "dip_lib", "presets"],
        cwd=repo_root,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc.stdout.close()  # the reader is gone before the first line is written
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141 and err == ""


# ---- image I/O called directly ----


def test_16_bit_grayscale_png_is_scaled_by_65535(tmp_path):
    values = np.array([[0, 1, 255, 256], [1000, 32768, 65534, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    img = load_image(tmp_path / "g16.png")
    assert img.shape == (1, 2, 4) and img.dtype == np.float32
    np.testing.assert_allclose(img[0], values / 65535.0, rtol=0, atol=1e-7)


def test_dark_16_bit_png_is_not_mistaken_for_8_bit(tmp_path):
    values = np.array([[0, 10, 200, 255]], dtype=np.uint16)  # every value fits 8 bits
    Image.fromarray(values).save(tmp_path / "dark16.png")
    np.testing.assert_allclose(load_image(tmp_path / "dark16.png")[0], values / 65535.0, atol=1e-7)
    # older Pillow opens 16-bit PNGs in mode "I"
    im = Image.open(tmp_path / "dark16.png").convert("I")
    im.format = "PNG"
    np.testing.assert_allclose(pil_to_array(im)[0], values / 65535.0, atol=1e-7)


def test_8_bit_images_are_scaled_by_255(files):
    img = load_image(files["rgb"])
    assert img.shape == (3, 48, 48)
    np.testing.assert_allclose(img, data.astronaut()[::8, ::8][:48, :48].transpose(2, 0, 1) / 255.0, atol=1e-7)


def test_load_mask_checks_size_and_values(files):
    with pytest.raises(DipError, match="7 pixels"):
        load_mask(files["mask_gray"], (48, 48))
    with pytest.raises(DipError, match="40x40"):
        load_mask(files["mask_other_size"], (48, 48))
    m = load_mask(files["mask_other_size"], (40, 40))
    assert m.shape == (1, 40, 40) and m.min() == 1.0


def test_unreadable_images_are_user_errors(files, tmp_path, monkeypatch):
    with pytest.raises(DipError, match="file not found"):
        load_image(files["missing"])
    with pytest.raises(DipError, match="not a file"):
        load_image(tmp_path)
    with pytest.raises(DipError, match="not an image"):
        load_image(files["not_image"])
    with pytest.raises(DipError, match="truncated or corrupt"):
        load_image(files["truncated"])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 48x48 > 2 * 100 pixels: a "decompression bomb"
    with pytest.raises(DipError, match="too large"):
        load_image(files["gray"])


def test_usage_errors_are_one_line(capsys):
    """argparse's own errors (bad int, missing -o, unknown command) follow the one-line rule too."""
    from dip_lib.cli import main

    for argv in (
        ["inpaint", "x.png", "--bernoulli", "0.5", "--iterations", "abc", "-o", "y.png"],
        ["inpaint", "x.png", "--bernoulli", "0.5"],
        ["nope"],
    ):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err


def test_float_images_in_0_255_are_scaled_not_clipped_and_out_of_range_refused(tmp_path):
    arr = np.linspace(0, 255, 48 * 48, dtype=np.float32).reshape(48, 48)
    Image.fromarray(arr, mode="F").save(tmp_path / "f255.tif")
    img = load_image(tmp_path / "f255.tif")
    assert img.max() == pytest.approx(1.0) and img.min() == 0.0 and (img < 1).mean() > 0.99
    Image.fromarray(arr * 10, mode="F").save(tmp_path / "f2550.tif")
    with pytest.raises(DipError, match="expected"):
        load_image(tmp_path / "f2550.tif")


def test_the_parser_and_early_refusals_import_no_torch(files):
    """Usage errors and bad files are refused before torch's import (seconds on a small machine)."""
    code = (
        "import sys\nfrom dip_lib.cli import main\n"
        f"rc = main(['inpaint', {str(files['missing'])!r}, '--bernoulli', '0.5', '-o', 'x.png'])\n"
        "assert rc == 2 and 'torch' not in sys.modules, rc\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "file not found" in proc.stderr


def test_bench_options_name_what_bench_implements():
    from dip_lib import cli
    from dip_lib.core import config
    from dip_lib.speed import bench

    assert cli.BENCH_MODES == bench.MODES and cli.BENCH_PRESETS == bench.PRESET_NAMES
    assert cli.NOISE_RNGS == config.NOISE_RNGS


def test_results_dir_is_taken_from_the_current_folder_and_never_empty(tmp_path, monkeypatch, capsys):
    """A relative --results-dir names a folder under the current one (not under the checkout); the
    default stays results/ in the project root; an empty one is refused in one line."""
    from dip_lib.cli import build_parser, main
    from dip_lib.report.store import ResultStore, find_root

    monkeypatch.chdir(tmp_path)
    for command in ("reproduce", "report"):
        args = build_parser().parse_args([command, "--profile", "smoke", "--results-dir", "mine"])
        assert ResultStore(args.results_dir).root == tmp_path / "mine"
        args = build_parser().parse_args([command, "--profile", "smoke"])
        assert ResultStore(args.results_dir).root == find_root() / "results"
        for empty in ("", " "):
            with pytest.raises(SystemExit) as exc:
                main([command, "--profile", "smoke", "--results-dir", empty])
            err = capsys.readouterr().err
            assert exc.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    with pytest.raises(DipError, match="empty"):
        ResultStore("")
