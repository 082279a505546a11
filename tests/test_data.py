"""The data layer: registry, fetching through a loopback HTTP server or a mirror folder, import, loaders."""

from __future__ import annotations

import csv
import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from dip_lib.cli import main
from dip_lib.core import data
from dip_lib.core.errors import DipError

REPO = Path(__file__).resolve().parents[1]
SHARED = (Path(__file__).parents[1] / ".." / "shared" / "data").resolve()
needs_shared = pytest.mark.skipif(
    not (SHARED / "MANIFEST.tsv").is_file(),
    reason=f"shared data folder {SHARED} is absent (it holds the 19 registry files)",
)


def _manifest() -> dict[str, dict[str, str]]:
    with open(SHARED / "MANIFEST.tsv", newline="") as fh:
        return {Path(r["file"]).stem: r for r in csv.DictReader(fh, delimiter="\t")}


def _refused_url() -> str:
    """A loopback address where nothing listens (the port was free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class _Handler(BaseHTTPRequestHandler):
    """Serves SHARED; the server's ``mode`` makes it good, corrupt, truncating or slow."""

    def do_GET(self) -> None:
        srv = self.server
        srv.requests.append(self.path)
        path = SHARED / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        if srv.mode == "corrupt":
            body = body[:100] + bytes([body[100] ^ 0xFF]) + body[101:]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.mode == "truncate":  # promise the whole file, send half, hang up
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        step = 16384 if srv.mode == "slow" else len(body)
        for i in range(0, len(body), step):
            self.wfile.write(body[i : i + step])
            if srv.mode == "slow":
                time.sleep(0.005)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(autouse=True)
def offline_env(tmp_path, monkeypatch):
    """Every test gets a fresh cache, no mirror, and a public base that refuses: never the internet."""
    monkeypatch.setenv("DIP_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DIP_DATA_MIRROR", raising=False)
    monkeypatch.setenv("DIP_DATA_PUBLIC_BASE", _refused_url())


@pytest.fixture
def server(monkeypatch):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.mode, srv.requests = "good", []
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("DIP_DATA_MIRROR", f"http://127.0.0.1:{srv.server_address[1]}")
    yield srv
    srv.shutdown()
    srv.server_close()


def _cache_files(tmp_path) -> list[str]:
    root = tmp_path / "cache"
    return (
        sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.name.endswith(".lock"))
        if root.exists()
        else []
    )


# ---------------------------------------------------------------- registry and reference tables


@needs_shared
def test_registry_agrees_with_manifest():
    assert data.registry() == data.registry_from_manifest(SHARED)
    for e in data.registry():
        assert (SHARED / e.path).stat().st_size == e.size
        assert hashlib.sha256((SHARED / e.path).read_bytes()).hexdigest() == e.sha256


def test_registry_shape():
    entries = data.registry()
    assert len(entries) == 19 and len({e.name for e in entries}) == 19
    assert [e.name for e in entries if e.group == "table1"] == [n for n, _ in data.TABLE1_ORDER]
    assert {e.name for e in entries if e.group == "dip"} == set(data.EXAMPLES) | {
        m for m in data.EXAMPLES.values() if m
    }
    assert all(e.url.startswith("https://raw.githubusercontent.com/") and len(e.sha256) == 64 for e in entries)
    assert [e.name for e in data.select(["vase", "table1", "house"])][:2] == ["barbara", "boat"]
    with pytest.raises(DipError, match="unknown data file or group 'nope'"):
        data.select("nope")


def test_reference_tables():
    paper = data.paper_table1()
    assert [r["name"] for r in paper] == [n for n, _ in data.TABLE1_ORDER]
    assert [r["image"] for r in paper] == [label for _, label in data.TABLE1_ORDER]
    # the means printed in REFERENCE_VALUES.md catch a mistyped cell
    assert np.mean([r["papyan_psnr"] for r in paper]) == pytest.approx(31.19, abs=0.005)
    assert np.mean([r["dip_psnr"] for r in paper]) == pytest.approx(33.48, abs=0.005)
    assert paper[5] == {
        "image": "C.man",
        "papyan_psnr": 27.90,
        "dip_psnr": 29.80,
        "name": "cameraman",
        "source": "Ulyanov, Vedaldi, Lempitsky, Deep Image Prior, CVPR 2018, Table 1",
    }
    g71 = data.group71_table1()
    assert [r["name"] for r in g71] == [n for n, _ in data.TABLE1_ORDER]
    assert {r["name"]: r["max_psnr"] for r in g71}["peppers"] == 41.64
    assert all("yyunon/reproducibility-project-group-71@195f3f1e" in r["source"] for r in g71)
    # the seed report's kate sweeps as REFERENCE_VALUES.md transcribes them
    sweeps = data.group71_kate_sweeps()
    depth = {(r["depth"], r["skip"]): r["psnr"] for r in sweeps if r["sweep"] == "depth"}
    assert len(sweeps) == 15 and depth[(1, True)] == 16.88 and depth[(8, False)] == 33.14
    assert [r["psnr"] for r in sweeps if r["sweep"] == "filters"] == [21.61, 31.74, 35.78, 37.35, 39.13]
    assert all("group 71" in r["source"] and "approximate" in r["source"] for r in sweeps)


