"""The runner behind the notebooks and ``reproduce``: compute runs, store them, load them back.

Each run (``runs.Run``) is computed on its own numerics, saved as soon as it finishes
(``store.ResultStore``), and never recomputed while a valid record exists, so an interrupted
reproduction resumes where it stopped. Several ``reproduce`` processes on one store share the work
through per-run locks. A run that fails (a fit that diverges, a missing file) is reported and
stored never.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from tqdm.auto import tqdm

from .device import resolve_device
from .errors import DipError
from .metrics import hole_psnr, psnr, ssim
from .runs import EXPERIMENTS, Run, fit_overrides, get_profile, load_problem, plan
from .store import ResultStore, environment

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- one run


def _setup(run: Run, shape: tuple[int, int, int]):
    from .presets import get_preset

    overrides = fit_overrides(run)
    return get_preset(run.preset).setup(shape, seed=overrides.pop("seed"), net=dict(run.net), **overrides)


def _masked_psnr(image: np.ndarray, mask: np.ndarray) -> float | None:
    """PSNR of the masked input (None when nothing is masked: it would be infinite)."""
    return psnr(image, image * mask) if (np.asarray(mask) < 0.5).any() else None


def _dip_record(result, image: np.ndarray, mask: np.ndarray, stopper, drops, params: int) -> tuple[dict, dict]:
    s = result.summary()
    s.update(
        params=params,
        masked_psnr=_masked_psnr(image, mask),
        oracle_psnr=result.best_psnr,
        oracle_iteration=result.best_iteration,
        oracle_hole_psnr=result.best_hole_psnr,
        ema_hole_psnr=hole_psnr(image, result.ema, mask),
        ms_per_iteration=1000 * result.wall_time / max(1, result.iterations_run),
    )
    images = {"final": result.final, "best": result.best, "ema": result.ema, "observed": image * mask}
    es: dict[str, Any] = {
        "window": stopper.window,
        "patience": stopper.patience,
        "iteration": stopper.best_iteration,
        "stop_iteration": stopper.stop_iteration,
        "psnr": None,
        "psnr_clean": None,
    }
    if stopper.best_output is not None:
        es["psnr"] = psnr(image, stopper.best_output)
        images["eswmv"] = stopper.best_output
        # the clean output at the first check at or after the iterate ES-WMV chose
        hist = result.history
        at = next((k for k, it in enumerate(hist.iteration) if it >= stopper.best_iteration), len(hist.iteration) - 1)
        es["psnr_clean"], es["clean_iteration"] = hist.psnr_clean[at], hist.iteration[at]
    drop_list = []
    for k, d in enumerate(drops.result()):
        drop_list.append(
            {
                "start_iteration": d.start_iteration,
                "bottom_iteration": d.bottom_iteration,
                "from_psnr": d.from_psnr,
                "to_psnr": d.to_psnr,
                "image": f"drop{k}",
            }
        )
        images[f"drop{k}"] = d.output
    return {"summary": s, "history": result.history.to_dict(), "eswmv": es, "drops": drop_list}, images


def _callbacks(iterations: int):
    from .drops import DropRecorder
    from .stopping import ESWMV

    # record where ES-WMV would stop; the full run continues for the curves
    return ESWMV.for_iterations(iterations, stop=False), DropRecorder()


def execute(run: Run, resume_dir: Path | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Compute one run on its numerics; returns its record and output images (not yet saved).

    ``resume_dir``: a DIP run estimated over ``resume.RESUMABLE_S`` saves its state there every
    ``resume.EVERY_S`` and continues from a state saved there by an interrupted attempt; the caller
    removes it once the run is stored (``ResultStore.resume_state``)."""
    from .nets import count_params
    from .resume import EVERY_S, RESUMABLE_S, SavedState
    from .solver import fit

    image, mask = load_problem(run)
    t0 = time.perf_counter()
    if run.method in ("biharmonic", "csc"):
        from . import peers

        observed = image * mask
        out = (
            peers.biharmonic(observed, mask)
            if run.method == "biharmonic"
            else peers.csc(observed, mask, iterations=run.csc_iterations)
        )
        wall = time.perf_counter() - t0
        record = {
            "summary": {
                "final_psnr": psnr(image, out),
                "final_hole_psnr": hole_psnr(image, out, mask),
                "final_ssim": ssim(image, out),
                "wall_time": wall,
                "masked_psnr": _masked_psnr(image, mask),
                "device": "cpu",
            }
        }
        return _finish(record, run, torch.device("cpu"), wall), {"final": out, "observed": observed}
    net, z, cfg = _setup(run, image.shape)
    stopper, drops = _callbacks(cfg.iterations)
    resume = None
    if resume_dir is not None and cfg.optimizer == "adam" and _prior_seconds(run) > RESUMABLE_S:
        resume = SavedState(Path(resume_dir) / f"{run.run_id}.pt", key=run.run_id, every_s=EVERY_S)
    result = fit(net, z, image * mask, mask, cfg, ground_truth=image, callbacks=[stopper, drops], resume=resume)
    record, images = _dip_record(result, image, mask, stopper, drops, count_params(net))
    return _finish(record, run, resolve_device(cfg.device), time.perf_counter() - t0), images


