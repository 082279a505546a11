"""reproduce on Dask: a 2-worker LocalCluster on loopback stores what the serial path stores, a killed
worker loses nothing, Ctrl-C keeps what is finished and the resume is exact (tiny CPU runs); the local
cluster lets in only its owner (TLS), and --scheduler takes only a secured or a local address."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("distributed")

from dip_lib.report import runner  # noqa: E402
from dip_lib.report.cluster import open_client, run_all_dask  # noqa: E402
from dip_lib.report.runs import Run, pairs  # noqa: E402
from dip_lib.report.store import ResultStore  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NET = pairs(channels_down=(8, 8, 8), channels_skip=(4, 4, 4), channels_up=(8, 8, 8))
TIMING = {"wall_time", "elapsed", "ms_per_iteration", "date", "environment"}


def tiny_runs(n: int = 2, **kw) -> list[Run]:
    """48 px crops of the embedded camera image, 8-filter networks, 30 iterations (as test_experiments)."""
    base = dict(
        experiment="table1",
        profile="smoke",
        image="camera",
        source="embedded",
        crop=48,
        mask="bernoulli",
        preset="table1-seed",
        net=NET,
        iterations=30,
        log_every=3,
    )
    base.update(kw)
    return [Run(**{"mask_seed": k, "seed": k, **base}) for k in range(n)]


def long_run() -> Run:
    """One 600-iteration run: still computing when the 30-iteration ones are stored."""
    return tiny_runs(1, iterations=600, mask_seed=5)[0]


def plan_runs() -> list[Run]:
    """Three DIP runs and a CPU peer, as a profile's plan mixes them."""
    return tiny_runs(3) + [replace(tiny_runs(1)[0], method="biharmonic", preset="")]


def comparable(store: ResultStore, run: Run) -> dict:
    """A stored record without what depends on when and where it ran."""

    def strip(obj):
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items() if k not in TIMING}
        if isinstance(obj, list):
            return [strip(v) for v in obj]
        return obj

    return strip(json.loads(store.path(run).read_text()))


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ".locks" not in p.parts)


@pytest.fixture(scope="module")
def serial(tmp_path_factory) -> ResultStore:
    """The plan's runs computed the serial way (workers=1, no Dask)."""
    store = ResultStore(tmp_path_factory.mktemp("serial"))
    out = runner.run_all(plan_runs(), store, progress=False)
    assert not out.failed
    return store


@pytest.fixture(scope="module")
def client():
    with open_client(2, device_type="cpu", dashboard=False) as c:
        c.wait_for_workers(2, timeout=120)
        yield c


def test_two_workers_store_what_the_serial_path_stores(tmp_path, serial, client):
    runs = plan_runs()
    diverging = tiny_runs(1, lr=1e30, guard=False, mask_seed=9)[0]
    store = ResultStore(tmp_path)
    out = run_all_dask(runs + [diverging], store, client, progress=False)
    assert sorted(r.run_id for r in out.computed) == sorted(r.run_id for r in runs)
    assert [r for r, _ in out.failed] == [diverging] and "diverged" in out.failed[0][1]
    assert not [f for f in files(tmp_path) if diverging.run_id in f]
    for r in runs:
        assert comparable(store, r) == comparable(serial, r)
    assert files(tmp_path) == files(serial.root)  # the same files: no temp file, no unclaimed image
    assert not run_all_dask(runs, store, client, progress=False).computed  # stored runs are not recomputed


def test_budget_stops_submitting_and_reports_the_rest(tmp_path, client):
    runs = tiny_runs(2)
    out = run_all_dask(runs, ResultStore(tmp_path), client, budget_seconds=0, progress=False)
    assert out.remaining == runs and not out.computed and not files(tmp_path)


HOLDER = """
import sys, time
from filelock import FileLock
lock = FileLock(sys.argv[1])
lock.acquire()
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_a_run_locked_by_another_process_is_left_to_it_then_taken_over(tmp_path, client):
    """Another reproduce holds a run's lock and exits without storing it: this one waits, then computes it."""
    store = ResultStore(tmp_path)
    held, free = tiny_runs(2)
    lock_path = store.lock(held).lock_file
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, lock_path, "3"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        out = run_all_dask([held, free], store, client, progress=False)
    finally:
        holder.kill()
        holder.wait()
    assert [r.run_id for r in out.computed] == [free.run_id, held.run_id]
    assert all(store.exists(r) for r in (held, free))