# ---------------------------------------------------------------- fetching


@needs_shared
def test_http_fetch_verifies_and_caches(server, tmp_path):
    paths = data.fetch(["house", "vase_mask"])
    assert [p.name for p in paths] == ["house.png", "vase_mask.png"]
    assert paths[0].read_bytes() == (SHARED / "table1/house.png").read_bytes()
    assert sorted(server.requests) == ["/dip/vase_mask.png", "/table1/house.png"]
    data.fetch(["house", "vase_mask"])  # now served from the cache
    assert len(server.requests) == 2
    assert _cache_files(tmp_path) == ["dip/vase_mask.png", "table1/house.png"]
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in paths)  # a shared cache is readable by all


@needs_shared
def test_checksum_mismatch_is_an_error_and_caches_nothing(server, tmp_path):
    server.mode = "corrupt"
    with pytest.raises(DipError) as err:
        data.fetch("house")
    entry = data.select("house")[0]
    msg = str(err.value)
    assert "checksum mismatch for table1/house.png" in msg and entry.sha256 in msg and "\n" not in msg
    assert _cache_files(tmp_path) == []


@needs_shared
def test_connection_closed_mid_file_caches_nothing_then_recovers(server, tmp_path):
    server.mode = "truncate"
    with pytest.raises(DipError):
        data.fetch("barbara")
    assert _cache_files(tmp_path) == []
    server.mode = "good"
    (path,) = data.fetch("barbara")
    assert data.sha256_file(path) == data.select("barbara")[0].sha256


@needs_shared
def test_bad_cached_file_is_fetched_again(server, tmp_path):
    (path,) = data.fetch("montage")
    path.write_bytes(b"not a png")
    assert not data.is_verified(data.select("montage")[0])
    data.fetch("montage")
    assert data.is_verified(data.select("montage")[0]) and len(server.requests) == 2


@needs_shared
def test_concurrent_fetch_downloads_once(server, tmp_path):
    server.mode = "slow"
    barrier = threading.Barrier(2)
    results, errors = [], []

    def worker() -> None:
        barrier.wait()
        try:
            results.extend(data.fetch("barbara"))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == [] and len(results) == 2 and results[0] == results[1]
    assert server.requests == ["/table1/barbara.png"]  # the second waited on the lock, then found it cached
    assert data.is_verified(data.select("barbara")[0])
    assert _cache_files(tmp_path) == ["table1/barbara.png"]


@needs_shared
def test_mirror_folder_needs_neither_pooch_nor_platformdirs(monkeypatch, tmp_path):
    monkeypatch.setenv("DIP_DATA_MIRROR", str(SHARED))
    monkeypatch.setitem(sys.modules, "pooch", None)  # import pooch now raises ImportError
    monkeypatch.setitem(sys.modules, "platformdirs", None)
    paths = data.fetch("dip")
    assert len(paths) == 8 and all(data.is_verified(e) for e in data.select("dip"))


def test_cache_dir_default_and_without_platformdirs(monkeypatch):
    monkeypatch.delenv("DIP_DATA_DIR")
    assert data.cache_dir().name == "dip-inpainting"
    monkeypatch.setitem(sys.modules, "platformdirs", None)
    with pytest.raises(DipError, match="set DIP_DATA_DIR"):
        data.cache_dir()


