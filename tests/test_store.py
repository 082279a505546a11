"""Records are validated on load, by type and range, and so are the images they name: an invalid
one is reported once with its path and recomputed; a diverged fit is never stored."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

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
