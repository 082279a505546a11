"""Records are validated on load, by type, range and the fit's invariants, and so are the images
they name, by size and checksum: an invalid one is reported once with its path and recomputed (the
report shows it as missing); a diverged fit is never stored; leftovers are removed at every start; a
results folder that is a file is one line."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from dip_lib.core.errors import DipError
from dip_lib.report import runner
from dip_lib.report.runs import Run, pairs, spec
from dip_lib.report.store import InvalidRecord, ResultStore, validate

ROOT = Path(__file__).resolve().parents[1]
TINY = Run(
    experiment="table1",
    profile="smoke",
    image="camera",
    source="embedded",
    crop=32,
    preset="table1-seed",
    net=pairs(channels_down=(8, 8), channels_skip=(4, 4), channels_up=(8, 8)),
    iterations=12,
    log_every=3,
)
PEER = replace(TINY, method="biharmonic", net=())


@pytest.fixture(scope="module")
def computed(tmp_path_factory) -> Path:
    """A store holding one tiny DIP run and its biharmonic peer, computed once."""
    root = tmp_path_factory.mktemp("computed")
    out = runner.run_all(
        [TINY, Run(**{**TINY.to_dict(), "method": "biharmonic", "net": ()})], ResultStore(root), progress=False
    )
    assert not out.failed
    return root


@pytest.fixture
def store(computed, tmp_path) -> ResultStore:
    """A copy of the computed store to corrupt (only under tmp_path)."""
    shutil.copytree(computed, tmp_path / "results")
    return ResultStore(tmp_path / "results")


def _rewrite(store: ResultStore, change) -> None:
    rec = json.loads(store.path(TINY).read_text())
    change(rec)
    store.path(TINY).write_text(json.dumps(rec))


def _set(*keys_and_value):
    """A change that sets rec[k1][k2]... to the last argument."""
    *keys, value = keys_and_value

    def change(rec):
        obj = rec
        for k in keys[:-1]:
            obj = obj[k]
        obj[keys[-1]] = value

    return change


def _pop(*keys):
    def change(rec):
        obj = rec
        for k in keys[:-1]:
            obj = obj[k]
        obj.pop(keys[-1])

    return change


BAD = {
    "huge PSNR": (_set("summary", "final_psnr", 1e300), "summary.final_psnr is 1e+300, not a PSNR in [0, 200] dB"),
    "bool PSNR": (_set("summary", "final_psnr", True), "summary.final_psnr is True"),
    "null EMA PSNR": (_set("summary", "ema_psnr", None), "summary.ema_psnr is None"),
    "string PSNR": (_set("summary", "best_hole_psnr", "20"), "summary.best_hole_psnr is '20'"),
    "SSIM above 1": (_set("summary", "final_ssim", 1.5), "summary.final_ssim is 1.5, not an SSIM"),
    "negative count": (_set("summary", "iterations_run", -1), "summary.iterations_run is -1, not an integer"),
    "float count": (_set("summary", "best_iteration", 2.5), "summary.best_iteration is 2.5"),
    "negative time": (_set("summary", "wall_time", -1.0), "summary.wall_time is -1.0"),
    "no summary field": (_pop("summary", "oracle_psnr"), "summary has no oracle_psnr"),
    "summary a list": (_set("summary", []), "summary is not an object"),
    "top-level time": (_set("wall_time", "1 s"), "record.wall_time is '1 s'"),
    "config a list": (_set("config", []), "record.config is []"),
    "null loss, not restored": (_set("history", "loss", 1, None), "history.loss[1] is null"),
    "unequal history": (_pop("history", "psnr_clean", 0), "history lists are empty or of unequal lengths"),
    "int restored": (_set("history", "restored", 0, 0), "history.restored[0] is 0, not true or false"),
    "string in history": (_set("history", "psnr_hole", 2, "x"), "history.psnr_hole[2] is 'x'"),
    "no history list": (_set("history", "elapsed", {}), "history has no list elapsed"),
    "eswmv window": (_set("eswmv", "window", "5"), "eswmv.window is '5'"),
    "eswmv a list": (_set("eswmv", []), "eswmv is not an object"),
    "drops an object": (_set("drops", {}), "drops is not a list"),
    "bad drop": (_set("drops", [{"start_iteration": 3}]), "drops[0] has no bottom_iteration"),
    "images a list": (_set("images", []), "images is not an object"),
    "path traversal": (_set("images", "final", "../x.png"), "images.final is not a plain file name"),
    "inputs traversal": (_set("images", "final", "inputs/../../x.png"), "images.final is not a plain file name"),
    "absolute path": (_set("images", "final", "/etc/x.png"), "images.final is not a plain file name"),
    "another folder": (_set("images", "final", "sub/x.png"), "images.final is not a plain file name"),
    "not a PNG": (_set("images", "final", "x.txt"), "images.final is not the name of a PNG"),
    "absent PNG": (_set("images", "final", "absent.png"), "absent.png is missing"),
    "NaN token": (_set("summary", "final_psnr", float("nan")), "summary.final_psnr is nan"),
    # what the fit guarantees by construction (oracle >= final) and the budget
    "final above the oracle": (_set("summary", "final_psnr", 150.0), "summary.final_psnr 150.0 is above its oracle"),
    "oracle not the history's": (_set("summary", "oracle_psnr", 150.0), "oracle_psnr 150.0 is not the best clean"),
    "final not the history's": (_set("summary", "final_psnr", 1.0), "final_psnr 1.0 is not the last clean PSNR"),
    "past the budget": (_set("summary", "iterations_run", 13), "iterations_run 13 is past the run's 12 iterations"),
    "a check past the run": (_set("summary", "best_iteration", 99), "best_iteration 99 is past the 12 iterations run"),
    "no checksum": (_pop("checksums", "ema"), "checksums does not name the images that images names"),
    "bad checksum": (_set("checksums", "final", "sha256", "x"), "checksums.final.sha256 is 'x', not a sha256"),
    "bad size": (_set("checksums", "final", "bytes", -1), "checksums.final.bytes is -1, not an integer"),
}


@pytest.mark.parametrize("name", BAD)
def test_a_wrong_value_makes_a_record_invalid_and_missing(store, name):
    change, why = BAD[name]
    _rewrite(store, change)
    with pytest.raises(InvalidRecord) as err:
        store.load(TINY)
    assert str(err.value).startswith(f"invalid record {store.path(TINY)} (") and why in str(err.value)
    assert not store.exists(TINY) and store.missing([TINY]) == [TINY]


def test_a_missing_png_is_named_and_the_run_recomputed(store, caplog):
    """Once a PNG beside the record is gone, the run counts as missing: ``reproduce`` recomputes it
    (instead of "all stored" and a report that fails), and it is reported once with the file."""
    png = store.folder(TINY) / json.loads(store.path(TINY).read_text())["images"]["ema"]
    png.unlink()
    with caplog.at_level(logging.WARNING, logger="dip_lib.report.store"):
        assert [store.exists(TINY) for _ in range(3)] == [False] * 3
        assert store.missing([TINY]) == [TINY]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(png) in warnings[0] and str(store.path(TINY)) in warnings[0]
    out = runner.run_all([TINY], store, progress=False)
    assert out.computed == [TINY] and png.is_file() and store.exists(TINY)


def test_a_restored_check_is_no_candidate_for_the_oracle(store):
    """The guard discards a restored check's iterate: its clean PSNR, however high, is not the oracle's."""

    def restore_a_better_check(rec):
        rec["history"]["restored"][1] = True
        rec["history"]["psnr_clean"][1] = rec["summary"]["oracle_psnr"] + 5

    _rewrite(store, restore_a_better_check)
    assert store.load(TINY)["history"]["restored"][1]


def _image(store: ResultStore, run: Run, kind: str) -> Path:
    return store.folder(run) / json.loads(store.path(run).read_text())["images"][kind]


def _truncate(png: Path) -> None:
    png.write_bytes(png.read_bytes()[: png.stat().st_size // 2])


def _decodes(png: Path) -> bool:
    try:
        with Image.open(png) as img:
            img.load()
        return True
    except OSError:
        return False


@pytest.mark.parametrize("damage", ["truncated", "replaced", "truncated, a record without checksums"])
def test_a_damaged_png_is_reported_once_and_recomputed(store, damage, caplog):
    """A truncated -final.png, or one replaced by another valid PNG (the peer's output), is found by its
    size and checksum; in a record written before checksums were kept, by decoding it. It is reported
    once with its path, however often the store is read, the report leaves the run out, and
    ``run_all`` (``reproduce``) computes it again."""
    png = _image(store, TINY, "final")
    if damage == "replaced":
        shutil.copyfile(_image(store, PEER, "final"), png)
    else:
        _truncate(png)
    if "without checksums" in damage:
        _rewrite(store, _pop("checksums"))
    with caplog.at_level(logging.WARNING, logger="dip_lib.report.store"):
        assert [store.exists(TINY) for _ in range(3)] == [False] * 3
        assert runner.load_records([TINY, PEER], store, partial=True) == [(PEER, store.load(PEER))]
        assert store.missing([TINY, PEER]) == [TINY]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and str(png) in warnings[0] and str(store.path(TINY)) in warnings[0], warnings
    out = runner.run_all([TINY, PEER], store, progress=False)
    assert out.computed == [TINY] and store.exists(TINY) and _decodes(png)


def test_a_record_without_checksums_still_loads(store):
    """Records stored before checksums were kept load when their images decode whole."""
    _rewrite(store, _pop("checksums"))
    assert "checksums" not in store.load(TINY) and store.exists(TINY)


def test_a_damaged_shared_input_is_written_again_not_blessed(store):
    """The masked input is shared by a problem's runs: when it is damaged, both runs are invalid; the
    first one recomputed writes the input again (not kept and given a checksum as it is), which makes
    the other's record whole again."""
    png = _image(store, TINY, "observed")
    assert png == _image(store, PEER, "observed")
    _truncate(png)
    assert store.missing([TINY, PEER]) == [TINY, PEER]
    out = runner.run_all([TINY, PEER], store, progress=False)
    assert out.computed == [TINY] and _decodes(png) and not store.missing([TINY, PEER])


def test_invalid_records_are_reported_once_each_over_all_the_reads_of_a_reproduce(store, caplog):
    """reproduce reads the store several times (what is missing, the time estimate, each runner's
    start): each invalid record is one warning, not one per read."""
    _rewrite(store, _set("summary", "final_psnr", 150.0))
    _truncate(_image(store, PEER, "final"))
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            store.missing([TINY, PEER])
            runner.load_records([TINY, PEER], store, partial=True)
            runner.coverage([TINY, PEER], store)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2 and str(store.path(TINY)) in warnings[0] and str(store.path(PEER)) in warnings[1]


def test_leftovers_are_removed_at_every_start_not_only_when_a_run_is_missing(store):
    """A temp file and an output PNG that no record claims, left by a killed run, are removed by the
    next start even when every run is stored; a young one (a run computing now) is kept."""
    folder = store.folder(TINY)
    old = [folder / ".0123456789abcdef.json.x1.tmp", folder / "0123456789abcdef-final.png"]
    young = folder / ".fedcba9876543210.json.x2.tmp"
    for p in old + [young]:
        p.write_bytes(b"x")
    for p in old:
        os.utime(p, (time.time() - 3600, time.time() - 3600))
    out = runner.run_all([TINY, PEER], store, progress=False)
    assert not out.computed and not any(p.exists() for p in old) and young.exists()


@pytest.mark.parametrize("where", ["the folder", "a parent"])
def test_a_results_dir_that_is_a_file_is_one_line(tmp_path, capsys, caplog, where):
    from dip_lib.cli import main

    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    results = afile if where == "the folder" else afile / "results"
    with caplog.at_level(logging.WARNING):
        assert main(["reproduce", "--profile", "smoke", "--only", "optim", "--results-dir", str(results)]) == 2
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: the results folder {results} is not a folder: {afile} is a file"]


@pytest.mark.parametrize("depth", [40, 100_000])
def test_deep_nesting_is_refused_without_a_recursion_error(store, depth):
    """Nesting too deep for json itself (100000) and nesting past the store's limit (40) alike."""
    text = store.path(TINY).read_text()
    store.path(TINY).write_text(text[:-1] + ', "deep": ' + "[" * depth + "]" * depth + "}")
    with pytest.raises(InvalidRecord, match="nested (too deeply|deeper than 16 levels)"):
        store.load(TINY)
    assert not store.exists(TINY)


def test_a_peer_record_needs_no_history(store):
    assert "history" not in store.load(PEER) and store.exists(PEER)


def test_a_diverged_fit_is_never_stored(store):
    """What a diverged fit would leave (a null EMA PSNR, a NaN in the loss history) is refused by
    ``save`` before any file is written."""
    rec = json.loads(store.path(TINY).read_text())
    store.path(TINY).unlink()
    for change in (_set("summary", "ema_psnr", None), _set("history", "loss", 2, float("nan"))):
        bad = json.loads(json.dumps(rec))
        change(bad)
        with pytest.raises(DipError, match="refusing to store"):
            store.save(TINY, bad, {})
        assert not store.path(TINY).exists()


def _committed() -> list[Path]:
    """The records git tracks (results/smoke/ is ignored: each checkout computes its own)."""
    return sorted(p for profile in ("quick", "paper") for p in ROOT.glob(f"results/{profile}/*/*.json"))


@pytest.mark.skipif(not _committed(), reason="no stored results in this checkout")
def test_every_committed_record_validates():
    """Every committed record is its run's as the code resolves it now, and loads through the store."""
    store = ResultStore(ROOT / "results")
    for f in _committed():
        rec = json.loads(f.read_text())
        run = Run.from_dict(rec["config"])
        assert store.path(run) == f and rec["spec"] == spec(run), f
        assert validate(rec, run, folder=f.parent) is None, f
        assert store.load(run) == rec
