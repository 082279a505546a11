"""What the notebooks show readers: loading with honest coverage labels, tables for people, the
exact scale of each experiment, and interpretation generated from the numbers (Markdown strings).

Nothing here computes a fit. Scores are read through the accessors (``oracle``, ``table1_values``),
which live in ``dip_lib.scores`` when it exists and in ``dip_lib.plots`` before that.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import experiments as ex
from .compute import duration, estimate_seconds
from .facts import DASH, NBSP, num, number
from .presets import get_preset
from .runs import Profile, Run, get_profile, load_problem, plan
from .scores import FLAT_DB, LATE_SHARE, oracle, oracle_iteration, table1_values
from .store import ResultStore

log = logging.getLogger(__name__)

Records = list[tuple[Run, dict[str, Any]]]
PM = f"{NBSP}\u00b1{NBSP}"
EXPERIMENT_TITLES = {
    "table1": "Table 1",
    "arch": "Architecture sweep",
    "optim": "Optimiser sweep",
    "figures": "The paper's figures",
    "cost": "Cost against quality",
    "claims": "The claims' own runs",
}


def mean_of(values: Iterable[Any]) -> float | None:
    vals = [v for v in (number(x) for x in values) if v is not None]
    return float(np.mean(vals)) if vals else None


def _dB(v: float | None, sign: bool = False) -> str:
    if v is None:
        return DASH
    return f"{v:+.2f}{NBSP}dB" if sign else f"{v:.2f}{NBSP}dB"


# ---------------------------------------------------------------- tables for people


class Table:
    """A DataFrame shown to readers: no index, integers as integers, no NaN, cells that do not wrap
    inside a number. ``repr`` is the plain text (stable for nbval), ``_repr_html_`` the page."""

    def __init__(self, df, caption: str = "", wrap_last: bool = False, css: str = "") -> None:
        self.df = _tidy(df)
        self.caption = caption
        self.wrap_last = wrap_last  # the last column holds prose: let it wrap
        self.css = css  # one more class for the page's style sheet

    def __repr__(self) -> str:
        return (self.caption + "\n" if self.caption else "") + self.df.to_string(index=False)

    def _repr_html_(self) -> str:
        import html

        classes = " ".join(["dip-table"] + ["dip-wrap-last"] * self.wrap_last + [self.css] * bool(self.css))
        body = self.df.to_html(index=False, classes=classes, border=0, na_rep=DASH)
        cap = f'<p class="dip-caption">{html.escape(self.caption)}</p>' if self.caption else ""
        return cap + body


def _tidy(df):
    """Floats that are all whole numbers become integers; other floats get 2 decimals; NaN a dash."""
    out = df.copy()
    for col in out.columns:
        s = out[col]
        if s.dtype.kind == "f":
            vals = s.dropna()
            if len(vals) and (vals == vals.round()).all() and vals.abs().max() < 1e12:
                out[col] = [DASH if (v is None or not np.isfinite(v)) else f"{round(v)}" for v in s]
            else:
                out[col] = [DASH if (v is None or not np.isfinite(v)) else f"{v:.2f}" for v in s]
        elif s.dtype.kind == "O":
            out[col] = [DASH if v is None or (isinstance(v, float) and not np.isfinite(v)) else v for v in s]
    return out


def pm(mean: float, std: float, n: int) -> str:
    """'31.30 ± 0.51' with non-breaking spaces (one seed: '31.30'; none: a dash)."""
    if not n or mean is None or not np.isfinite(mean):
        return DASH
    return f"{mean:.2f}{PM}{std:.2f}" if n > 1 else f"{mean:.2f}"


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
        """Markdown: the exact scale and how much of it is stored."""
        return scale_note(self.experiment, get_profile(self.profile)) + "\n\n" + coverage_note(self)


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
        ex.load_records(runs, store, compute=True)
    records = ex.load_records(runs, store, partial=True)
    cov = ex.coverage(runs, records=records)
    estimate = estimate_seconds(cov["missing"], records) if cov["missing"] else 0.0
    return Loaded(experiment, profile, runs, records, cov, estimate)


def coverage_line(loaded: Loaded) -> str:
    """'Table 1: 14 of 48 runs stored; seeds 0 only; 3 images missing (a, b, c)'."""
    c = loaded.coverage
    title = EXPERIMENT_TITLES.get(loaded.experiment, loaded.experiment)
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


def scale_note(experiment: str, prof: Profile) -> str:
    """Markdown: this experiment's exact scale at the profile."""
    seeds_t = ", ".join(map(str, prof.seeds_table1))
    seeds_s = ", ".join(map(str, prof.seeds_sweep))
    reduced = "" if prof.comparable else " Reduced scale: **not comparable to the paper**; read trends, not values."
    if experiment == "table1":
        crop = (
            f"{prof.table1_crop}x{prof.table1_crop} center crops" if prof.table1_crop else "native size (256 or 512 px)"
        )
        width = f"{prof.table1_width} filters per layer" if prof.table1_width else "128 filters per layer (the paper's)"
        its = ", ".join(f"`{k}` {v}" for k, v in prof.table1_iterations.items())
        return (
            f"**Scale: the {prof.name} profile.** "
            f"{len(prof.table1_images)} images as {crop}; networks with {width}; "
            f"iterations: {its}; seeds {seeds_t}; CSC peer {prof.csc_iterations} iterations; a PSNR check every "
            f"{prof.log_every} iterations.{reduced}"
        )
    if experiment == "arch":
        kate = f"{prof.kate_size}x{prof.kate_size}" if prof.kate_size else "512x512"
        deep = f"{prof.depth_size}x{prof.depth_size}" if prof.depth_size else "512x512"
        return (
            f"**Scale: the {prof.name} profile.** Filters "
            f"{', '.join(map(str, prof.filters))} at depth 5 on kate at {kate}, {prof.filter_iterations} "
            f"iterations; depths {', '.join(map(str, prof.depths))} with {prof.depth_width} filters, with and "
            f"without skips, on kate at {deep} (depth d needs 2^d + 1 px), {prof.depth_iterations} iterations; "
            f"masks {', '.join(prof.sweep_masks)}; seeds {seeds_s}.{reduced}"
        )
    if experiment == "optim":
        return (
            f"**Scale: the {prof.name} profile.** kate at "
            f"{prof.kate_size}x{prof.kate_size}, `text-seed` mask, "
            f"{prof.optim_width or 128} filters per layer, {prof.optim_iterations} iterations (L-BFGS: function "
            f"evaluations), the seed's trial 3 (Adam lr 0.1, guard off and on) {prof.trial3_iterations}; "
            f"seeds {seeds_s}.{reduced}"
        )
    if experiment == "figures":
        kate = f"{prof.kate_size}x{prof.kate_size}" if prof.kate_size else "512x512"
        return (
            f"**Scale: the {prof.name} profile.** kate at {kate} with "
            f"{prof.figure_width or 128}-filter networks: Fig. 2 fits {prof.fig2_iterations} iterations with no "
            f"mask; the inpainting figure runs the `text` recipe for {prof.kate_iterations} iterations on the "
            f"original kate mask; seeds {seeds_s}.{reduced}"
        )
    if experiment == "cost":
        crop = f"{prof.table1_crop}x{prof.table1_crop} center crops" if prof.table1_crop else "native size"
        its = ", ".join(f"`{k}` {v or 'not run'}" for k, v in prof.cost_iterations.items())
        return (
            f"**Scale: the {prof.name} profile.** Both Table-1 recipes at "
            f"{', '.join(map(str, prof.cost_widths))} filters per layer on {', '.join(prof.cost_images)} as {crop} "
            f"(Table 1's own masks; its {prof.table1_width or 128}-filter runs are the sweep's remaining width); "
            f"iterations: {its}; seeds {seeds_s}; fp32, one CPU thread per run. Every check of a run is read as a "
            f"smaller iteration budget of the same recipe.{reduced}"
        )
    if experiment == "claims" and prof.claims:
        c = prof.claims
        kate = f"{prof.kate_size}x{prof.kate_size}" if prof.kate_size else "512x512"
        side = f"{c.depth_size}x{c.depth_size}" if c.depth_size else "native size"
        images = ", ".join(f"{i} ({m} mask{f', center {k} px' if k else ''})" for i, m, k in c.images)
        its = ", ".join(f"`{k}` {v}" for k, v in prof.table1_iterations.items())
        return (
            f"**Scale: the {prof.name} profile.** Both Table-1 recipes on kate's "
            f"text mask at {kate}, {prof.table1_width or 128} filters, iterations: {its}; a depth sweep "
            f"{', '.join(map(str, c.depths))} with and without skips, {c.width} filters, {c.iterations} "
            f"iterations, on {images} at {side}; seeds {', '.join(map(str, c.seeds))}.{reduced}"
        )
    return f"**Scale: the {prof.name} profile.** {prof.description}.{reduced}"


