"""The runner behind the notebooks and ``reproduce``: compute runs, store them, load them back.

Each run (``runs.Run``) is computed on its own numerics, saved as soon as it finishes
(``store.ResultStore``), and never recomputed while a valid record exists, so an interrupted
reproduction resumes where it stopped. Several ``reproduce`` processes on one store share the work
through per-run locks. A run that fails (a fit that diverges, a missing file) is reported and
stored never.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Iterable

from tqdm.auto import tqdm

from ..core.device import resolve_device
from ..core.errors import DipError
from .compute import (
    Outcome,
    batch_size,
    batches,
    describe,
    duration,
    estimate_seconds,
    execute,
    execute_batch,
    fetch_data,
    prepare,
    prior_seconds,
)
from .registry import EXPERIMENTS, get_experiment, plan
from .runs import Run, get_profile
from .store import ResultStore

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- many runs


def run_all(
    runs: list[Run],
    store: ResultStore | None = None,
    budget_seconds: float | None = None,
    batch: int | str = "auto",
    progress: bool = True,
    workers: int = 1,
    scheduler: str | None = None,
) -> Outcome:
    """Compute every run without a valid stored record, in plan order, saving each at once.

    With a budget, no new run (or batch) starts once the time spent plus its estimated time (the
    slowest measured seconds per second of the FLOP prior so far) would pass it. Runs locked by
    another process are left to it and waited for at the end; a run that fails is reported in the
    outcome, never stored.
    ``workers`` > 1 or a ``scheduler`` address computes them on Dask (``dip_lib.report.cluster``).
    """
    store = store or ResultStore()
    if budget_seconds is not None and not budget_seconds >= 0:
        raise DipError(f"--budget-seconds must be a number >= 0, got {budget_seconds}")
    if (workers != 1 or scheduler) and store.missing(runs):
        from .cluster import open_client, run_all_dask

        device_type = dict(runs[0].numerics).get("device", "cpu") if runs else "cpu"
        with open_client(workers, scheduler, device_type, dashboard=False) as client:
            return run_all_dask(runs, store, client, budget_seconds, batch, progress)
    outcome = Outcome()
    todo = prepare(runs, store, budget_seconds)
    if not todo:
        return outcome
    size = batch_size(batch)
    groups = batches(todo, size)
    started, rate = time.perf_counter(), 0.0  # rate: the slowest measured seconds per prior second so far
    bar = tqdm(total=len(todo), desc="runs", disable=not progress)
    deferred: list[list[Run]] = []
    try:
        for group in groups:
            cost = sum(prior_seconds(r) for r in group)
            spent = time.perf_counter() - started
            expected = rate * cost if rate else cost
            if budget_seconds is not None and (spent > budget_seconds or spent + expected > budget_seconds):
                outcome.remaining.extend(r for g in groups[groups.index(group) :] for r in g)
                log.warning(
                    "budget of %.0f s: stopping after %.0f s; %d runs remain",
                    budget_seconds,
                    spent,
                    len(outcome.remaining),
                )
                break
            t0 = time.perf_counter()
            if not _compute_locked(group, store, outcome, wait=False):
                deferred.append(group)
                continue
            if cost > 0:
                rate = max(rate, (time.perf_counter() - t0) / cost)
            bar.update(len(group))
        for group in deferred:  # runs another process was computing: wait for it, take over if it died
            _compute_locked(group, store, outcome, wait=True)
            bar.update(len(group))
    finally:
        bar.close()
    return outcome


def _compute_locked(group: list[Run], store: ResultStore, outcome: Outcome, wait: bool) -> bool:
    """Compute the group's runs that are still missing while holding their locks; False (without
    waiting) when another process holds one of them."""
    locks = []
    try:
        for r in group:
            if wait:
                lock = store.lock(r)
                lock.acquire()
            else:
                lock = store.try_lock(r)
                if lock is None:
                    return False
            locks.append(lock)
        left = [r for r in group if not store.exists(r)]
        if left:
            _execute_and_save(left, store, outcome)
        return True
    finally:
        for lock in locks:
            if lock.is_locked:
                lock.release()


def _execute_and_save(runs: list[Run], store: ResultStore, outcome: Outcome) -> None:
    """Compute runs (together when several) and store each; a failure is recorded, never stored."""
    try:
        done = execute_batch(runs) if len(runs) > 1 else [execute(runs[0], store.resume_dir(runs[0]))]
    except DipError as exc:
        if len(runs) > 1:  # one diverging problem should not sink the others: run them one by one
            for r in runs:
                _execute_and_save([r], store, outcome)
            return
        outcome.failed.append((runs[0], str(exc)))
        log.error("run %s failed: %s", describe(runs[0]), exc)
        return
    for run, (record, images) in zip(runs, done):
        store.save(run, record, images)
        store.resume_state(run).unlink(missing_ok=True)
        outcome.computed.append(run)


# ---------------------------------------------------------------- loading


def load_records(
    runs: list[Run], store: ResultStore | None = None, compute: bool = False, partial: bool = False
) -> list[tuple[Run, dict]]:
    """(run, record) for each run with a valid stored record, in plan order.

    ``compute`` computes the missing ones first (hours at the larger profiles); otherwise a missing
    run is an error listing them, unless ``partial``, which returns what is stored."""
    store = store or ResultStore()
    if compute:
        outcome = run_all(runs, store)
        if outcome.failed:
            raise DipError(
                f"{len(outcome.failed)} runs failed: " + "; ".join(f"{describe(r)}: {e}" for r, e in outcome.failed[:5])
            )
    out, missing = [], []
    for r in runs:
        rec = store.get(r)  # an invalid record is logged once per process, however often it is read
        if rec is None:
            missing.append(r)
        else:
            out.append((r, rec))
    if missing and not partial:
        listing = ", ".join(describe(r) for r in missing[:20])
        more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
        raise DipError(f"{len(missing)} of {len(runs)} runs have no stored result in {store.root}: {listing}{more}")
    return out


def coverage(
    runs: list[Run], store: ResultStore | None = None, records: list[tuple[Run, dict]] | None = None
) -> dict[str, Any]:
    """How much of a plan is stored: counts, the missing runs, the seeds and images with stored runs,
    the images with no stored run and those with only some of their runs stored. ``records`` (as
    ``load_records(..., partial=True)`` returned them) saves reading every record again."""
    if records is None:
        missing = (store or ResultStore()).missing(runs)
    else:
        have = {r.run_id for r, _ in records}
        missing = [r for r in runs if r.run_id not in have]
    gone = set(missing)
    stored = [r for r in runs if r not in gone]
    images = list(dict.fromkeys(r.image for r in runs))
    have = {r.image for r in stored}
    return {
        "planned": len(runs),
        "stored": len(stored),
        "missing": missing,
        "seeds": sorted({r.seed for r in stored}),
        "planned_seeds": sorted({r.seed for r in runs}),
        "images": [i for i in images if i in have],
        "missing_images": [i for i in images if i not in have],
        "incomplete_images": sorted({r.image for r in missing} & have),
    }


# ---------------------------------------------------------------- reproduce


def reproduce(
    profile: str,
    only: Iterable[str] | None = None,
    device: str | None = None,
    budget_seconds: float | None = None,
    results_dir: str | Path = "results",
    progress: bool = True,
    workers: int | None = 1,
    scheduler: str | None = None,
    seeds: Iterable[int] | None = None,
) -> dict[str, Outcome]:
    """Compute every missing run of the chosen experiments (resumable); returns each one's outcome.
    ``seeds``: these seeds instead of each plan's own.

    ``workers``: 1 computes here, one run after another; N > 1 on a local Dask cluster of N workers;
    None picks (one per idle core, or per GPU). ``scheduler``: the address of an existing Dask cluster."""
    if budget_seconds is not None and not (
        isinstance(budget_seconds, (int, float)) and budget_seconds >= 0 and not math.isnan(budget_seconds)
    ):
        raise DipError(f"--budget-seconds must be a number >= 0, got {budget_seconds}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise DipError(f"--workers must be a positive integer, got {workers}")
    if seeds is not None:
        seeds = tuple(seeds)
        if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
            raise DipError(f"--seeds must be integers >= 0, got {' '.join(map(str, seeds)) or 'none'}")
    if workers not in (None, 1) and scheduler:
        raise DipError("--workers and --scheduler exclude each other: the cluster at --scheduler has its own workers")
    if scheduler:
        from .cluster import check_scheduler

        check_scheduler(scheduler)  # an unsecured address is refused before any work
    chosen = list(only) if only else list(EXPERIMENTS)
    if device is not None:
        fixed = [e for e in chosen if not get_experiment(e).numerics]
        if fixed:  # their run ids name CPU numerics: --device would run the same runs, not GPU ones
            raise DipError(
                f"--device does not apply to {', '.join(fixed)}: its runs fix their numerics (bf16 on one CPU thread)"
            )
        device = resolve_device(device).type
    store = ResultStore(results_dir)
    plans = {exp: plan(exp, profile, seeds=seeds, device=device) for exp in chosen}
    missing = [r for runs in plans.values() for r in store.missing(runs)]
    fetch_data(missing)  # all of it before the first fit
    if missing and progress:
        print(_estimate_line(profile, device, missing, store, chosen), flush=True)
    elif progress:  # say so: a silent run looks like one that did not look
        total = sum(len(runs) for runs in plans.values())
        print(f"nothing to compute: all {total} runs of {', '.join(chosen)} are stored in {store.root / profile}")
    if missing and budget_seconds != 0 and (scheduler or workers != 1):
        from . import cluster

        device_type = device or get_profile(profile).device
        workers = None if scheduler else min(workers or cluster.auto_workers(device_type), len(missing))
        if scheduler or workers > 1:
            return cluster.reproduce(plans, store, workers, scheduler, device_type, budget_seconds, progress)
    started = time.perf_counter()
    outcomes: dict[str, Outcome] = {}
    for exp, runs in plans.items():
        left = None if budget_seconds is None else budget_seconds - (time.perf_counter() - started)
        if left is not None and left <= 0:
            outcomes[exp] = Outcome(remaining=store.missing(runs))
            continue
        outcomes[exp] = run_all(runs, store, budget_seconds=left, progress=progress)
    return outcomes


def _estimate_line(
    profile: str, device: str | None, missing: list[Run], store: ResultStore, chosen: Iterable[str] = ()
) -> str:
    """'N runs to compute: about T of compute (...)': the FLOP prior scaled by every stored run of the
    profile and of the extra plans being computed, not only the chosen experiments' (``seconds_model``:
    the scale is the machine's and its load's), or the prior alone when nothing is stored yet."""
    experiments = dict.fromkeys([*EXPERIMENTS, *chosen])  # with a chosen extra plan (fig8, table1-cpu)
    everything = [r for exp in experiments for r in plan(exp, profile, device=device)]
    stored = load_records(everything, store, partial=True)
    seconds = estimate_seconds(missing, stored)
    basis = f"scaled from {len(stored)} stored runs" if stored else "a rough guess: no run is stored yet"
    return f"{len(missing)} runs to compute: {duration(seconds)} of compute on one worker ({basis})"


def cmd_reproduce(args) -> int:
    prof = get_profile(args.profile)
    print(f"profile {prof.name}: {prof.description}")
    outcomes = reproduce(
        args.profile,
        args.only,
        args.device,
        args.budget_seconds,
        args.results_dir,
        workers=args.workers,
        scheduler=args.scheduler,
        seeds=args.seeds,
    )
    failed = 0
    for exp, out in outcomes.items():
        total = len(plan(exp, args.profile, seeds=args.seeds, device=args.device and resolve_device(args.device).type))
        left = len(out.remaining) + len(out.failed)
        print(
            f"{exp}: {total - left} of {total} runs stored"
            + (f", {left} remain (run the same command again to resume)" if left else "")
        )
        for run, why in out.failed:
            print(f"  failed: {describe(run)}: {why}")
        failed += len(out.failed)
    return 1 if failed else 0
