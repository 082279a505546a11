"""What the notebooks show readers besides their own Markdown: loading with honest coverage labels,
tables for people, the zoomed comparison figures, and the facts (formatted values) a few paragraphs
cite. The prose is the notebooks'; nothing here computes a fit.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.presets import get_preset
from . import runner
from .compute import duration, estimate_seconds, prior_seconds
from .facts import DASH, NBSP, listing, num, number
from .registry import get_experiment, plan
from .runs import Run, fit_config, get_profile, load_problem, net_config
from .scores import FLAT_DB, LATE_SHARE, oracle, oracle_iteration
from .store import ResultStore
from .table1 import display_names
from .tables import PM, Table, pm

log = logging.getLogger(__name__)

Records = list[tuple[Run, dict[str, Any]]]


def _dB(v: float | None, sign: bool = False) -> str:
    if v is None:
        return DASH
    return f"{v:+.2f}{NBSP}dB" if sign else f"{v:.2f}{NBSP}dB"


# ---------------------------------------------------------------- tables for people


# ---------------------------------------------------------------- loading with coverage


@dataclass
class Loaded:
    """The stored records of one experiment and what is missing."""

    experiment: str
    profile: str
    runs: list[Run]
    records: Records
    coverage: dict[str, Any]
    estimate_s: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.coverage["stored"] == self.coverage["planned"]

    def note(self) -> str:
        """Markdown: how much of the experiment is stored (its scale is its notebook's setup paragraph)."""
        return coverage_note(self)


def load(
    experiment: str,
    profile: str,
    store: ResultStore | None = None,
    compute: bool = False,
    device: str | None = None,
    seeds: Iterable[int] | None = None,
    images: Iterable[str] | None = None,
) -> Loaded:
    """The experiment's stored records; with ``compute`` the missing runs are computed first.

    Without ``compute`` nothing is computed: the missing runs are counted, with a time estimate."""
    store = store or ResultStore()
    runs = plan(experiment, profile, seeds=seeds, images=images, device=device)
    if compute:
        runner.load_records(runs, store, compute=True)
    records = runner.load_records(runs, store, partial=True)
    cov = runner.coverage(runs, records=records)
    estimate = estimate_seconds(cov["missing"], records) if cov["missing"] else 0.0
    return Loaded(experiment, profile, runs, records, cov, estimate)


def coverage_line(loaded: Loaded) -> str:
    """'Table 1: 14 of 48 runs stored; seeds 0 only; 3 images missing (a, b, c)'."""
    c = loaded.coverage
    title = get_experiment(loaded.experiment).title
    if c["stored"] == c["planned"]:
        return f"{title}: all {c['planned']} runs stored (seeds {', '.join(map(str, c['seeds']))})."
    parts = [f"{title}: {c['stored']} of {c['planned']} runs stored"]
    if c["stored"] and c["seeds"] != c["planned_seeds"]:
        parts.append(
            f"seed{'s' if len(c['seeds']) > 1 else ''} {', '.join(map(str, c['seeds']))} only "
            f"(planned {', '.join(map(str, c['planned_seeds']))})"
        )
    n_img = len(c["images"]) + len(c["missing_images"])
    if n_img > 1 and c["missing_images"]:
        parts.append(f"{len(c['missing_images'])} of {n_img} images with no run ({', '.join(c['missing_images'])})")
    if n_img > 1 and c["incomplete_images"]:
        parts.append(f"{len(c['incomplete_images'])} images partly stored")
    return "; ".join(parts) + "."


def coverage_note(loaded: Loaded) -> str:
    """Markdown: the coverage line and, when runs are missing, what it would take to compute them."""
    line = coverage_line(loaded)
    if loaded.complete:
        return f"**Stored results.** {line}"
    n = len(loaded.coverage["missing"])
    return (
        f"**Partial results.** {line} Every number below is computed from the stored runs only and may change "
        f"once the other {n} are in. Computing them would take {duration(loaded.estimate_s)} on this machine "
        f"(a rough estimate): run `make reproduce`, or set `compute` to `True` in the parameters cell of the notebook."
    )


def glossary_facts() -> dict[str, Any]:
    """The library's thresholds the glossary names: the flattening rule's share and gain, the EMA's
    weight and the guard's drop."""
    from ..core.config import FitConfig

    cfg = FitConfig()
    return {
        "late_share": f"{LATE_SHARE:.0%}",
        "flat_db": f"{FLAT_DB:g}",
        "ema_decay": f"{cfg.ema_decay:g}",
        "guard_db": f"{cfg.guard_drop_db:g}",
    }


# ---------------------------------------------------------------- Table 1


def peak_facts(records: Records) -> dict[str, Any]:
    """Where the DIP runs peak within their budget: the runs, how many peak at their last check, and
    the median peak as a percentage of the budget."""
    at_end, peaks = 0, []
    for r, x in records:
        it, total = oracle_iteration(x), x["summary"].get("iterations_run")
        if r.method != "dip" or it is None or not total:
            continue
        peaks.append(it / total)
        at_end += it >= total - max(1, r.log_every)
    return {
        "runs": len(peaks),
        "at_end": at_end,
        "median_peak": num(100 * float(np.median(peaks)) if peaks else None, ".0f"),
    }


# ---------------------------------------------------------------- architecture and optimiser


def masked_psnr(rec: dict[str, Any]) -> float | None:
    """The PSNR of the masked input itself (what a method must beat to have restored anything)."""
    return number(rec["summary"].get("masked_psnr"))


def fitted(records: Records) -> tuple[Records, Records]:
    """(shown, dropped): the DIP runs whose final output ends above their masked input, and those that
    end at or below it. A net that ends below its own input has not fitted the image; its PSNR measures
    nothing about the architecture, so it is not shown as evidence (the page says which were dropped)."""
    shown, dropped = [], []
    for r, x in records:
        final, masked = final_psnr(x), masked_psnr(x)
        below = r.method == "dip" and final is not None and masked is not None and final <= masked
        (dropped if below else shown).append((r, x))
    return shown, dropped


def dropped_facts(dropped: Records) -> dict[str, Any]:
    """What the page says about the runs ``fitted`` dropped: how many, which settings, their final
    PSNR range and their masked input's."""
    labels = sorted({r.label for r, _ in dropped})
    finals = [final_psnr(x) for _, x in dropped]
    masked = sorted({round(masked_psnr(x), 2) for _, x in dropped})
    return {
        "n": len(dropped),
        "settings": "; ".join(labels) or DASH,
        "lo": num(min(finals) if finals else None),
        "hi": num(max(finals) if finals else None),
        "masked": ", ".join(f"{m:.2f}" for m in masked) or DASH,
    }


def clipped_sizes(records: Records) -> list[str]:
    """The image sizes ('96x96') at which a run's mask reaches the image's edge: a text mask drawn for
    a larger image whose lines run off it (the hole is then only the letters that fit)."""
    out: dict[tuple, str] = {}
    for run, _ in records:
        key = (run.image, run.mask, run.resize, run.crop)
        if key in out:
            continue
        _, mask = load_problem(run)
        hole = np.asarray(mask).min(axis=0) < 0.5
        edge = hole[0].any() or hole[-1].any() or hole[:, 0].any() or hole[:, -1].any()
        out[key] = f"{hole.shape[1]}x{hole.shape[0]}" if edge else ""
    return sorted({v for v in out.values() if v}, key=lambda v: int(v.split("x")[0]))


def seed_sweep_facts() -> dict[str, Any]:
    """The seed report's kate sweeps as published (``data/group71_kate_sweeps.csv``): its best width,
    the width and best depth (with skips) of its depth sweep."""
    from ..core.data import group71_kate_sweeps

    rows = group71_kate_sweeps()
    widths_ = [r for r in rows if r["sweep"] == "filters"]
    depths = [r for r in rows if r["sweep"] == "depth" and str(r["skip"]) in ("yes", "True")]
    w, d = max(widths_, key=lambda r: float(r["psnr"])), max(depths, key=lambda r: float(r["psnr"]))
    return {
        "best_width": w["filters"],
        "best_width_psnr": num(float(w["psnr"])),
        "depth_width": d["filters"],
        "best_depth": d["depth"],
    }


def best_setting(records: Records, group, value) -> tuple[Any, float] | None:
    """(setting, mean over its runs) of the setting ``group(run)`` with the highest mean ``value(rec)``."""
    means = _means(records, group, value)
    if not means:
        return None
    key = max(means, key=means.get)
    return key, means[key]


def iterate_facts(records: Records, group, fmt=str) -> dict[str, Any]:
    """The best setting on the oracle (best check, needs the ground truth) and on the final output
    (what a user without it keeps), each with its mean PSNR, and the final PSNR of the oracle's best:
    what a seed-beside-ours sentence says about both iterates."""
    on_oracle = best_setting(records, group, lambda x: number(oracle(x)))
    on_final = best_setting(records, group, final_psnr)
    if on_oracle is None or on_final is None:
        return dict.fromkeys(("oracle_best", "oracle_psnr", "final_best", "final_psnr", "oracle_best_final"), DASH)
    finals = _means(records, group, final_psnr)
    return {
        "oracle_best": fmt(on_oracle[0]),
        "oracle_psnr": num(on_oracle[1]),
        "final_best": fmt(on_final[0]),
        "final_psnr": num(on_final[1]),
        "oracle_best_final": num(finals.get(on_oracle[0])),
    }


# the settings a seed-beside-ours sentence compares: which runs, grouped how, named how
_SWEEPS = {
    "filters": (lambda r: not r.label.startswith("depth"), lambda r: r.filters),
    "depth": (lambda r: r.label.startswith("depth"), lambda r: r.label),
    "lr": (lambda r: r.guard is None, lambda r: r.label),  # the optimiser sweep without the seed's trial 3
}


def sweep_iterate_facts(records: Records, kind: str) -> dict[str, Any]:
    """``iterate_facts`` for the width (``filters``) or depth part of the architecture sweep, or the
    learning rates of the optimiser sweep (``lr``)."""
    keep, group = _SWEEPS[kind]
    return iterate_facts([(r, x) for r, x in records if keep(r)], group)


def _means(records: Records, group, value) -> dict[Any, float]:
    """{setting: mean of ``value`` over its runs}."""
    from .scores import by

    out = {}
    for key, rows in by(records, group).items():
        vals = [v for v in (value(x) for _, x in rows) if v is not None]
        if vals:
            out[key] = float(np.mean(vals))
    return out


def arch_people(df, kind: str) -> Table:
    """The filters or depth table for readers (without the helper column)."""
    if df is None or df.empty:
        import pandas as pd

        return Table(pd.DataFrame(), f"no stored {kind} runs yet")
    shown = df.drop(columns=[c for c in df.columns if c.startswith("_")]).copy()
    if "skip" in shown:
        shown["skip"] = ["yes" if s else "no" for s in shown["skip"]]
    for col in ("best PSNR", "hole PSNR", "final PSNR"):
        if col in shown:
            shown[col] = [str(v).replace(" ± ", PM) for v in shown[col]]
    shown = shown.rename(
        columns={
            "best PSNR": "oracle PSNR (dB)",
            "hole PSNR": "oracle, hole only (dB)",
            "final PSNR": "final PSNR (dB)",
        }
    )
    return Table(
        shown,
        f"PSNR in dB against the clean kate: the oracle over the whole image and over the text "
        f"(hole) only, and the final output; {PM.strip()} is the sample standard deviation (ddof 1) "
        f"over the n seeds; last 20% gain: below 0.2 dB the runs had flattened.",
    )


def optim_people(df) -> Table:
    if df is None or df.empty:
        import pandas as pd

        return Table(pd.DataFrame(), "no stored optimiser runs yet")
    shown = df.copy()
    for col in ("best PSNR", "hole PSNR", "final PSNR"):
        shown[col] = [str(v).replace(" ± ", PM) for v in shown[col]]
    return Table(
        shown.rename(
            columns={"best PSNR": "oracle PSNR (dB)", "best it": "oracle iteration", "final PSNR": "final PSNR (dB)"}
        ),
        f"kate, text-seed mask; PSNR in dB, {PM.strip()} the sample standard deviation (ddof 1) over the "
        f"n seeds; drops > 1 dB is the mean number per run of falls of the clean PSNR of the output the run holds "
        "by more than 1 dB between two consecutive checks, and the largest drop the deepest such fall; guard "
        "restores: the mean number per run of checks whose iterate the guard rejected, restoring the last good "
        "weights (the final PSNR is that of the weights kept).",
    )


# ---------------------------------------------------------------- claims


def claims_people(verdicts) -> Table:
    """The scored claims: verdict, effect with its 90% interval, and the evidence standard met."""
    df = verdicts[["claim", "verdict", "key", "scale", "standard"]].rename(
        columns={"key": "effect [90% CI] (n)", "standard": "evidence standard"}
    )
    return Table(df, "Computed from the stored results by each claim's rule (below).", wrap_last=True)


def claims_sides(verdicts, paper_setting=()) -> Table:
    """Each claim as the paper states it, as the seed report found it, our verdict at the paper's setting
    (``paper_setting``: ``registered.score``'s, by claim number) and our exploratory one at this scale."""
    df = verdicts[["claim", "paper", "seed", "verdict", "key"]].rename(
        columns={
            "seed": "seed report (TU Delft group 71)",
            "verdict": "ours, reduced scale (exploratory)",
            "key": "our effect [90% CI] (n), reduced scale",
        }
    )
    at = {s.id: s.verdict for s in paper_setting}
    df.insert(3, "ours, at the paper's setting", [at.get(n, DASH) for n in range(1, len(df) + 1)])
    return Table(df, "The paper, the seed report and this report, claim by claim.", wrap_last=True, css="dip-claims")


def seed_version_facts() -> dict[str, Any]:
    """The seed report's own version of claims 5 and 6 (kate's text masks, its width, depths with and
    without skips, native size): the paper profile's architecture sweep, its size and estimated GPU time."""
    runs = [r for r in plan("arch", "paper") if r.label.startswith("depth")]
    return {
        "runs": len(runs),
        "width": listing(sorted({r.filters for r in runs})),
        "depths": listing(sorted({r.depth for r in runs})),
        "seeds": listing(sorted({r.seed for r in runs})),
        "masks": listing(sorted({r.mask for r in runs})),
        "cost": duration(sum(prior_seconds(r) for r in runs)),
    }


def paper_fig2_facts() -> dict[str, Any]:
    """Fig. 2 at the paper's width (the paper profile's figures plan, a GPU job): its images, runs,
    width, iterations, seeds and cost by the FLOP prior, for claim 4 on the claims page."""
    runs = [r for r in plan("figures", "paper") if r.mask == "none"]
    return {
        "images": listing(list(dict.fromkeys(r.image for r in runs))),
        "n_images": len({r.image for r in runs}),
        "runs": len(runs),
        "width": listing(sorted({net_config(r).channels_down[0] for r in runs})),
        "iterations": listing(sorted({fit_config(r).iterations for r in runs})),
        "seeds": listing(sorted({r.seed for r in runs})),
        "cost": duration(sum(prior_seconds(r) for r in runs)),
    }


def compute_total(loaded: dict[str, Loaded]) -> tuple[int, float]:
    """The stored runs of a profile and their compute in hours (the sum of their wall times)."""
    walls = [number(x["summary"].get("wall_time")) for L in loaded.values() for _, x in L.records]
    walls = [w for w in walls if w is not None]
    return len(walls), sum(walls) / 3600


# ---------------------------------------------------------------- the compute of the report


def compute_rows(loaded: dict[str, Loaded], extra: dict[str, Records] | None = None) -> list[dict[str, Any]]:
    """One row per experiment (and one per paper-scale plan run on request, ``extra``: {plan: records}),
    from the stored records: runs stored of planned, DIP and peer runs, hours (the sum of the runs' wall
    times, as ``compute_total``), core-hours or GPU-hours (wall time times the threads a CPU run used;
    a GPU run's wall time), the devices and numerics as the records' environment and config name them."""
    entries = [(get_experiment(e).title, L.profile, L.records, L.coverage["planned"]) for e, L in loaded.items()]
    for name, records in (extra or {}).items():
        if records:
            entries.append((get_experiment(name).title, "paper", list(records), len(plan(name, "paper"))))
    out = []
    for title, profile, records, planned in entries:
        core = gpu = 0.0
        devices, numerics = set(), set()
        for run, x in records:
            wall = number(x["summary"].get("wall_time")) or 0.0
            env, num_cfg = x.get("environment") or {}, x["config"].get("numerics") or {}
            if env.get("device") == "cuda":
                gpu += wall / 3600
            else:
                core += wall * (num_cfg.get("threads") or 1) / 3600
            devices.add(env.get("device_name") or DASH)
            if run.method == "dip":
                threads = num_cfg.get("threads", DASH)
                numerics.add(f"{num_cfg.get('precision', DASH)}, {threads} thread{'' if threads == 1 else 's'}")
        n, hours = compute_total({title: Loaded(title, profile, [], records, {})})
        out.append(
            {
                "experiment": title,
                "profile": profile,
                "runs": n,
                "planned": planned,
                "DIP runs": sum(r.method == "dip" for r, _ in records),
                "hours": hours,
                "core-hours": core,
                "GPU-hours": gpu,
                "devices": "; ".join(sorted(devices)) or DASH,
                "DIP numerics": "; ".join(sorted(numerics)) or DASH,
            }
        )
    return out


def report_compute(
    profile: str, store: ResultStore | None = None, device: str | None = None, seeds: Iterable[int] | None = None
) -> list[dict[str, Any]]:
    """``compute_rows`` of every experiment of ``profile`` as stored (nothing computed), with the
    paper-scale plans run on request (native-size Table 1 and Fig. 8 on a CPU)."""
    from .registry import EXPERIMENTS, EXTRA_PLANS

    store = store or ResultStore()
    loaded = {e: load(e, profile, store, device=device, seeds=seeds) for e in EXPERIMENTS}
    extra = {e: runner.load_records(plan(e, "paper"), store, partial=True) for e in EXTRA_PLANS}
    return compute_rows(loaded, extra)


RECIPES = ("table1-paper", "table1-seed", "text")


def recipes_people() -> Table:
    """The recipes as the library's presets hold them (read from the original repository's notebooks;
    the seed's choice for ``table1-seed``): the hyperparameters at full scale, before a profile
    narrows the nets or shortens the budget."""
    import pandas as pd

    from ..core.presets import get_preset

    rows = []
    for name in RECIPES:
        p = get_preset(name)
        rows.append(
            {
                "recipe": name,
                "source": p.description.split(":")[0],
                "depth": len(p.net.channels_down),
                "filters": p.net.channels_down[0],
                "skip channels": p.net.channels_skip[0],
                "upsampling": p.net.upsample_mode,
                "input": f"{p.input_kind}, {p.net.in_channels} ch",
                "optimiser": f"{p.optimizer}, lr {p.lr:g}",
                "iterations": p.iterations,
                "input noise std": f"{p.reg_noise_std:g}",
                "guard": "on" if p.guard else "off",
            }
        )
    return Table(
        pd.DataFrame(rows),
        "The recipes at full scale, as dip_lib.core.presets holds them; each page's scale note says how its profile "
        "narrows the nets and shortens the budgets.",
    )


def compute_people(rows: list[dict[str, Any]]) -> Table:
    """The compute table for readers, a total row last."""
    import pandas as pd

    if not rows:
        return Table(pd.DataFrame(), "no stored runs yet")
    df = pd.DataFrame(rows)
    total = {
        "experiment": "total",
        "profile": "",
        **{c: df[c].sum() for c in ("runs", "planned", "DIP runs", "hours", "core-hours", "GPU-hours")},
        "devices": "",
        "DIP numerics": "",
    }
    df = pd.concat([df, pd.DataFrame([total])], ignore_index=True)
    df["runs"] = [f"{r} of {p}" for r, p in zip(df["runs"], df["planned"])]
    return Table(
        df.drop(columns="planned").round(2),
        "Every stored run, per experiment, from its record: hours is the sum of the runs' wall times; core-hours "
        "multiply a CPU run's wall time by the threads it used, GPU-hours add a GPU run's; devices as the records' "
        "environment names them.",
    )


def compute_facts(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The totals the landing page cites: the runs and hours of the profile's experiments, of the
    paper-scale rows, and the GPU-hours of all (zero says that no run used a GPU)."""
    mine = [r for r in rows if r["profile"] != "paper" or all(x["profile"] == "paper" for x in rows)]
    other = [r for r in rows if r not in mine]
    return {
        "runs": sum(r["runs"] for r in mine),
        "hours": num(sum(r["hours"] for r in mine), ".1f"),
        "native_runs": sum(r["runs"] for r in other),
        "native_hours": num(sum(r["hours"] for r in other), ".1f"),
        "gpu_hours": num(sum(r["GPU-hours"] for r in rows), ".1f"),
        "gpu_runs": "no" if not any(r["GPU-hours"] for r in rows) else "some",
        "devices": "; ".join(sorted({d for r in rows for d in r["devices"].split("; ") if d != DASH})) or DASH,
    }


# ---------------------------------------------------------------- figures


def show(fig) -> None:
    """Display a figure here, under the heading just shown, and close it (no second copy at the cell's end).
    The image carries a text alternative for screen readers, built from the figure's own titles and labels."""
    if fig is None:
        return
    import matplotlib.pyplot as plt
    from IPython.display import display

    display(fig, metadata={"image/png": {"alt": figure_alt(fig)}})
    plt.close(fig)


def figure_alt(fig) -> str:
    """A figure in words: its title, then each panel's title or, for a plot, its axes ('y against x')."""
    parts = [fig._suptitle.get_text()] if getattr(fig, "_suptitle", None) else []
    for ax in fig.axes:
        title = ax.get_title().replace("\n", ", ")
        axes = f"{ax.get_ylabel()} against {ax.get_xlabel()}" if ax.get_xlabel() and ax.get_ylabel() else ""
        label = "; ".join(s for s in (title, axes) if s)
        if label and label not in parts:
            parts.append(label)
    return ("Figure: " + " | ".join(parts)) if parts else "Figure"


def _first(records: Records, **match: Any) -> tuple[Run, dict] | None:
    for r, x in sorted(records, key=lambda rx: rx[0].seed):
        if all(getattr(r, k) == v for k, v in match.items()):
            return r, x
    return None


def table1_zoom(records: Records, store: ResultStore) -> tuple[Any, dict[str, Any]]:
    """(figure, facts): one Table-1 image (the first with both recipes stored) restored four ways,
    zoomed, with error maps, and the image and seed it shows (None and dashes when nothing fits)."""
    for image in display_names():
        a, b = (
            _first(records, image=image, method="dip", preset="table1-paper"),
            _first(records, image=image, method="dip", preset="table1-seed"),
        )
        if a and b:
            break
    else:
        return None, {"image": DASH, "seed": DASH, "rows": DASH, "cols": DASH, "side": DASH}
    from .plots import zoom_compare

    gt, _ = load_problem(a[0])
    panels = [("masked input", store.image(a[0], "observed"))]
    for run, rec in (a, b):
        panels.append((f"{run.preset}, best\nseed {run.seed}: {oracle(rec):.2f} dB", store.image(run, "best")))
    for method in ("csc",):
        peer = _first(records, image=image, method=method)
        if peer:
            panels.append((f"{method}: {peer[1]['summary']['final_psnr']:.2f} dB", store.image(peer[0], "final")))
    fig = zoom_compare(gt, panels)
    return fig, {"image": display_names().get(image, image), "seed": a[0].seed, **box_facts(fig.zoom_box)}


def box_facts(box: tuple[int, int, int]) -> dict[str, Any]:
    """Where a zoom box lies, for the caption's words: its rows and columns (0-based, inclusive)."""
    top, left, side = box
    return {"rows": f"{top}-{top + side - 1}", "cols": f"{left}-{left + side - 1}", "side": side}


def arch_zoom(records: Records, store: ResultStore, mask: str = "text-seed"):
    """kate restored by the narrowest and the best network of the filters sweep (None: too few runs)."""
    sel = [(r, x) for r, x in records if r.mask == mask and not r.label.startswith("depth") and oracle(x) is not None]
    if len(sel) < 2:
        return None
    from .plots import zoom_compare

    lo = min(sel, key=lambda rx: (rx[0].filters, rx[0].seed))
    hi = max(sel, key=lambda rx: oracle(rx[1]))
    gt, _ = load_problem(lo[0])
    panels = [("masked input", store.image(lo[0], "observed"))]
    panels += [(f"{r.label}, best\nseed {r.seed}: {oracle(x):.2f} dB", store.image(r, "best")) for r, x in (lo, hi)]
    return zoom_compare(gt, panels)


def final_psnr(rec: dict[str, Any]) -> float | None:
    """The final output's PSNR (the output the run returns)."""
    return number(rec["summary"].get("final_psnr"))


def extremes(records: Records, value=final_psnr) -> tuple[tuple[Run, dict], tuple[Run, dict]] | None:
    """(best, worst) run by ``value`` (a record's PSNR on one iterate): the figure that shows them shows
    that same iterate. None: fewer than two runs with a value."""
    sel = [(r, x) for r, x in records if value(x) is not None]
    if len(sel) < 2:
        return None
    return max(sel, key=lambda rx: value(rx[1])), min(sel, key=lambda rx: value(rx[1]))


def optim_zoom(records: Records, store: ResultStore):
    """The best and the worst run of the sweep on the final output, shown at their final outputs,
    zoomed, with error maps (None: too few runs)."""
    pair = extremes(records, final_psnr)
    if pair is None:
        return None
    from .plots import zoom_compare

    best, worst = pair
    gt, _ = load_problem(best[0])
    panels = [("masked input", store.image(best[0], "observed"))]
    panels += [
        (f"{tag}: {r.label}, final\nseed {r.seed}: {final_psnr(x):.2f} dB", store.image(r, "final"))
        for tag, (r, x) in (("best", best), ("worst", worst))
    ]
    return zoom_compare(gt, panels)


# ---------------------------------------------------------------- the paper's figures


# ---------------------------------------------------------------- cost against quality


COST_TABLE_DB = 3.0  # the front's table starts this far below the best recipe


def cost_people(pts: list, fr: list, choice) -> Table:
    """The Pareto front as a table (the reference recipe added when it is not on the front)."""
    import pandas as pd

    if not pts:
        return Table(pd.DataFrame(), "no stored runs yet")
    top = choice.reference.psnr if choice is not None else max(p.psnr for p in fr)
    shown = [p for p in fr if p.psnr >= top - COST_TABLE_DB]
    if choice is not None and choice.reference not in shown:
        shown.append(choice.reference)
    rows = []
    for p in sorted(shown, key=lambda p: p.gflop):
        mark = []
        if choice is not None and p == choice.point:
            mark.append("cheapest within tolerance")
        if choice is not None and p == choice.reference:
            mark.append("reference (best point)")
        rows.append(
            {
                "recipe": p.recipe,
                "filters": p.width,
                "lr": f"{p.lr:g}",
                "iterations": p.iterations,
                "GFLOP per fit": f"{p.gflop:,.0f}",
                "seconds here": f"{p.seconds:,.0f}",
                "PSNR (dB)": pm(p.psnr, p.std, p.n),
                "hole PSNR (dB)": _dB(p.hole),
                "n": p.n,
                "": ", ".join(mark),
            }
        )
    return Table(
        pd.DataFrame(rows),
        f"The Pareto front within {COST_TABLE_DB:g} dB of the best point (the plot shows all of it): no cheaper "
        f"point reaches a higher mean PSNR. PSNR of the clean output after that many iterations, averaged over the "
        f"images for each seed, then mean {PM.strip()} sample standard deviation (ddof 1) over the n seeds; hole "
        f"PSNR: the missing pixels only, mean; seconds: mean per fit as measured on this project's 2-core CPU VM, "
        f"one thread per run, two runs side by side.",
    )


@dataclass
class CostStudy:
    """The cost sweep with the runs it reads from the other experiments, as plot panels:
    (title, points, Pareto front, choice), and what each panel is about in words."""

    loaded: dict[str, Loaded]
    panels: list[tuple[str, list, list, Any]]
    about: list[str]
    baselines: list[Any]  # per panel: the main experiment's recipe at its full count (a cost.Point) or None


def cost_study(
    profile: str,
    store: ResultStore | None = None,
    compute: bool = False,
    device: str | None = None,
    seeds: Iterable[int] | None = None,
) -> CostStudy:
    """Load the cost sweep, Table 1, the architecture and the optimiser sweeps, and build the panels:
    the Table-1 crops and kate's text mask; the baselines are ``table1-paper`` as Table 1 runs it and
    ``text`` at its 128 filters in the filter sweep."""
    from . import cost

    prof = get_profile(profile)
    loaded = {
        e: load(e, profile, store, compute=compute, device=device, seeds=seeds if e != "table1" else None)
        for e in ("cost", "table1", "arch", "optim")
    }
    t1 = cost.table1_cost(loaded["table1"].records, loaded["cost"].records, prof.cost_images)
    kate = cost.kate_cost(loaded["arch"].records, loaded["optim"].records, prof)
    sweeps = [loaded[e] for e in ("arch", "optim")]
    kate_about = "kate's text mask"
    if not all(L.complete for L in sweeps):
        stored = " and ".join(f"{L.coverage['stored']} of {L.coverage['planned']}" for L in sweeps)
        kate_about += f" (from the architecture and optimiser sweeps, {stored} runs stored)"
    about = [f"the Table-1 crops ({', '.join(prof.cost_images)})", kate_about]
    panels = [
        (f"Table 1: {', '.join(prof.cost_images)}", t1, cost.front(t1), cost.choose(t1)),
        ("kate, text mask (filter and optimiser sweeps)", kate, cost.front(kate), cost.choose(kate)),
    ]

    def full(pts: list, recipe: str, width: int, lr: float | None = None):
        return next((p for p in pts if p.full and p.recipe == recipe and p.width == width and lr in (None, p.lr)), None)

    baselines = [
        full(t1, "table1-paper", prof.table1_width or 128),
        full(kate, "text", 128, get_preset("text").lr),
    ]
    return CostStudy(loaded, panels, about, baselines)


def score_claims(loaded: dict[str, Loaded], native: Records = ()):
    """``claims.score`` from ``load`` results per experiment (records and coverage); ``native``: the
    paper-scale Table-1 records of the table1-cpu plan."""
    from .claims import score

    partial = {e: (coverage_line(x), x.coverage["missing"]) for e, x in loaded.items() if not x.complete}
    records = {e: x.records for e, x in loaded.items()} | {"table1-cpu": list(native)}
    return score(records, partial=partial)