def glossary_facts() -> dict[str, Any]:
    """The library's thresholds the glossary names: the flattening rule's share and gain, the EMA's
    weight and the guard's drop."""
    from .config import FitConfig

    cfg = FitConfig()
    return {
        "late_share": f"{LATE_SHARE:.0%}",
        "flat_db": f"{FLAT_DB:g}",
        "ema_decay": f"{cfg.ema_decay:g}",
        "guard_db": f"{cfg.guard_drop_db:g}",
    }


# ---------------------------------------------------------------- Table 1


def display_names() -> dict[str, str]:
    from .data import TABLE1_ORDER

    return dict(TABLE1_ORDER)


def published() -> dict[str, dict[str, float | None]]:
    """Per file name: the paper's DIP and Papyan values and group 71's max PSNR (data/*.csv)."""
    from .data import group71_table1, paper_table1

    names = display_names()
    paper = {row["image"]: row for row in paper_table1()}
    g71 = {row["image"]: row for row in group71_table1()}
    out: dict[str, dict[str, float | None]] = {}
    for file_name, display in names.items():
        p = paper.get(display, {})
        g = next((v for k, v in g71.items() if k.startswith(file_name[:4])), None)
        out[file_name] = {
            "paper DIP": number(p.get("dip_psnr")),
            "paper Papyan": number(p.get("papyan_psnr")),
            "group 71": number(g["max_psnr"]) if g else None,
        }
    return out


