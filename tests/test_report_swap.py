"""Swapping a new report in: index.html is never missing, reports of one profile take turns, build
folders of killed reports are removed on the next start, and the notebooks are told a results folder
they can find. The notebooks themselves are replaced by a stand-in build (no kernel: fast)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from filelock import FileLock

from dip_lib.report import render
from dip_lib.report.store import find_root

NOTEBOOKS = ("05_claims.ipynb",)


@pytest.fixture
def builds(monkeypatch) -> list[dict]:
    """render._build writes two pages and index.html; each call is recorded (start, end, results_dir)."""
    calls: list[dict] = []

    def build(root, out, profile, store, results_dir, device, notebooks):
        call = {"start": time.monotonic(), "results_dir": results_dir}
        calls.append(call)
        n = len(calls)
        (out / f"page{n}.html").write_text(f"page of build {n}")
        (out / "common.html").write_text(f"common of build {n}")
        time.sleep(0.2)  # long enough for another report started at the same time to overlap
        (out / "index.html").write_text(f"index of build {n}")
        call["end"] = time.monotonic()
        return out / "index.html", "findings"  # (index, README findings), as _build returns

    monkeypatch.setattr(render, "_build", build)
    monkeypatch.setattr(render, "_check_data", lambda: None)  # the stand-in draws no ground truth
    return calls


def test_the_index_is_never_missing_while_a_report_is_swapped_in(tmp_path, builds, monkeypatch):
    final = tmp_path / "report" / "smoke"
    render.render("smoke", out_dir=final, results_dir=tmp_path / "r", notebooks=NOTEBOOKS)
    gaps = []

    def watched(fn):
        def call(*args, **kwargs):
            out = fn(*args, **kwargs)
            if not (final / "index.html").is_file():
                gaps.append((fn.__name__, args))
            return out

        return call

    for name in ("rename", "replace", "unlink", "rmdir"):
        monkeypatch.setattr(os, name, watched(getattr(os, name)))
    render.render("smoke", out_dir=final, results_dir=tmp_path / "r", notebooks=NOTEBOOKS)
    monkeypatch.undo()
    assert gaps == []
    assert final.is_dir() and not final.is_symlink()  # the committed report/quick/ stays a folder in git
    assert sorted(p.name for p in final.iterdir()) == ["common.html", "index.html", "page2.html"]  # page1 gone
    assert (final / "index.html").read_text() == "index of build 2"


def test_two_reports_of_one_profile_take_turns(tmp_path, builds):
    final = tmp_path / "report" / "smoke"
    errors = []

    def one():
        try:
            render.render("smoke", out_dir=final, results_dir=tmp_path / "r", notebooks=NOTEBOOKS)
        except Exception as exc:  # a thread would swallow it: kept for the assert
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    spans = sorted((c["start"], c["end"]) for c in builds)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))  # never two at once
    assert (final / "index.html").is_file()
    assert not [p for p in final.parent.iterdir() if p.name.startswith(".smoke.")]  # no build folder left


def test_build_folders_of_killed_reports_are_removed_on_the_next_start(tmp_path, builds):
    parent = tmp_path / "report"
    locks = parent / ".locks"
    locks.mkdir(parents=True)
    killed = parent / ".smoke.k1ll3d00"  # a report of this profile killed with -9 while building
    killed.mkdir()
    (killed / "01_table1_bernoulli.ipynb").write_text("half written")
    (locks / "smoke.lock").touch()
    dead = parent / ".paper.d3ad0000"  # another profile's killed report: its lock is free
    dead.mkdir()
    (locks / "paper.lock").touch()
    busy = parent / ".quick.bu5y0000"  # another profile's report at work: its lock is held
    busy.mkdir()
    unclaimed = parent / ".cache.keep"  # no report's lock names it: not ours to remove
    unclaimed.mkdir()
    held = FileLock(locks / "quick.lock")
    held.acquire()
    try:
        render.render("smoke", out_dir=parent / "smoke", results_dir=tmp_path / "r", notebooks=NOTEBOOKS)
        assert not killed.exists() and not dead.exists()
        assert busy.is_dir() and unclaimed.is_dir()
    finally:
        held.release()
    render.render("smoke", out_dir=parent / "smoke", results_dir=tmp_path / "r", notebooks=NOTEBOOKS)
    assert not busy.exists() and unclaimed.is_dir()


def test_the_notebooks_get_a_results_folder_they_can_find(tmp_path, builds):
    """Inside the project (the committed report): relative to its root, so the pages name no machine's
    path and nbval replays them anywhere; elsewhere: absolute, whatever the notebook's own folder."""
    root = find_root()
    assert render._notebook_results(root / "results", root, root / "report" / "quick") == "results"
    assert render._notebook_results(root / "elsewhere", root, tmp_path / "quick") == str(root / "elsewhere")
    render.render("smoke", out_dir=tmp_path / "smoke", results_dir=tmp_path / "r", notebooks=NOTEBOOKS)
    given = Path(builds[-1]["results_dir"])
    assert given.is_absolute() and given == (tmp_path / "r").resolve()
