"""The report's experiments, one entry each: its name, its title for readers, the notebook that
reports it and its plan. An experiment is a module (its plan and its analysis), a notebook (its
narrative) and an entry here."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from ..core.errors import DipError
from . import arch, claims, cost, fig8, figures, optim, table1
from .runs import Profile, Run, get_profile, numerics_for


@dataclass(frozen=True)
class Experiment:
    """``plan(profile, seeds)`` lists the runs in the order they should be computed; with ``images``
    a caller may also choose the images, ``plan(profile, seeds, images)``. ``notebook``: the report
    page without ``.ipynb`` (None: shown on another experiment's page); ``numerics``: False keeps the
    numerics the plan sets instead of the profile's."""

    name: str
    title: str
    notebook: str | None
    plan: Callable[..., list[Run]]
    images: bool = False
    numerics: bool = True


REGISTRY: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment("table1", "Table 1", "01_table1_bernoulli", table1.plan, images=True),
        Experiment("arch", "Architecture sweep", "02_architecture_sweep", arch.plan),
        Experiment("optim", "Optimiser sweep", "03_optimizer_lr_sweep", optim.plan),
        Experiment("figures", "The paper's figures", "07_paper_figures", figures.plan),
        Experiment("cost", "Cost against quality", "06_cost_quality", cost.plan),
        Experiment("claims", "The claims' own runs", "05_claims", claims.plan),
    )
}
# plans run on request only, not by a profile's ``reproduce``: the paper profile's native-size
# Table-1 runs on a CPU (bf16), shown on Table 1's page, Fig. 8's large holes (the claims page), and
# the same on Table 1's seven other images (a GPU job: the images that could decide a claim left undecided)
EXTRA: dict[str, Experiment] = {
    "table1-cpu": Experiment("table1-cpu", "Table 1 at native size on a CPU", None, table1.plan_native, numerics=False),
    "fig8": Experiment("fig8", "Fig. 8: large holes, the original's five networks", None, fig8.plan, numerics=False),
    "fig8-more": Experiment("fig8-more", "Fig. 8's networks on Table 1's 512 px images", None, fig8.plan_more),
}
EXPERIMENTS = tuple(REGISTRY)
EXTRA_PLANS = tuple(EXTRA)
NOTEBOOKS = tuple(sorted(f"{e.notebook}.ipynb" for e in REGISTRY.values() if e.notebook))


def get_experiment(name: str) -> Experiment:
    if name not in REGISTRY and name not in EXTRA:
        raise DipError(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS + EXTRA_PLANS)}")
    return REGISTRY.get(name) or EXTRA[name]


def plan(
    experiment: str,
    profile: str,
    seeds: Iterable[int] | None = None,
    images: Iterable[str] | None = None,
    device: str | None = None,
) -> list[Run]:
    """The runs of one experiment at one profile, in the order they should be computed.

    ``device`` (a device type) replaces the profile's numerics, which gives the runs other ids."""
    prof: Profile = get_profile(profile)
    e = get_experiment(experiment)
    seeds = tuple(seeds) if seeds is not None else None
    if images is not None and not e.images:
        raise DipError(f"the {experiment} experiment has fixed images; only table1 takes a choice of images")
    runs = e.plan(prof, seeds, tuple(images)) if images is not None else e.plan(prof, seeds)
    if not e.numerics:
        return runs
    numerics = numerics_for(device or prof.device)
    return [replace(r, numerics=numerics) if r.method == "dip" else r for r in runs]