def published_sources() -> dict[str, str]:
    """Where the published values come from, as ``data/*.csv`` records them: paper_source, group71_source."""
    from .data import group71_table1, paper_table1

    return {"paper_source": paper_table1()[0]["source"], "group71_source": group71_table1()[0]["source"]}


def table1_rows(records: Records, preset: str) -> list[dict[str, Any]]:
    """One dict per image with stored runs: our numbers (mean, std, n) and the published ones."""
    values = table1_values(records, preset)
    pub = published()
    seeds: dict[str, set[int]] = defaultdict(set)
    for r, _ in records:
        if r.method == "dip" and r.preset == preset:
            seeds[r.image].add(r.seed)
    order = list(display_names()) + [i for i in values if i not in display_names()]
    rows = []
    for image in order:
        if image not in values:
            continue
        rows.append({"image": image, "seeds": sorted(seeds.get(image, ())), **values[image], **pub.get(image, {})})
    return rows


def table1_people(records: Records, preset: str, comparable: bool, view: str = "dip") -> Table:
    """Table 1 for readers, a mean row last over the images that have each value. ``view`` "dip":
    per image our DIP numbers (four iterates, the hole, when the best came, the guard); "compared":
    our oracle and final output beside the peers and the paper's (and, for the seed's recipe, group
    71's) values. Two tables, so that each fits a page's width."""
    import pandas as pd

    names = display_names()
    rows = table1_rows(records, preset)
    full = "" if comparable else " (full scale)"
    out = []
    for v in rows:
        row = {
            "image": names.get(v["image"], v["image"]),
            "seeds": ", ".join(map(str, v["seeds"])) or DASH,
            "masked input": v["masked"][0],
        }
        for key, col in (("oracle", "DIP oracle"), ("final", "DIP final"), ("ema", "DIP EMA"), ("eswmv", "DIP ES-WMV")):
            row[col] = pm(*v[key])
        row["oracle, hole only"] = pm(*v["oracle_hole"])
        row["oracle iteration"] = v["best_it"][0] if v["best_it"][2] else float("nan")
        row["last 20% gain"] = v["late_gain"][0] if v["late_gain"][2] else float("nan")
        row["guard restores"] = v["restores"][0] if v["restores"][2] else float("nan")
        row["biharmonic"] = v["biharmonic"][0]
        row["CSC (sporco)"] = v["csc"][0]
        row["paper DIP" + full] = v.get("paper DIP")
        row["paper Papyan" + full] = v.get("paper Papyan")
        if preset == "table1-seed":
            row["group 71 (oracle, 512 px)"] = v.get("group 71")
        out.append(row)
    df = pd.DataFrame(out)
    if df.empty:
        return Table(df, f"{preset}: no stored runs yet")
    have = [v for v in rows if v["oracle"][2]]
    mean: dict[str, Any] = {"image": f"mean ({len(have)} images)", "seeds": ""}
    for key, col in (
        ("oracle", "DIP oracle"),
        ("final", "DIP final"),
        ("ema", "DIP EMA"),
        ("eswmv", "DIP ES-WMV"),
        ("oracle_hole", "oracle, hole only"),
    ):
        m = mean_of(v[key][0] for v in have)
        mean[col] = DASH if m is None else f"{m:.2f}"
    for col in df.columns:
        if col not in mean:
            m = mean_of(df.loc[[i for i, v in enumerate(rows) if v["oracle"][2]], col]) if have else None
            mean[col] = float("nan") if m is None else m
    mean["oracle iteration"] = (
        round(mean["oracle iteration"]) if np.isfinite(mean["oracle iteration"]) else float("nan")
    )
    df = pd.concat([df, pd.DataFrame([mean])], ignore_index=True)
    for col in ("oracle iteration",):
        df[col] = [DASH if not np.isfinite(v) else f"{round(v)}" for v in df[col]]
    df["guard restores"] = [
        DASH if not np.isfinite(v) else (f"{int(v)}" if float(v).is_integer() else f"{v:.1f}")
        for v in df["guard restores"]
    ]
    if view == "compared":
        keep = ["image", "DIP oracle", "DIP final"] + list(df.columns[df.columns.get_loc("biharmonic") :])
        return Table(
            df[keep], f"PSNR in dB, recipe {preset}, beside the peers on the same masks and the published values."
        )
    keep = list(df.columns[: df.columns.get_loc("biharmonic")])
    return Table(
        df[keep],
        f"PSNR in dB, recipe {preset}; {PM.strip()} is the sample standard deviation (ddof 1) over the "
        f"n seeds of each image (n in its own column).",
    )