def test_a_killed_worker_loses_only_its_run_which_completes_elsewhere(tmp_path, client):
    long = long_run()
    runs = [long] + tiny_runs(2)
    store = ResultStore(tmp_path)
    killed: list[int] = []

    def kill_the_worker_computing_long() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            for addr, keys in client.processing().items():
                if any(str(k).startswith(f"table1-{long.run_id}") for k in keys):
                    time.sleep(1.0)  # well into the fit
                    pid = client.run(os.getpid, workers=[addr])[addr]
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_the_worker_computing_long, daemon=True)
    killer.start()
    out = run_all_dask(runs, store, client, progress=False)
    killer.join(timeout=5)
    assert killed, "the worker computing the long run was never seen"
    assert not out.failed and sorted(r.run_id for r in out.computed) == sorted(r.run_id for r in runs)
    assert all(store.exists(r) for r in runs)
    assert sorted(p.stem for p in store.folder(long).glob("*.json")) == sorted(r.run_id for r in runs)
    assert not list(tmp_path.rglob("*.tmp"))
    client.wait_for_workers(2, timeout=120)  # the nanny restarts the killed one


CHILD = """
import json, sys
from dip_lib.report import runner
from dip_lib.report.runs import Run
from dip_lib.report.store import ResultStore
runs = [Run.from_dict(d) for d in json.loads(sys.argv[2])]
runner.run_all(runs, ResultStore(sys.argv[1]), workers=2, progress=False)
"""


def test_ctrl_c_keeps_finished_runs_and_the_resume_is_exact(tmp_path, serial):
    # the long run first, so that work is still in flight when the first short run is stored: without it a
    # loaded machine could let the child finish all runs between two polls and the Ctrl-C land on its exit
    long = long_run()
    runs = [long] + plan_runs()
    store = ResultStore(tmp_path)
    # a session of its own, so that Ctrl-C can reach its whole process group, workers included, as a terminal's does
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path), json.dumps([r.to_dict() for r in runs])],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while not list(tmp_path.rglob("*.json")) and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(child.pid, signal.SIGINT)
        _, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    assert child.returncode != 0 and "KeyboardInterrupt" in err, err[-2000:]
    assert err.count("Traceback") == 1, err[-2000:]  # the client's only: the workers leave Ctrl-C to it
    for _ in range(100):  # the workers are gone with it
        try:
            os.killpg(child.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("worker processes outlived the interrupted reproduce")
    stored = [r for r in runs if store.exists(r)]
    assert 1 <= len(stored) < len(runs), "interrupted after the first run was stored, before the last"
    assert not list(tmp_path.rglob("*.tmp"))
    claimed = {name for r in stored for name in json.loads(store.path(r).read_text())["images"].values()}
    assert {str(p.relative_to(store.folder(runs[0]))) for p in store.folder(runs[0]).rglob("*.png")} == claimed
    before = {r.run_id: store.path(r).stat().st_mtime_ns for r in stored}
    out = runner.run_all(runs, store, progress=False)  # the resume
    assert sorted(r.run_id for r in out.computed) == sorted(r.run_id for r in runs if r not in stored)
    assert {r.run_id: store.path(r).stat().st_mtime_ns for r in stored} == before
    for r in plan_runs():
        assert comparable(store, r) == comparable(serial, r)


OUTSIDER = """
import os, sys
from distributed import Client
from distributed.security import Security
kw = {"security": Security.temporary()} if sys.argv[2] == "own-cert" else {}
try:
    with Client(sys.argv[1], timeout=20, **kw) as c:
        print("ran on", len(c.run(os.getpid)), "workers")
except (OSError, TypeError) as exc:  # refused at the TLS handshake (a CommClosedError), or no TLS context at all
    print("refused:", type(exc).__name__)
"""


def test_an_outside_client_cannot_run_code_on_the_local_cluster(client, tmp_path):
    """The cluster of ``reproduce --workers N`` speaks TLS with credentials made for the run: another
    process without them (a plain client, one over tcp://, one with a certificate of its own) is
    refused; one given them (in its dask config) runs code, so the credentials are what keeps it out.
    Each in a process of its own, as the attack came (and a refused client can break the next one's
    event loop in the same process)."""
    address = client.scheduler.address
    assert address.startswith("tls://127.0.0.1:")
    sec = client.security
    insider = {
        f"DASK_{key.upper().replace('.', '__').replace('-', '_')}": value
        for key, value in _tls_config(tmp_path, sec.tls_ca_file, sec.tls_client_cert, sec.tls_client_key).items()
    }
    attempts = {
        "plain": (address, "plain", {}),
        "tcp": (address.replace("tls://", "tcp://"), "plain", {}),
        "own certificate": (address, "own-cert", {}),
        "the run's credentials": (address, "plain", insider),
    }
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-c", OUTSIDER, addr, how],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, **env},
        )
        for name, (addr, how, env) in attempts.items()
    }
    said = {name: p.communicate(timeout=120)[0].strip() for name, p in procs.items()}
    assert said.pop("the run's credentials") == "ran on 2 workers"
    assert all(line.startswith("refused:") for line in said.values()), said