def _finish(record: dict[str, Any], run: Run, device: torch.device, wall: float, **extra: Any) -> dict[str, Any]:
    """Stamp a record with what identifies it and where and how long it ran."""
    from .runs import spec
    from .store import SCHEMA

    record.update(
        {
            "schema": SCHEMA,
            "run_id": run.run_id,
            "config": run.to_dict(),
            "spec": spec(run),
            "environment": environment(device),
            "wall_time": wall,
            **extra,
        }
    )
    return record


def execute_batch(runs: list[Run]) -> list[tuple[dict, dict]]:
    """Compute DIP runs of one shape and configuration together in one network pass (fit_many)."""
    from .batched import fit_many
    from .nets import count_params

    problems = [load_problem(r) for r in runs]
    nets, inputs, cbs = [], [], []
    for r, (image, _) in zip(runs, problems):
        net, z, cfg = _setup(r, image.shape)
        nets.append(net)
        inputs.append(z)
        cbs.append(list(_callbacks(cfg.iterations)))
    t0 = time.perf_counter()
    results = fit_many(
        nets,
        inputs,
        [im * m for im, m in problems],
        [m for _, m in problems],
        cfg,
        ground_truths=[im for im, _ in problems],
        seeds=[r.seed for r in runs],
        callbacks=cbs,
    )
    wall = time.perf_counter() - t0
    out = []
    for r, (image, mask), res, (stopper, drops), net in zip(runs, problems, results, cbs, nets):
        record, images = _dip_record(res, image, mask, stopper, drops, count_params(net))
        out.append((_finish(record, r, resolve_device(cfg.device), wall, batched=len(runs)), images))
    return out


# ---------------------------------------------------------------- many runs


@dataclass
class Outcome:
    """What ``run_all`` did: runs computed here, found stored (by others too), failed, left for later."""

    computed: list[Run] = field(default_factory=list)
    failed: list[tuple[Run, str]] = field(default_factory=list)
    remaining: list[Run] = field(default_factory=list)


def _describe(r: Run) -> str:
    what = r.label or (r.preset if r.method == "dip" else r.method)
    return f"{r.experiment}/{r.run_id} ({r.image}, {what}, seed {r.seed})"


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
    ``workers`` > 1 or a ``scheduler`` address computes them on Dask (``dip_lib.cluster``).
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
    todo = store.missing(runs)
    if not todo:
        return outcome
    store.check_writable(todo)
    _fetch_data(todo)
    store.clean_leftovers(todo)
    size = _batch_size(batch)
    groups = _group(todo, size)
    started, rate = time.perf_counter(), 0.0  # rate: the slowest measured seconds per prior second so far
    bar = tqdm(total=len(todo), desc="runs", disable=not progress)
    deferred: list[list[Run]] = []
    try:
        for group in groups:
            cost = sum(_prior_seconds(r) for r in group)
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
        log.error("run %s failed: %s", _describe(runs[0]), exc)
        return
    for run, (record, images) in zip(runs, done):
        store.save(run, record, images)
        store.resume_state(run).unlink(missing_ok=True)
        outcome.computed.append(run)