def wins(a: dict[str, float], b: dict[str, float]) -> tuple[int, int, float | None]:
    common = [i for i in a if i in b]
    d = [a[i] - b[i] for i in common]
    return sum(x > 0 for x in d), len(common), (float(np.mean(d)) if d else None)


def per_image(records: Records, preset: str, key: str = "oracle") -> dict[str, float]:
    rows = table1_rows(records, preset)
    return {v["image"]: v[key][0] for v in rows if v[key][2]}


def table1_headline(records: Records) -> dict[str, Any]:
    """Table 1 at a profile's scale in a few numbers: the recipe with the higher mean oracle PSNR,
    that mean and its image count, the two peers' means over the same images' rows, and how far
    ES-WMV ends below the oracle on average (None where nothing is stored)."""
    best = None
    for preset in ("table1-paper", "table1-seed"):
        vals = per_image(records, preset)
        if vals and (best is None or np.mean(list(vals.values())) > best[1]):
            best = (preset, float(np.mean(list(vals.values()))), len(vals))
    if best is None:
        return {"recipe": None, "oracle": None, "images": 0, "csc": None, "biharmonic": None, "eswmv_gap": None}
    rows = table1_rows(records, best[0])
    es, ora = per_image(records, best[0], "eswmv"), per_image(records, best[0])
    return {
        "recipe": best[0],
        "oracle": best[1],
        "images": best[2],
        "csc": mean_of(v["csc"][0] for v in rows if v["csc"][2]),
        "biharmonic": mean_of(v["biharmonic"][0] for v in rows if v["biharmonic"][2]),
        "eswmv_gap": mean_of(ora[i] - es[i] for i in es if i in ora),
    }


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
        f"n seeds; drops > 1 dB is the mean number per run of falls of the clean PSNR by more than 1 dB between "
        "two consecutive checks, and the largest drop the deepest such fall.",
    )


