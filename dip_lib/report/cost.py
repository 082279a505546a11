"""Cost against quality: its plan, and from stored runs what a recipe at a width and an iteration
budget costs (GFLOP of training, seconds on the machine that ran it) and the clean-output PSNR it
reaches.

A fit does not depend on its total iteration count (no schedule), so a run of N iterations is,
at each of its checks, the run a user with a smaller budget B would have made: its clean PSNR at
the last check at or before B is what that budget buys. One run per (recipe, width, lr, image,
seed) thus gives the whole iteration axis. Compute is the training's conv FLOPs,

    GFLOP(B) = B x (forward + backward conv FLOPs of one iteration at the image's size),

the checks' extra no-grad forwards left out (they are monitoring, not training).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .facts import DASH, listing, num
from .runs import Profile, Run
from .scores import mean_std
from .table1 import problem, recipe_net

Records = list[tuple[Run, dict[str, Any]]]

# iteration budgets read off every run (each run also at its own full count)
BUDGETS = (10, 20, 30, 50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 4000, 6000, 8000, 11000)
TOLERANCE_DB = 0.5  # a cheap recipe must come this close to the best one
MIN_SAVING = 10.0  # ... at this many times less compute


@dataclass(frozen=True)
class Point:
    """One recipe at one budget, over its (image, seed) runs: mean clean PSNR (whole image and hole),
    the sample std (ddof 1) over the n seeds of the per-seed image means, the compute per fit (GFLOP)
    and the measured seconds (mean)."""

    recipe: str
    width: int
    lr: float
    iterations: int
    gflop: float
    seconds: float
    psnr: float
    std: float
    n: int
    hole: float
    full: bool  # the budget is the recipe's own full iteration count

    @property
    def key(self) -> tuple[str, int, float]:
        return (self.recipe, self.width, self.lr)

    def label(self) -> str:
        return f"{self.recipe}, {self.width} filters, lr {self.lr:g}, {self.iterations} it"


def plan(prof: Profile, seeds: tuple[int, ...] | None = None) -> list[Run]:
    """Cost against quality: both Table-1 recipes at the widths Table 1 does not run, on a few of its
    problems (the same crops and masks as Table 1, so its own runs are the sweep's table1_width
    points). Every check of a run is a cheaper budget of the same recipe (a fit does not depend on
    its total iterations), so one run per (recipe, width, image, seed) gives the iteration axis.
    ``cost_iterations`` may name a width ("table1-seed@128": 2001) to cap the most expensive ones, 0 to
    leave one out."""
    seeds = seeds or prof.seeds_sweep
    runs: list[Run] = []
    base = problem(prof, "cost")
    for seed in seeds:
        for preset in ("table1-paper", "table1-seed"):
            for width in prof.cost_widths:
                iterations = prof.cost_iterations.get(f"{preset}@{width}", prof.cost_iterations.get(preset))
                if not iterations:
                    continue
                net = recipe_net(preset, width)
                for image in prof.cost_images:
                    runs.append(
                        Run(
                            image=image,
                            mask_seed=1000 + prof.table1_images.index(image),
                            preset=preset,
                            net=net,
                            iterations=iterations,
                            seed=seed,
                            label=f"{preset}, {width} filters",
                            **base,
                        )
                    )
    return runs


def _width(run: Run) -> int:
    from ..core.presets import get_preset

    return run.filters or get_preset(run.preset).net.channels_down[0]


def _lr(run: Run) -> float:
    from ..core.presets import get_preset

    return run.lr if run.lr is not None else get_preset(run.preset).lr


def at_budget(rec: dict[str, Any], budget: int) -> tuple[float, float | None, float] | None:
    """(clean PSNR, hole PSNR, seconds) of a run stopped after ``budget`` iterations: its last check
    at or before the budget; None when the run is shorter than the budget."""
    h = rec.get("history") or {}
    its = h.get("iteration") or []
    if not its or its[-1] < budget:
        return None
    k = max(i for i, it in enumerate(its) if it <= budget)
    clean = h["psnr_clean"][k]
    if clean is None:
        return None
    hole = (h.get("psnr_hole") or [None] * len(its))[k]
    return float(clean), hole, float(h["elapsed"][k])


def points(records: Records, budgets: Iterable[int] = BUDGETS) -> list[Point]:
    """Every (recipe, width, lr) of the Adam DIP runs at every budget all its runs reached (and at
    its full iteration count; budgets within 2% of it are left out). PSNRs are averaged over the
    images for each seed; the spread is the sample std (ddof 1) of those means over the n seeds
    (the images' own differences, common to every recipe, do not enter it)."""
    from .compute import run_gflop  # imports torch: not at import time (the CLI's parser imports the registry)

    groups: dict[tuple[str, int, float], Records] = defaultdict(list)
    for run, rec in records:
        if run.method == "dip" and (run.optimizer or "adam") == "adam" and rec.get("history"):
            groups[(run.preset, _width(run), _lr(run))].append((run, rec))
    out: list[Point] = []
    for (recipe, width, lr), rows in groups.items():
        full = min(rec["history"]["iteration"][-1] for _, rec in rows)
        # the output layer is counted with one channel: the image's channels change it by under 1%
        gflop_it = float(np.mean([run_gflop(run) for run, _ in rows]))
        for b in sorted({*(b for b in budgets if b < 0.98 * full), full}):
            got = [(run.seed, at_budget(rec, b)) for run, rec in rows]
            if any(g is None for _, g in got):
                continue
            per_seed: dict[int, list[tuple]] = defaultdict(list)
            for seed, g in got:
                per_seed[seed].append(g)
            mean, std, n = mean_std(np.mean([g[0] for g in gs]) for gs in per_seed.values())
            holes = [g[1] for _, g in got if g[1] is not None]
            hole = float(np.mean(holes)) if holes else float("nan")
            seconds = float(np.mean([g[2] for _, g in got]))
            out.append(Point(recipe, width, lr, b, gflop_it * b, seconds, mean, std, n, hole, b == full))
    return sorted(out, key=lambda p: (p.gflop, -p.psnr))


def front(pts: list[Point]) -> list[Point]:
    """The Pareto front: the points no cheaper (or equally cheap) point beats in PSNR, by compute."""
    best = -np.inf
    out = []
    for p in sorted(pts, key=lambda p: (p.gflop, -p.psnr)):
        if p.psnr > best:
            out.append(p)
            best = p.psnr
    return out


@dataclass(frozen=True)
class Choice:
    """The cheapest point within ``tolerance_db`` of the reference (the best point: a recipe at a
    budget, its full count or a check before it), and how much less compute it needs; ``met`` when
    that is at least MIN_SAVING."""

    reference: Point
    point: Point
    tolerance_db: float
    saving: float
    met: bool


def choose(
    pts: list[Point], references: list[Point] | None = None, tolerance_db: float = TOLERANCE_DB
) -> Choice | None:
    """The reference is the best of ``references`` (default: of ``pts``, a recipe stopped at a check
    included); the choice is the cheapest of ``pts`` whose mean PSNR is within ``tolerance_db`` of it
    (None without both)."""
    references = pts if references is None else references
    if not pts or not references:
        return None
    ref = max(references, key=lambda p: p.psnr)
    ok = [p for p in pts if p.psnr >= ref.psnr - tolerance_db]
    pick = min(ok, key=lambda p: (p.gflop, -p.psnr))
    saving = ref.gflop / pick.gflop
    return Choice(ref, pick, tolerance_db, saving, saving >= MIN_SAVING)


def table1_cost(table1: Records, cost: Records, images: Iterable[str]) -> list[Point]:
    """The Table-1 problems of the cost sweep, as points. The profile's own Table-1 runs on the same
    images and seeds are its table1_width."""
    images = set(images)
    seeds = {r.seed for r, _ in cost} or {r.seed for r, _ in table1}
    own = [(r, x) for r, x in table1 if r.method == "dip" and r.image in images and r.seed in seeds]
    return points(own + list(cost))


def kate_cost(arch: Records, optim: Records, prof: Profile) -> list[Point]:
    """kate's text mask: the filter sweep (depth 5 with skips at the sweep's size, every width but
    the optimiser sweep's) and the optimiser sweep's Adam learning rates (not the seed's trial 3,
    which runs with the guard set), as points."""
    width = prof.optim_width or 128
    seen: set[str] = set()
    rows: Records = []
    for r, x in arch:
        if r.method == "dip" and r.depth == 5 and r.skip and r.resize == prof.kate_size and r.filters != width:
            if r.run_id not in seen:
                seen.add(r.run_id)
                rows.append((r, x))
    rows += [(r, x) for r, x in optim if r.method == "dip" and r.guard is None]
    return points(rows)


def preset_from(point: Point, name: str = "fast", description: str = ""):
    """The recipe of ``point`` as a Preset: its recipe's network at the point's width (table1-paper
    keeps its 4 skip channels, as in the sweep), its lr and iteration budget, the rest unchanged."""
    from dataclasses import replace

    from ..core.presets import get_preset

    base = get_preset(point.recipe)
    w = point.width
    skip = 4 if point.recipe == "table1-paper" else w
    net = replace(base.net, channels_down=(w,) * 5, channels_up=(w,) * 5, channels_skip=(skip,) * 5)
    return replace(base, name=name, description=description, net=net, lr=point.lr, iterations=point.iterations)


def _point_facts(p: Point | None, prefix: str) -> dict[str, Any]:
    keys = ("recipe", "width", "lr", "iterations", "psnr", "gflop", "seconds")
    if p is None:
        return {f"{prefix}{k}": DASH for k in keys}
    values = (p.recipe, p.width, f"{p.lr:g}", p.iterations, num(p.psnr), f"{p.gflop:,.0f}", f"{p.seconds:,.0f}")
    return {f"{prefix}{k}": v for k, v in zip(keys, values)}


def choice_facts(choice: Choice | None, baseline: Point | None = None) -> dict[str, Any]:
    """One panel's choice for notebook 06's Markdown: the best point (``ref_*``), the cheapest within
    the tolerance (``pick_*``), the compute ratio between them, and the recipe as the main experiment
    runs it (``base_*``) with the pick's PSNR change over it."""
    ref, pick = (choice.reference, choice.point) if choice else (None, None)
    return {
        **_point_facts(ref, "ref_"),
        **_point_facts(pick, "pick_"),
        **_point_facts(baseline, "base_"),
        "tolerance": f"{choice.tolerance_db:g}" if choice else DASH,
        "saving": num(choice.saving if choice else None, ".1f"),
        "pick_change": num(pick.psnr - ref.psnr if choice else None, "+.2f"),
        "over_base": num(pick.psnr - baseline.psnr if choice and baseline else None, "+.2f"),
    }


def fast_facts(choice: Choice | None) -> dict[str, Any]:
    """Whether the library's ``fast`` preset is the recipe chosen on the Table-1 crops."""
    from ..core.presets import get_preset

    fast = get_preset("fast")
    same = choice is not None and preset_from(choice.point, fast.name, fast.description) == fast
    return {"description": fast.description, "matches": "yes" if same else "no"}


def scale_facts(prof: Profile) -> dict[str, Any]:
    """The study's scale at ``prof``, for the notebook's setup paragraph."""
    crop = prof.table1_crop
    return {
        **prof.scale_facts(),
        "widths": listing(prof.cost_widths),
        "images": listing(prof.cost_images),
        "size": f"{crop}x{crop} center crops" if crop else "native size",
        "iterations": ", ".join(f"{k} {v or 'not run'}" for k, v in prof.cost_iterations.items()),
        "table1_width": prof.table1_width or 128,
        "seeds": listing(prof.seeds_sweep),
    }
