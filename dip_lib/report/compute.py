"""One run, and what a run costs: compute a run on its numerics (``execute``), estimate its
seconds before it runs (the FLOP prior, scaled by the stored runs), and the helpers that the
runners (``runner`` here, ``cluster`` on Dask) share: the outcome they report, grouping,
fetching a run's data."""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.device import resolve_device
from ..core.errors import DipError
from ..core.metrics import hole_psnr, psnr, ssim
from .runs import HOLES, Run, fit_overrides, load_problem
from .store import ResultStore, environment

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- one run


def _setup(run: Run, shape: tuple[int, int, int]):
    from ..core.presets import get_preset

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
    from ..core.drops import DropRecorder
    from ..core.stopping import ESWMV

    # record where ES-WMV would stop; the full run continues for the curves
    return ESWMV.for_iterations(iterations, stop=False), DropRecorder()


def execute(run: Run, resume_dir: Path | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Compute one run on its numerics; returns its record and output images (not yet saved).

    ``resume_dir``: an Adam DIP run saves its state there every ``resume.EVERY_S`` (a shorter run never
    does) and continues from a state saved there by an interrupted attempt, bit-identically; the caller
    removes it once the run is stored (``ResultStore.resume_state``). Every run that outlasts a save can
    resume: a time estimate would decide wrongly (the FLOP prior is several times too fast on a CPU)."""
    from ..core.nets import count_params
    from ..core.resume import EVERY_S, SavedState
    from ..core.solver import fit

    image, mask = load_problem(run)
    t0 = time.perf_counter()
    if run.method in ("biharmonic", "csc"):
        from ..core import peers

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
    if resume_dir is not None and cfg.optimizer == "adam":
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
    from ..core.batched import fit_many
    from ..core.nets import count_params

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


@dataclass
class Outcome:
    """What ``run_all`` did: runs computed here, found stored (by others too), failed, left for later."""

    computed: list[Run] = field(default_factory=list)
    failed: list[tuple[Run, str]] = field(default_factory=list)
    remaining: list[Run] = field(default_factory=list)


def describe(r: Run) -> str:
    what = r.label or (r.preset if r.method == "dip" else r.method)
    return f"{r.experiment}/{r.run_id} ({r.image}, {what}, seed {r.seed})"


def batch_size(batch: int | str, cuda: bool | None = None):
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
        from ..core import data

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
    from ..core.estimate import iteration_gflop
    from ..core.presets import get_preset

    return iteration_gflop(get_preset(preset).net_config(1, **dict(net)), *shape)


def _iterations(run: Run) -> int:
    from ..core.presets import get_preset

    return run.iterations or get_preset(run.preset).iterations


def run_gflop(run: Run) -> float:
    """Training GFLOP of one iteration of a DIP run at its image size (0 for the CPU peers)."""
    if run.method != "dip":
        return 0.0
    return _gflop(run.preset, run.net, _shape(run.image, run.source, run.crop, run.resize))


def prior_seconds(run: Run) -> float:
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
        if r.method == "dip" and wall and prior_seconds(r) > 0:
            its = s.get("iterations_run") or _iterations(r)
            ratios.append(wall / max(1, int(rec.get("batched", 1))) / (prior_seconds(r) * its / _iterations(r)))
    scale = float(np.median(ratios)) if ratios else 1.0
    return lambda run: scale * prior_seconds(run)


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


def batches(runs: list[Run], size) -> list[list[Run]]:
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


def fetch_data(runs: list[Run]) -> None:
    """Fetch (or verify) the data files the runs need, before any fit."""
    from ..core import data

    names = list(dict.fromkeys(r.image for r in runs if r.source == "table1"))
    for r in runs:
        if r.mask == HOLES:
            names += ["library", data.EXAMPLES["library"]]
        if r.source == "dip":
            names += [r.image] + ([data.EXAMPLES[r.image]] if r.mask == "file" and data.EXAMPLES.get(r.image) else [])
    if names:
        data.fetch(list(dict.fromkeys(names)))


def prepare(runs: list[Run], store: ResultStore, budget_seconds: float | None) -> list[Run]:
    """The runners' common start: refuse a bad budget, remove what interrupted runs left (at every
    start: also when nothing is missing), then take the runs without a valid record, check their
    folders are writable and fetch their data."""
    if budget_seconds is not None and not budget_seconds >= 0:
        raise DipError(f"--budget-seconds must be a number >= 0, got {budget_seconds}")
    store.clean_leftovers(runs)
    todo = store.missing(runs)
    if todo:
        store.check_writable(todo)
        fetch_data(todo)
    return todo


def estimate_seconds(missing: list[Run], stored: list[tuple[Run, dict[str, Any]]]) -> float | None:
    """Rough compute time of the missing runs (one worker): ``seconds_model`` fitted to
    the stored runs (from the FLOP prior when nothing is stored), plus 5 s per CPU peer."""
    try:
        seconds = seconds_model(stored)
        peers = sum(1 for r in missing if r.method != "dip")
        return sum(seconds(r) for r in missing) + 5.0 * peers
    except (KeyError, TypeError, ValueError, AttributeError, OSError) as exc:  # never stop a page for an estimate
        log.debug("no time estimate: %s", exc)
        return None


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "an unknown time"
    if seconds < 90:
        return f"about {max(1, round(seconds))} s"
    if seconds < 5400:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"