# ---------------------------------------------------------------- claims


def claims_people(verdicts) -> Table:
    """The scored claims: verdict, effect with its 90% interval, and the evidence standard met."""
    df = verdicts[["claim", "verdict", "key", "standard"]].rename(
        columns={"key": "effect [90% CI] (n)", "standard": "evidence standard"}
    )
    return Table(df, "Computed from the stored results by each claim's rule (below).", wrap_last=True)


def claims_sides(verdicts) -> Table:
    """Each claim as the paper states it, as the seed report found it, and our verdict."""
    df = verdicts[["claim", "paper", "seed", "verdict", "key"]].rename(
        columns={"seed": "seed report (TU Delft group 71)", "verdict": "ours", "key": "our effect [90% CI] (n)"}
    )
    return Table(df, "The paper, the seed report and this report, claim by claim.", wrap_last=True, css="dip-claims")


def compute_total(loaded: dict[str, Loaded]) -> tuple[int, float]:
    """The stored runs of a profile and their compute in hours (the sum of their wall times)."""
    walls = [number(x["summary"].get("wall_time")) for L in loaded.values() for _, x in L.records]
    walls = [w for w in walls if w is not None]
    return len(walls), sum(walls) / 3600


def claim_section(row, stored: Records) -> str:
    """Markdown for one scored claim: its question, rule, result, and the runs that would decide it."""

    def end(text: str) -> str:
        return text if text.endswith((".", "?", "!")) else text + "."

    out = [
        f"### {row.claim}",
        f"**Question.** {end(row.question)}",
        f"**Rule.** {end(row.rule[0].upper() + row.rule[1:])}",
        f"**Result: {row.verdict}.** {end(row.evidence[0].upper() + row.evidence[1:])}",
    ]
    if row.standard:
        out.append(f"**Standard met.** {end(row.standard[0].upper() + row.standard[1:])}")
    if row.deciding:
        out.append(
            f"**What would decide it.** {len(row.deciding)} runs "
            f"({', '.join(sorted({r.experiment for r in row.deciding}))}), "
            f"{duration(estimate_seconds(list(row.deciding), stored))} of compute on this machine."
        )
    return "\n\n".join(out)


def seed_beside_ours(loaded: dict[str, Loaded], ns) -> Table:
    """The seed report's experiment-level findings beside ours, each computed from stored results
    (theirs from the published values in data/); ``ns``: ``table1_cpu.summary`` of the native-size runs."""
    from .claims import seed_facts

    facts = seed_facts()
    rows = []
    if ns.images:
        ours = f"{ns.mean_final:.2f} dB against the paper's {ns.mean_paper:.2f} on the same {ns.images} images"
    else:
        ours = "not computed at native size"
    rows.append(
        (
            "Table 1 mean (paper scale)",
            f"{facts['g71']:.2f} dB, the 256 px images resized to 512: {facts['g71_resized']:+.2f} dB against the "
            f"paper on those 4, {facts['g71_other']:+.2f} dB on the other 7",
            f"native size, no resize: {ours}",
        )
    )
    best = _best_setting(
        [(r, x) for r, x in loaded["arch"].records if r.label.endswith("filters")], lambda r: r.filters
    )
    if best:
        rows.append(("best width on kate (filters per layer)", f"{facts['g71_best_width']}", _setting_text(*best)))
    adam = [(r, x) for r, x in loaded["optim"].records if r.optimizer == "adam" and r.guard is None]
    best = _best_setting(adam, lambda r: r.lr)
    if best:
        rows.append(("best Adam learning rate on kate", f"{SEED_BEST_LR:g}", _setting_text(*best)))
    trial = [(r, x) for r, x in loaded["optim"].records if r.lr == 0.1 and r.guard is not None]
    if trial:
        finals = ", ".join(
            f"guard {'on' if r.guard else 'off'} seed {r.seed}: {x['summary']['final_psnr']:.2f} dB" for r, x in trial
        )
        rows.append(("Adam lr 0.1 (its trial 3)", "the output turns all black after a destabilisation", finals))
    rows.append(
        (
            "skips at depth 2 (kate)",
            f"{facts['g71_skip2']:+.2f} dB without them (128 filters)",
            "claim 6 below (16 filters, kate and library)",
        )
    )
    import pandas as pd

    df = pd.DataFrame(rows, columns=["experiment", "seed report", "this report"])
    return Table(df, "The seed report's findings (its text and figures) beside ours.", wrap_last=True)