def _batch_size(batch: int | str, cuda: bool | None = None):
    """Problems per network pass. "auto" is one: a grouped pass (``fit_many``) rounds differently in
    the last bits than a single one, and a run's id does not name the batch it ran in, so batching
    would let the same run id hold slightly different numbers. An explicit ``batch`` K batches DIP
    runs of one shape and configuration (``cuda`` is kept for callers that pass it)."""
    if batch != "auto":
        return lambda shape, k=int(batch): k
    return lambda shape: 1


@functools.lru_cache(maxsize=None)
def _shape(image: str, source: str, crop: int | None, resize: int | None) -> tuple[int, ...]:
    if resize:
        return (resize, resize)
    if crop:
        return (crop, crop)
    if source == "table1":
        from . import data

        entry = next(e for e in data.registry() if e.name == image)
        return (int(entry.height), int(entry.width))
    return tuple(load_problem(Run("table1", "smoke", image, source))[0].shape[-2:])


# before any run has been timed, a first run's seconds are guessed from its conv FLOPs at a rate
# this project's machines beat (one CPU core ~100 GFLOP/s fp32; an H100/H200 eager loop ~40 TFLOP/s)
# plus a fixed cost per iteration that does not scale with FLOPs (Python, autograd and kernel
# dispatch over the network's ~70 modules, the checks): ~20 ms for the quick profile's 8-filter nets
# on this project's CPU VM, a few ms on a GPU; so that a short budget does not start a run it cannot finish
PRIOR_FLOPS = {"cpu": 100e9, "cuda": 40e12}
# bf16 autocast on a CPU: 2.0x fp32 per iteration on this project's CPU (results/bench-vm-cpu-levers.json)
PRIOR_BF16_CPU_SPEEDUP = 2.0
PRIOR_OVERHEAD_S = {"cpu": 0.02, "cuda": 0.003}


@functools.lru_cache(maxsize=None)
def _gflop(preset: str, net: tuple, shape: tuple[int, ...]) -> float:
    from .estimate import iteration_gflop
    from .presets import get_preset

    return iteration_gflop(get_preset(preset).net_config(1, **dict(net)), *shape)


def _iterations(run: Run) -> int:
    from .presets import get_preset

    return run.iterations or get_preset(run.preset).iterations


def run_gflop(run: Run) -> float:
    """Training GFLOP of one iteration of a DIP run at its image size (0 for the CPU peers)."""
    if run.method != "dip":
        return 0.0
    return _gflop(run.preset, run.net, _shape(run.image, run.source, run.crop, run.resize))


def _prior_seconds(run: Run) -> float:
    if run.method != "dip":
        return 0.0
    numerics = dict(run.numerics)
    kind = numerics.get("device", "cpu")
    rate = PRIOR_FLOPS.get(kind, PRIOR_FLOPS["cpu"])
    if kind == "cpu" and numerics.get("precision") == "bf16":
        rate *= PRIOR_BF16_CPU_SPEEDUP
    overhead = PRIOR_OVERHEAD_S.get(kind, PRIOR_OVERHEAD_S["cpu"])
    return _iterations(run) * (overhead + run_gflop(run) * 1e9 / rate)


def seconds_model(stored: list[tuple[Run, dict[str, Any]]]):
    """A run's seconds: the prior (iterations x (fixed cost + GFLOP / rate)) scaled by the median ratio
    of measured to prior seconds over the stored DIP runs (the prior's shape, the machine's and its
    load's scale; a median, so that runs slowed down by a busy neighbour do not set it).
    Returns ``f(run) -> seconds``."""
    ratios = []
    for r, rec in stored:
        s = rec.get("summary", {})
        wall = s.get("wall_time")
        if r.method == "dip" and wall and _prior_seconds(r) > 0:
            its = s.get("iterations_run") or _iterations(r)
            ratios.append(wall / max(1, int(rec.get("batched", 1))) / (_prior_seconds(r) * its / _iterations(r)))
    scale = float(np.median(ratios)) if ratios else 1.0
    return lambda run: scale * _prior_seconds(run)


def _batch_key(run: Run) -> tuple:
    return (
        run.experiment,
        run.preset,
        run.net,
        run.iterations,
        run.lr,
        run.optimizer,
        run.guard,
        run.log_every,
        run.crop,
        run.resize,
        run.source,
        run.mask,
        run.target,
        run.numerics,
    )