def test_offline_cli_is_one_line_exit_2(tmp_path):
    refused = _refused_url()
    env = {
        **os.environ,
        "DIP_DATA_DIR": str(tmp_path / "cache"),
        "DIP_DATA_MIRROR": refused,
        "DIP_DATA_PUBLIC_BASE": refused,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "dip_lib", "data", "fetch", "house", "kate"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith("error: 2 data file(s) missing") and "house, kate" in lines[0]
    assert "python -m dip_lib data import DIR" in lines[0] and "DIP_DATA_MIRROR=" in lines[0]
    assert _cache_files(tmp_path) == []


def test_unusable_cache_dir_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder\n")
    for cache in (blocker, blocker / "cache"):  # the cache is a file, or lies under one
        monkeypatch.setenv("DIP_DATA_DIR", str(cache))
        why = rf"cannot write the data cache {re.escape(str(cache))} \(set by DIP_DATA_DIR\): .*a_file is not a folder"
        with pytest.raises(DipError, match=why):
            data.fetch(["house"])
        assert main(["data", "fetch", "house"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: cannot write the data cache {cache}") and err.count("\n") == 1
    assert blocker.read_text() == "not a folder\n"
    monkeypatch.setenv("DIP_DATA_DIR", str(tmp_path / "readonly"))
    with monkeypatch.context() as m, pytest.raises(DipError, match=r"\(set by DIP_DATA_DIR\): no permission to write"):
        m.setattr(data.os, "access", lambda *a, **k: False)  # as on a read-only mount (root ignores chmod)
        data.fetch(["house"])


@needs_shared
def test_import_into_an_unusable_cache_dir_is_a_one_line_error(tmp_path, monkeypatch):
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("DIP_DATA_DIR", str(tmp_path / "a_file"))
    with pytest.raises(DipError, match="a_file is not a folder"):
        data.import_dir(SHARED)


@needs_shared
def test_missing_from_mirror_folder_names_the_file(monkeypatch, tmp_path):
    mirror = tmp_path / "mirror"
    shutil.copytree(SHARED / "table1", mirror / "table1")
    monkeypatch.setenv("DIP_DATA_MIRROR", str(mirror))
    with pytest.raises(DipError, match=r"1 data file\(s\) missing and not downloadable: kate_mask \(.*not found"):
        data.fetch(["house", "kate_mask"])
    assert _cache_files(tmp_path) == ["table1/house.png"]


@needs_shared
def test_import_cli(tmp_path, capsys):
    src = tmp_path / "downloads"
    (src / "table1").mkdir(parents=True)
    (src / "nested").mkdir()
    shutil.copy(SHARED / "table1/house.png", src / "table1/house.png")  # by relative path
    shutil.copy(SHARED / "dip/vase.png", src / "nested/vase.png")  # by basename
    shutil.copy(SHARED / "table1/lena.png", src / "Lena.png")  # by its name in the source repository
    (src / "boat.png").write_bytes(b"wrong bytes")  # right name, wrong content: not imported
    assert main(["data", "import", str(src)]) == 0
    out = capsys.readouterr().out
    assert "imported 3 file(s)" in out and "still missing 16:" in out and "boat" in out.split("still missing")[1]
    verified = {e.name for e in data.registry() if data.is_verified(e)}
    assert verified == {"house", "vase", "lena"}
    assert main(["data", "list"]) == 0
    listing = capsys.readouterr().out
    assert "3/19 verified" in listing and any(
        ln.split()[0] == "boat" and ln.split()[-2:] == ["no", "no"] for ln in listing.splitlines()[2:-1]
    )
    with pytest.raises(DipError, match="not a folder"):
        data.import_dir(tmp_path / "nope")


# ---------------------------------------------------------------- loaders


@needs_shared
def test_loaders_return_native_sizes(monkeypatch):
    monkeypatch.setenv("DIP_DATA_MIRROR", str(SHARED))
    manifest = _manifest()
    channels = {"L": 1, "RGB": 3}
    table = data.load_table1()
    assert [n for n, _ in table] == [n for n, _ in data.TABLE1_ORDER]
    for name, img in table:
        m = manifest[name]
        assert img.shape == (1, int(m["height"]), int(m["width"])) and img.dtype == np.float32
        assert 0 <= img.min() and img.max() <= 1 and img.max() > 0.5
    assert [n for n, _ in data.load_table1(["Montage", "C.man", "barbara"])] == ["barbara", "cameraman", "montage"]
    with pytest.raises(DipError, match="not a Table-1 image: kate"):
        data.load_table1(["kate"])
    for name, mask_name in data.EXAMPLES.items():
        img, mask = data.load_example(name)
        m = manifest[name]
        assert img.shape == (channels[m["mode"]], int(m["height"]), int(m["width"])) and img.dtype == np.float32
        if mask_name is None:
            assert mask is None
        else:
            assert mask.shape == (1, int(m["height"]), int(m["width"]))
            assert set(np.unique(mask)) == {0.0, 1.0} and 0 < mask.mean() < 1
    with pytest.raises(DipError, match="unknown example"):
        data.load_example("lena")


def test_load_embedded():
    gray = data.load_embedded()
    assert [n for n, _ in gray] == list(data.EMBEDDED_GRAY)
    assert all(a.ndim == 3 and a.shape[0] == 1 and a.dtype == np.float32 for _, a in gray)
    rgb = dict(data.load_embedded("rgb"))
    assert rgb["astronaut_rgb"].shape == (3, 512, 512) and rgb["coffee"].shape == (3, 400, 600)
    for _, a in gray + list(rgb.items()):
        assert 0 <= a.min() and a.max() <= 1 and a.std() > 0.05
    # grayscale astronaut is the luma of the RGB one, not a channel of it
    luma = 0.2125 * rgb["astronaut_rgb"][0] + 0.7154 * rgb["astronaut_rgb"][1] + 0.0721 * rgb["astronaut_rgb"][2]
    assert np.abs(dict(gray)["astronaut"][0] - luma).max() < 1e-3
    with pytest.raises(DipError, match="unknown embedded image 'lena'"):
        data.load_embedded(["lena"])
    assert data.EMBEDDED_LABEL == "embedded set, not comparable to the paper"