def _best_setting(records: Records, key) -> tuple[Any, float, int] | None:
    """The setting ``key(run)`` with the highest mean oracle over its seeds: (setting, mean, seeds)."""
    from .scores import by

    groups = {k: [oracle(x) for _, x in recs] for k, recs in by(records, key).items()}
    if not groups:
        return None
    best = max(groups, key=lambda k: np.mean(groups[k]))
    return best, float(np.mean(groups[best])), len(groups[best])


def _setting_text(setting: Any, mean: float, n: int) -> str:
    return f"{setting:g} ({mean:.2f} dB best PSNR, mean over {n} seeds)"


# the seed report's best learning rate (TU Delft group 71, experiment 3: "adam and LR=0.001 with 6001 epochs")
SEED_BEST_LR = 0.001


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


def table1_zoom(records: Records, store: ResultStore):
    """(figure, caption): one Table-1 image (the first with both recipes stored) restored four ways,
    zoomed, with error maps; None when nothing fits."""
    for image in display_names():
        a, b = (
            _first(records, image=image, method="dip", preset="table1-paper"),
            _first(records, image=image, method="dip", preset="table1-seed"),
        )
        if a and b:
            break
    else:
        return None, ""
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
    return fig, (
        f"{display_names().get(image, image)}: the whole image, a zoom on the red box, and the absolute error "
        f"(brighter is worse) for each method; the DIP panels show seed {a[0].seed}."
    )


def arch_zoom(records: Records, store: ResultStore, mask: str = "text-seed"):
    """(figure, caption): kate restored by the narrowest and the widest network of the filters sweep."""
    sel = [(r, x) for r, x in records if r.mask == mask and not r.label.startswith("depth") and oracle(x) is not None]
    if len(sel) < 2:
        return None, ""
    from .plots import zoom_compare

    lo = min(sel, key=lambda rx: (rx[0].filters, rx[0].seed))
    hi = max(sel, key=lambda rx: oracle(rx[1]))
    gt, _ = load_problem(lo[0])
    panels = [("masked input", store.image(lo[0], "observed"))]
    panels += [(f"{r.label}, best\nseed {r.seed}: {oracle(x):.2f} dB", store.image(r, "best")) for r, x in (lo, hi)]
    return zoom_compare(gt, panels), (
        f"kate with the `{mask}` mask: the narrowest network against the best one of "
        f"the filters sweep, zoomed, with error maps."
    )


def optim_zoom(records: Records, store: ResultStore):
    """(figure, caption): the best and the worst optimiser's final outputs, zoomed, with error maps."""
    sel = [(r, x) for r, x in records if oracle(x) is not None]
    if len(sel) < 2:
        return None, ""
    from .plots import zoom_compare

    best, worst = max(sel, key=lambda rx: oracle(rx[1])), min(sel, key=lambda rx: oracle(rx[1]))
    gt, _ = load_problem(best[0])
    panels = [("masked input", store.image(best[0], "observed"))]
    panels += [
        (f"{r.label}, final\nseed {r.seed}: {x['summary']['final_psnr']:.2f} dB", store.image(r, "final"))
        for r, x in (best, worst)
    ]
    return zoom_compare(gt, panels), "The best and the worst optimiser's final outputs, zoomed, with error maps."


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