def _group(runs: list[Run], size) -> list[list[Run]]:
    """Batches of DIP runs that share shape and configuration (at most ``size(shape)`` each), in
    the order of their first run; peers and L-BFGS run alone."""
    groups: dict[tuple, list[list[Run]]] = {}
    order: list[list[Run]] = []
    for r in runs:
        if r.method != "dip" or r.optimizer == "lbfgs" or size((0, 0)) == 1:
            order.append([r])
            continue
        shape = _shape(r.image, r.source, r.crop, r.resize)
        bucket = groups.setdefault((_batch_key(r), shape), [])
        if not bucket or len(bucket[-1]) >= size(shape):
            bucket.append([])
            order.append(bucket[-1])
        bucket[-1].append(r)
    return order


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
                f"{len(outcome.failed)} runs failed: "
                + "; ".join(f"{_describe(r)}: {e}" for r, e in outcome.failed[:5])
            )
    out, missing = [], []
    for r in runs:
        try:
            out.append((r, store.load(r)))
        except FileNotFoundError:
            missing.append(r)
        except DipError as exc:
            log.warning("%s", exc)
            missing.append(r)
    if missing and not partial:
        listing = ", ".join(_describe(r) for r in missing[:20])
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
) -> dict[str, Outcome]:
    """Compute every missing run of the chosen experiments (resumable); returns each one's outcome.

    ``workers``: 1 computes here, one run after another; N > 1 on a local Dask cluster of N workers;
    None picks (one per idle core, or per GPU). ``scheduler``: the address of an existing Dask cluster."""
    if budget_seconds is not None and not (
        isinstance(budget_seconds, (int, float)) and budget_seconds >= 0 and not math.isnan(budget_seconds)
    ):
        raise DipError(f"--budget-seconds must be a number >= 0, got {budget_seconds}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise DipError(f"--workers must be a positive integer, got {workers}")
    if workers not in (None, 1) and scheduler:
        raise DipError("--workers and --scheduler exclude each other: the cluster at --scheduler has its own workers")
    if device is not None:
        device = resolve_device(device).type
    store = ResultStore(results_dir)
    chosen = list(only) if only else list(EXPERIMENTS)
    plans = {exp: plan(exp, profile, device=device) for exp in chosen}
    missing = [r for runs in plans.values() for r in store.missing(runs)]
    _fetch_data(missing)  # all of it before the first fit
    if missing and progress:
        print(_estimate_line(profile, device, missing, store), flush=True)
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


def _estimate_line(profile: str, device: str | None, missing: list[Run], store: ResultStore) -> str:
    """'N runs to compute: about T of compute (...)': the FLOP prior scaled by every stored run of the
    profile, not only the chosen experiments' (``seconds_model``: the scale is the machine's and its
    load's), or the prior alone when nothing is stored yet."""
    from .pages import duration, estimate_seconds

    everything = [r for exp in EXPERIMENTS for r in plan(exp, profile, device=device)]
    stored = load_records(everything, store, partial=True)
    seconds = estimate_seconds(missing, stored)
    basis = f"scaled from {len(stored)} stored runs" if stored else "a rough guess: no run is stored yet"
    return f"{len(missing)} runs to compute: {duration(seconds)} of compute on one worker ({basis})"


def _fetch_data(runs: list[Run]) -> None:
    """Fetch (or verify) the data files the runs need, before any fit."""
    from . import data

    names = list(dict.fromkeys(r.image for r in runs if r.source == "table1"))
    for r in runs:
        if r.source == "dip":
            names += [r.image] + ([data.EXAMPLES[r.image]] if r.mask == "file" and data.EXAMPLES.get(r.image) else [])
    if names:
        data.fetch(list(dict.fromkeys(names)))


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
    )
    failed = 0
    for exp, out in outcomes.items():
        total = len(plan(exp, args.profile, device=args.device and resolve_device(args.device).type))
        left = len(out.remaining) + len(out.failed)
        print(
            f"{exp}: {total - left} of {total} runs stored"
            + (f", {left} remain (run the same command again to resume)" if left else "")
        )
        for run, why in out.failed:
            print(f"  failed: {_describe(run)}: {why}")
        failed += len(out.failed)
    return 1 if failed else 0