def _tls_config(tmp_path: Path, ca: str | None, cert: str | None, key: str | None) -> dict:
    """The dask config of a user's TLS credentials (PEM files), as README's --scheduler section has it."""
    config = {}
    for name, pem in (("ca-file", ca), ("client.cert", cert), ("client.key", key)):
        path = None
        if pem is not None:
            path = tmp_path / f"{name}.pem"
            path.write_text(pem)
        config[f"distributed.comm.tls.{name}"] = None if pem is None else str(path)
    return config


def test_a_tls_scheduler_is_used_with_the_credentials_in_the_dask_config(client, tmp_path):
    import dask

    sec = client.security  # the cluster's: here they play the user's credentials for a secured cluster
    with dask.config.set(_tls_config(tmp_path, sec.tls_ca_file, sec.tls_client_cert, sec.tls_client_key)):
        with open_client(scheduler=client.scheduler.address) as c:
            assert c.submit(sum, [1, 2], pure=False).result() == 3


def test_an_unsecured_scheduler_address_is_refused_in_one_line_before_any_work(tmp_path, capsys):
    """Another host over plain tcp:// (or no scheme, which is tcp://) would let anyone who reaches it run
    code as the user; tls:// without credentials cannot connect. Nothing is contacted or computed."""
    import dask

    from dip_lib.cli import main

    base = ["reproduce", "--profile", "smoke", "--only", "optim", "--results-dir", str(tmp_path)]
    unencrypted = "error: refusing the unencrypted scheduler address"
    absent = _tls_config(tmp_path, None, None, None)  # the keys, each set to a file that is not there
    cases = [
        ("tcp://10.1.2.3:8786", {}, unencrypted),
        ("node17:8786", {}, unencrypted),
        ("tls://10.1.2.3:8786", dict.fromkeys(absent), "error: --scheduler tls://10.1.2.3:8786 needs"),
        ("tls://10.1.2.3:8786", {k: str(tmp_path / "absent.pem") for k in absent}, "error: cannot read"),
    ]
    for address, config, why in cases:
        t0 = time.perf_counter()
        with dask.config.set(config):
            assert main(base + ["--scheduler", address]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(why), (address, err)
        assert time.perf_counter() - t0 < 5
    assert not list(tmp_path.rglob("*.json"))


def test_bad_worker_options_are_refused_in_one_line_before_any_work(tmp_path, capsys, monkeypatch, data_files):
    from dip_lib.cli import main
    from dip_lib.report import cluster

    base = ["reproduce", "--profile", "smoke", "--only", "optim", "--results-dir", str(tmp_path)]
    assert main(base + ["--workers", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --workers must be a positive integer, got 0"
    with pytest.raises(SystemExit) as exc:
        main(base + ["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"])
    assert exc.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 1)
    assert main(base + ["--scheduler", "tcp://127.0.0.1:1"]) == 2  # nothing listens on port 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot reach the Dask scheduler at tcp://127.0.0.1:1")
    assert not list(tmp_path.rglob("*.json"))


SERIAL = """
import json, sys
from dip_lib.report import runner
from dip_lib.report.runs import Run
from dip_lib.report.store import ResultStore
out = runner.run_all([Run.from_dict(json.loads(sys.argv[2]))], ResultStore(sys.argv[1]), workers=1, progress=False)
assert out.computed
print(sorted(m for m in sys.modules if m.split(".")[0] in ("dask", "distributed")))
"""


def test_the_serial_path_imports_no_dask(tmp_path):
    run = tiny_runs(1)[0]
    proc = subprocess.run(
        [sys.executable, "-c", SERIAL, str(tmp_path), json.dumps(run.to_dict())],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_a_heartbeat_to_a_closed_scheduler_is_not_a_second_traceback():
    """At Ctrl-C under load the scheduler may close before its workers: their heartbeat failure is
    dropped (the client reports the interruption), any other worker error is kept."""
    import logging

    from distributed.comm.core import CommClosedError

    from dip_lib.report.cluster import _scheduler_gone

    def record(msg, exc):
        return logging.LogRecord("distributed.worker", logging.ERROR, __file__, 1, msg, (), (type(exc), exc, None))

    assert not _scheduler_gone(record("Failed to communicate with scheduler during heartbeat.", CommClosedError("x")))
    assert _scheduler_gone(record("Failed to communicate with scheduler during heartbeat.", OSError("disk")))
    assert _scheduler_gone(record("Compute Failed", CommClosedError("x")))
