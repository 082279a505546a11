"""Runs on all cores and on a cluster: the report's runs as Dask tasks (``reproduce --workers N``).

Every run is independent, so ``reproduce`` can spread them over a Dask cluster: a ``LocalCluster``
(one single-threaded worker process per idle core, or one per GPU) by default, or an existing
cluster given by its scheduler's address (SLURM or PBS through dask-jobqueue, one worker per GPU
through dask-cuda). A task is one group of runs (one run, or a GPU batch): the worker computes it
with ``compute.execute``/``execute_batch`` and sends back the records and images; the client
alone writes the store, as the serial path does (atomic, under the runs' locks), so workers need no
shared filesystem, and a serial ``reproduce`` on the same store shares the work with this one.

Security: a local cluster runs with TLS credentials made for the run (``Security.temporary``): its
scheduler and workers accept only this client, so no other process on the machine can run code on
them. A ``--scheduler`` address must be secured (``tls://``, with the user's credentials in the
dask config ``distributed.comm.tls.*``) unless it is on this machine (``check_scheduler``).

Faults: a worker that dies loses only the task it was running, which the scheduler runs again on
another worker (a bounded number of times); a run that fails (a diverged fit) is reported and never
stored; Ctrl-C keeps every run already saved and writes no partial file. This module is imported
only when more than one worker (or a scheduler) is asked for: the serial path needs no Dask.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import signal
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.errors import DipError
from .compute import Outcome, batch_size, batches, execute, execute_batch, prepare, prior_seconds
from .compute import describe as describe_run
from .runs import Run
from .store import ResultStore

if TYPE_CHECKING:
    from distributed import Client, Future

log = logging.getLogger(__name__)

RETRIES = 2  # extra attempts of a task that raised something other than a DipError (out of memory, I/O)
ALLOWED_FAILURES = 2  # extra attempts of a task whose worker died under it (local clusters; others keep theirs)
CONNECT_TIMEOUT_S = 30
INSTALL_HINT = "pip install 'dip-inpainting[cluster]'"
ENCRYPTED = ("tls", "wss")  # Dask's schemes with TLS; the others (tcp, ws, ucx) let anyone who reaches them in


def dask_available() -> bool:
    try:
        import distributed  # noqa: F401
    except ImportError:
        return False
    return True


def auto_workers(device_type: str) -> int:
    """The default worker count: one per GPU on CUDA, else one per idle CPU core; 1 without Dask."""
    if not dask_available():
        log.info("Dask is not installed: computing one run after another (%s)", INSTALL_HINT)
        return 1
    if device_type == "cuda" and torch.cuda.is_available():
        return max(1, torch.cuda.device_count())
    from ..core.device import other_cpu_load

    cores = os.cpu_count() or 1
    others = other_cpu_load()
    return max(1, cores if others is None else int(cores - others + 0.5))


# ---------------------------------------------------------------- the cluster


def check_scheduler(address: str) -> None:
    """Refuse, in one line, a scheduler that would let others run code as the user: an unencrypted
    address (tcp://, the default scheme) to another host, or a tls:// one without the user's TLS
    credentials in the dask config. An unencrypted one on this machine is taken (a local test
    cluster, or an SSH tunnel's end)."""
    try:
        from distributed.comm.addressing import parse_address, parse_host_port
        from distributed.security import Security
    except ImportError:
        raise DipError(f"running on several workers needs Dask: {INSTALL_HINT}") from None
    try:
        scheme, location = parse_address(address)
        host = parse_host_port(location)[0] if scheme not in ENCRYPTED else ""
    except ValueError as exc:
        raise DipError(f"--scheduler {address!r} is not a Dask address: {exc}") from None
    if scheme not in ENCRYPTED and not _on_this_machine(host):
        raise DipError(
            f"refusing the unencrypted scheduler address {address}: anyone who can reach it can run code as you; "
            "use tls:// with your TLS credentials in the dask config, or an SSH tunnel to 127.0.0.1 (see README)"
        )
    if scheme in ENCRYPTED:
        try:
            secured = Security().get_connection_args("client")["ssl_context"] is not None
        except (OSError, ValueError) as exc:  # a credential file that is absent or not PEM
            raise DipError(f"cannot read the TLS credentials named in the dask config: {exc}") from None
        if not secured:
            raise DipError(
                f"--scheduler {address} needs your TLS credentials in the dask config: distributed.comm.tls.ca-file, "
                "distributed.comm.tls.client.cert and distributed.comm.tls.client.key (see README)"
            )


def _on_this_machine(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: resolving it would not say who else can reach it
        return False


@contextlib.contextmanager
def open_client(
    workers: int | None = None, scheduler: str | None = None, device_type: str = "cpu", dashboard: bool = True
) -> Iterator[Client]:
    """A Dask client: on the cluster at ``scheduler`` (``check_scheduler``), else on a new local
    cluster of ``workers`` single-threaded worker processes (loopback only, TLS with credentials
    made for it), closed on exit."""
    try:
        from distributed import Client
    except ImportError:
        raise DipError(f"running on several workers needs Dask: {INSTALL_HINT}") from None
    if scheduler:
        check_scheduler(scheduler)
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError, ValueError) as exc:
            raise DipError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
        try:
            yield client
        finally:
            client.close()
        return
    if workers is None or workers < 1:
        raise DipError(f"--workers must be a positive integer, got {workers}")
    with _quiet_dask():
        cluster = _local_cluster(workers, device_type, dashboard)
        try:
            with Client(cluster) as client:
                client.register_plugin(_ignore_ctrl_c())
                yield client
        finally:
            cluster.close()


@contextlib.contextmanager
def _quiet_dask() -> Iterator[None]:
    """The embedded scheduler's and nannies' chatter only with ``-v`` (their errors always)."""
    logger = logging.getLogger("distributed")
    level = logger.level
    if not logging.getLogger("dip_lib").isEnabledFor(logging.INFO):
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _local_cluster(workers: int, device_type: str, dashboard: bool):
    """Dask's default worker environment without MALLOC_TRIM_THRESHOLD_=65536, which made every
    iteration of a small CPU fit give its memory back and fault it in again: 1.5-2.5x slower runs
    here. OMP/MKL/OpenBLAS stay at one thread."""
    import dask

    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):  # None: unset
        return _start_local_cluster(workers, device_type, dashboard)


def _start_local_cluster(workers: int, device_type: str, dashboard: bool):
    from distributed.security import Security

    try:  # TLS with a key and certificate that only this process and its workers hold
        security = Security.temporary()
    except ImportError:
        raise DipError(f"a local Dask cluster needs cryptography for its TLS keys: {INSTALL_HINT}") from None
    kw: dict[str, Any] = dict(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:8787" if dashboard else None,
        silence_logs=logging.ERROR,
        scheduler_kwargs={"allowed_failures": ALLOWED_FAILURES},
        security=security,
    )
    if device_type == "cuda":
        try:  # one worker per GPU, each seeing only its own (CUDA_VISIBLE_DEVICES)
            from dask_cuda import LocalCUDACluster

            kw.pop("processes")
            return LocalCUDACluster(**kw)
        except ImportError:
            pass  # plain workers; each task picks the GPU named by its worker (see _pin_device)
    from distributed import LocalCluster

    return LocalCluster(**kw)


def _ignore_ctrl_c():
    """A worker plugin: local workers leave Ctrl-C (sent to the whole terminal's process group) to
    the client, which cancels their tasks and closes them, instead of each dying with a traceback."""
    from distributed import WorkerPlugin

    class IgnoreCtrlC(WorkerPlugin):
        name = "dip-ignore-ctrl-c"

        def setup(self, worker) -> None:
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            logging.getLogger("distributed.worker").addFilter(_scheduler_gone)

    return IgnoreCtrlC()


def _scheduler_gone(record: logging.LogRecord) -> bool:
    """False for a worker's heartbeat that found the scheduler's connection closed: at Ctrl-C, under
    load, the scheduler can close before its workers, and the client reports the interruption itself
    (one traceback, not one more per worker)."""
    from distributed.comm.core import CommClosedError

    exc = record.exc_info[1] if record.exc_info else None
    return not ("heartbeat" in record.getMessage() and isinstance(exc, CommClosedError))


def describe(client: Client) -> str:
    """One line for the user: where the work runs and where the dashboard is, if any."""
    n = len(client.scheduler_info().get("workers", {}))
    text = f"Dask: {n} workers at {client.scheduler.address}"
    try:
        link = client.dashboard_link
    except Exception:  # no dashboard (bokeh not installed, or switched off)
        link = None
    return text + (
        f"; dashboard {link}" if link and client.scheduler_info().get("services", {}).get("dashboard") else ""
    )


# ---------------------------------------------------------------- one task (on a worker)


def _pin_device(runs: list[Run]) -> None:
    """One CPU thread per worker (the runs' numerics say how many); on a machine with several GPUs
    and plain local workers, worker k uses GPU k."""
    numerics = dict(runs[0].numerics)
    if numerics.get("threads"):
        torch.set_num_threads(int(numerics["threads"]))
    if numerics.get("device") == "cuda" and torch.cuda.is_available() and torch.cuda.device_count() > 1:
        from distributed import get_worker

        try:
            name = get_worker().name
        except ValueError:
            return
        if isinstance(name, int):
            torch.cuda.set_device(name % torch.cuda.device_count())


def compute_group(runs: list[Run], resume_dir: Path | None = None) -> list[tuple[dict, dict[str, np.ndarray]] | str]:
    """Compute a group of runs (together when several, as one batch); for each run its (record,
    images), or the reason it failed. A batch that fails is computed again run by run. A single
    long run saves its state in ``resume_dir`` (when the worker can write it) and resumes from it."""
    _pin_device(runs)
    try:
        return list(execute_batch(runs) if len(runs) > 1 else [execute(runs[0], resume_dir)])
    except DipError as exc:
        if len(runs) > 1:  # one diverging problem should not sink the others
            return [out for r in runs for out in compute_group([r])]
        return [str(exc)]


# ---------------------------------------------------------------- many runs (on the client)


@contextlib.contextmanager
def _uninterrupted() -> Iterator[None]:
    """Hold Ctrl-C until the block ends (a run's files are written whole or not at all)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught and callable(previous):
            previous(signal.SIGINT, None)


def _sizer(runs: list[Run], batch: int | str):
    """Problems per task (one unless an explicit batch is asked for; see compute.batch_size)."""
    return batch_size(batch, cuda=any(dict(r.numerics).get("device") == "cuda" for r in runs) or None)


class _Locks:
    """The store's per-run locks of one group, taken together or not at all."""

    def __init__(self, store: ResultStore, group: list[Run]) -> None:
        self.store, self.group, self.held = store, group, []

    def take(self, wait: bool) -> bool:
        for r in self.group:
            if wait:
                lock = self.store.lock(r)
                lock.acquire()
            else:
                lock = self.store.try_lock(r)
                if lock is None:
                    self.release()
                    return False
            self.held.append(lock)
        return True

    def release(self) -> None:
        for lock in self.held:
            if lock.is_locked:
                lock.release()
        self.held = []


class _Slots:
    """Tasks in flight: one per worker thread (at least one, so that an empty cluster that scales up
    gets work). The scheduler is asked at most every ``refresh_s`` seconds, not once per result; when
    it cannot answer (a cluster going down under Ctrl-C), the last count stands."""

    def __init__(self, client: Client, refresh_s: float = 5.0) -> None:
        self.client, self.refresh_s = client, refresh_s
        self.count, self.asked = 1, float("-inf")

    def __call__(self) -> int:
        now = time.monotonic()
        if now - self.asked >= self.refresh_s:
            self.asked = now
            with contextlib.suppress(OSError):  # distributed's CommClosedError is an OSError
                self.count = max(1, sum(self.client.nthreads().values()))
        return self.count


def run_all_dask(
    runs: list[Run],
    store: ResultStore,
    client: Client,
    budget_seconds: float | None = None,
    batch: int | str = "auto",
    progress: bool = True,
) -> Outcome:
    """``experiments.run_all`` on a Dask cluster: the same runs, locks, budget rule and outcome.

    Groups are submitted as workers free up (one task per worker thread), each under its runs'
    locks; results are saved here as they arrive. With a budget, no new task starts once the time
    spent plus its estimated time (the slowest measured seconds per second of the FLOP prior so far)
    would pass it; tasks already running finish and are saved.
    """
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    outcome = Outcome()
    todo = prepare(runs, store, budget_seconds)
    if not todo:
        return outcome
    pending = deque(batches(todo, _sizer(todo, batch)))
    deferred: deque[list[Run]] = deque()
    flying: dict[Future, tuple[list[Run], _Locks, float]] = {}
    started = time.perf_counter()
    rate = 0.0  # the slowest measured seconds per prior second so far (the budget rule)
    spent_cost = spent_wall = 0.0  # for the ETA
    left_cost = sum(prior_seconds(r) for r in todo)
    slots = _Slots(client)
    stop = False
    done = as_completed()
    fmt = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"
    bar = tqdm(total=len(todo), desc="runs", disable=not progress, bar_format=fmt)

    def eta() -> None:
        if spent_cost > 0:
            seconds = left_cost * spent_wall / spent_cost / slots()
            bar.set_postfix_str(f"eta {seconds / 60:.0f} min" if seconds >= 90 else f"eta {seconds:.0f} s")

    def submit(group: list[Run], wait: bool) -> bool:
        """Submit a group under its locks; False when another process holds one of them."""
        nonlocal stop
        cost = sum(prior_seconds(r) for r in group)
        spent = time.perf_counter() - started
        if budget_seconds is not None and (spent > budget_seconds or spent + rate * cost > budget_seconds):
            stop = True
            return True
        locks = _Locks(store, group)
        if not locks.take(wait):
            return False
        left = [r for r in group if not store.exists(r)]  # another process may have stored them meanwhile
        if not left:
            locks.release()
            bar.update(len(group))
            return True
        key = f"{group[0].experiment}-{group[0].run_id}-{uuid.uuid4().hex[:6]}"
        future = client.submit(compute_group, left, store.resume_dir(left[0]), key=key, pure=False, retries=RETRIES)
        flying[future] = (left, locks, cost)
        done.add(future)
        bar.update(len(group) - len(left))
        return True

    def receive(future: Future) -> None:
        nonlocal rate, spent_cost, spent_wall, left_cost
        group, locks, cost = flying.pop(future)
        try:
            try:
                results = future.result()
            except KilledWorker as exc:
                results = [f"its worker died {exc.allowed_failures + 1} times while computing it"] * len(group)
            except Exception as exc:  # raised on the worker by something other than bad input, after retries
                results = [f"{type(exc).__name__}: {exc}"] * len(group)
            with _uninterrupted():
                for run, res in zip(group, results):
                    if isinstance(res, str):
                        outcome.failed.append((run, res))
                        log.error("run %s failed: %s", describe_run(run), res)
                    else:
                        store.save(run, *res)
                        store.resume_state(run).unlink(missing_ok=True)
                        outcome.computed.append(run)
        finally:
            locks.release()
        wall = max((res[0].get("wall_time", 0.0) for res in results if not isinstance(res, str)), default=0.0)
        if cost > 0 and wall > 0:
            rate = max(rate, wall / cost)
            spent_cost += cost
            spent_wall += wall
        left_cost -= cost
        bar.update(len(group))
        eta()

    try:
        while True:
            while not stop and len(flying) < slots() and pending:
                group = pending.popleft()
                if not submit(group, wait=False):
                    deferred.append(group)  # another process is computing it: come back to it later
                elif stop:
                    pending.appendleft(group)
            if not stop and not pending and deferred:
                # only groups that other processes held are left: try each again; wait for one only when
                # nothing of ours is in flight (we then hold no lock, so waiting cannot deadlock)
                for _ in range(len(deferred)):
                    if stop or len(flying) >= slots():
                        break
                    group = deferred.popleft()
                    if not submit(group, wait=False):
                        deferred.append(group)
                    elif stop:
                        deferred.appendleft(group)
                if deferred and not flying and not stop:
                    group = deferred.popleft()
                    submit(group, wait=True)
                    if stop:
                        deferred.appendleft(group)
            if not flying:
                if stop or not (pending or deferred):
                    break
                continue
            receive(next(done))
    finally:
        for future, (_, locks, _) in list(flying.items()):
            future.cancel()
            locks.release()
        bar.close()
    if stop:
        outcome.remaining = [r for g in (*pending, *deferred) for r in g]
        log.warning(
            "budget of %.0f s: stopping after %.0f s; %d runs remain",
            budget_seconds,
            time.perf_counter() - started,
            len(outcome.remaining),
        )
    return outcome


def split(outcome: Outcome, experiments: list[str]) -> dict[str, Outcome]:
    """One outcome per experiment, from an outcome over the runs of several."""
    return {
        exp: Outcome(
            computed=[r for r in outcome.computed if r.experiment == exp],
            failed=[(r, why) for r, why in outcome.failed if r.experiment == exp],
            remaining=[r for r in outcome.remaining if r.experiment == exp],
        )
        for exp in experiments
    }


def reproduce(
    plans: dict[str, list[Run]],
    store: ResultStore,
    workers: int | None,
    scheduler: str | None,
    device_type: str,
    budget_seconds: float | None,
    progress: bool,
) -> dict[str, Outcome]:
    """``experiments.reproduce`` on Dask: the runs of every chosen experiment in one pass (no barrier
    between experiments), on ``workers`` local workers or the cluster at ``scheduler``."""
    with open_client(workers, scheduler, device_type, dashboard=progress) as client:
        if progress:
            print(describe(client), flush=True)
        outcome = run_all_dask(
            [r for runs in plans.values() for r in runs], store, client, budget_seconds, progress=progress
        )
    return split(outcome, list(plans))
