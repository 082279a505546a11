"""Table 1 (50% Bernoulli inpainting on 11 images): its plan, its tables for readers, and the
numbers the narrative of notebook 01 cites, formatted for the page (a dash where nothing is stored)
and glued (``myst_nb.glue``) into the notebook's own Markdown."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from typing import Any

import numpy as np

from ..core.errors import DipError
from .facts import DASH, listing, mean_of, num, number
from .runs import ALL_TABLE1, CPU_BF16_NUMERICS, TABLE1_CPU_IMAGES, Pairs, Profile, Run, widths
from .scores import Records, table1_values
from .tables import PM, Table, pm


def problem(prof: Profile, experiment: str, source: str = "table1") -> dict[str, Any]:
    """The Run fields of Table 1's problems at ``prof`` (its crop, the 50% Bernoulli mask, its check
    interval), for the experiments that reuse them."""
    return dict(
        experiment=experiment,
        profile=prof.name,
        source=source,
        crop=prof.table1_crop,
        mask="bernoulli",
        missing=0.5,
        log_every=prof.log_every,
    )


def recipe_net(preset: str, width: int | None) -> Pairs:
    """A Table-1 recipe's network at ``width`` filters per layer (None: the recipe's own); the paper's
    recipe keeps its 4 skip channels."""
    return widths(width, skip=4 if preset == "table1-paper" else None)


def plan_native(prof: Profile, seeds: tuple[int, ...] | None = None) -> list[Run]:
    """The paper profile's ``table1-paper`` runs of the four 256 px images at native size on the CPU's
    bf16 numerics, with their peers: the same runs (masks, ids) as ``plan("table1", "paper")`` has for
    those images, so a GPU and a CPU result of one image share the problem."""
    if prof.name != "paper":
        raise DipError(f"the table1-cpu plan is the paper profile's, not the {prof.name} profile's")
    mine = [r for r in plan(prof, seeds or (0,)) if r.image in TABLE1_CPU_IMAGES]
    dip = [replace(r, numerics=CPU_BF16_NUMERICS) for r in mine if r.method == "dip" and r.preset == "table1-paper"]
    return dip + [r for r in mine if r.method != "dip"]


def plan(prof: Profile, seeds: tuple[int, ...] | None = None, images: tuple[str, ...] | None = None) -> list[Run]:
    """The profile's Table-1 runs (``seeds`` and ``images`` default to its own): seed by seed, every
    image of a seed before the next seed (a partial budget yields whole seeds); the CPU peers last,
    so that a GPU budget is spent on DIP first."""
    seeds, images = seeds or prof.seeds_table1, tuple(images or prof.table1_images)
    runs: list[Run] = []
    source = "table1" if not images or images[0] in ALL_TABLE1 else "embedded"
    base = problem(prof, "table1", source)
    for seed in seeds:
        for preset in ("table1-paper", "table1-seed"):
            net = recipe_net(preset, prof.table1_width)
            for k, image in enumerate(images):
                runs.append(
                    Run(
                        image=image,
                        mask_seed=1000 + k,
                        preset=preset,
                        net=net,
                        iterations=prof.table1_iterations[preset],
                        seed=seed,
                        **base,
                    )
                )
    for k, image in enumerate(images):
        runs.append(Run(image=image, mask_seed=1000 + k, method="biharmonic", preset="", **base))
        runs.append(
            Run(image=image, mask_seed=1000 + k, method="csc", preset="", csc_iterations=prof.csc_iterations, **base)
        )
    return runs


def display_names() -> dict[str, str]:
    from ..core.data import TABLE1_ORDER

    return dict(TABLE1_ORDER)


def published() -> dict[str, dict[str, float | None]]:
    """Per file name: the paper's DIP and Papyan values and group 71's max PSNR (data/*.csv)."""
    from ..core.data import group71_table1, paper_table1

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
    from ..core.data import group71_table1, paper_table1

    return {"paper_source": paper_table1()[0]["source"], "group71_source": group71_table1()[0]["source"]}


def image_rows(records: Records, preset: str) -> list[dict[str, Any]]:
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


def people(records: Records, preset: str, comparable: bool, view: str = "dip") -> Table:
    """Table 1 for readers, a mean row last over the images that have each value. ``view`` "dip":
    per image our DIP numbers (four iterates, the hole, when the best came, the guard); "compared":
    our oracle and final output beside the peers and the paper's (and, for the seed's recipe, group
    71's) values. Two tables, so that each fits a page's width."""
    import pandas as pd

    names = display_names()
    rows = image_rows(records, preset)
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
    rows = image_rows(records, preset)
    return {v["image"]: v[key][0] for v in rows if v[key][2]}


def recipe_facts(records: Records, preset: str) -> dict[str, Any]:
    """One recipe against the peers, the user's iterates and the paper: images stored, mean oracle
    PSNR, wins and mean differences against CSC and biharmonic, how far the final output and
    ES-WMV end below the oracle, and the mean difference from the paper's DIP values."""
    rows = image_rows(records, preset)
    ours = per_image(records, preset)
    csc = {v["image"]: v["csc"][0] for v in rows if v["csc"][2]}
    bih = {v["image"]: v["biharmonic"][0] for v in rows if v["biharmonic"][2]}
    es = {v["image"]: v["eswmv"][0] for v in rows if v["eswmv"][2]}
    fin = {v["image"]: v["final"][0] for v in rows if v["final"][2]}
    pub = published()
    paper = {i: pub[i]["paper DIP"] for i in ours if pub.get(i, {}).get("paper DIP") is not None}
    w, n, d = wins(ours, csc)
    wb, nb, db = wins(ours, bih)
    return {
        "images": len(ours),
        "oracle": num(mean_of(ours.values())),
        "csc_wins": w,
        "csc_n": n,
        "csc_diff": num(d, "+.2f"),
        "bih_wins": wb,
        "bih_n": nb,
        "bih_diff": num(db, "+.2f"),
        "final_gap": num(mean_of(ours[i] - fin[i] for i in fin if i in ours)),
        "eswmv_gap": num(mean_of(ours[i] - es[i] for i in es if i in ours)),
        "paper_diff": num(mean_of(ours[i] - paper[i] for i in paper), "+.2f"),
    }


def recipes_facts(records: Records) -> dict[str, Any]:
    """``table1-seed`` against ``table1-paper`` on the images that have both: how many it wins and
    loses, the mean oracle difference, and which recipe leads."""
    a, b = per_image(records, "table1-paper"), per_image(records, "table1-seed")
    w, n, d = wins(b, a)
    return {
        "both": n,
        "seed_wins": w,
        "seed_losses": n - w,
        "seed_diff": num(d, "+.2f"),
        "lead": DASH if not n else ("table1-seed" if (d or 0) > 0 else "table1-paper"),
    }


def timing_facts(df) -> dict[str, Any]:
    """The slowest DIP recipe's and the fastest peer's median seconds per run (``plots.peers_timing``)."""
    rows = df.to_dict("records") if hasattr(df, "to_dict") else []
    dip = [r for r in rows if r["method"].startswith("DIP")]
    peers = [r for r in rows if not r["method"].startswith("DIP") and r["runs"]]
    slow = max(dip, key=lambda r: r["median seconds"]) if dip else None
    fast = min(peers, key=lambda r: r["median seconds"]) if peers else None
    return {
        "dip_method": slow["method"] if slow else DASH,
        "dip_seconds": num(slow["median seconds"] if slow else None, ".0f"),
        "peer_method": fast["method"] if fast else DASH,
        "peer_seconds": num(fast["median seconds"] if fast else None, ".2f"),
    }


def gain_facts(records: Records, preset: str) -> dict[str, Any]:
    """The images where DIP's oracle gains most and least over the masked input, with the gains."""
    gains = {
        display_names().get(v["image"], v["image"]): v["oracle"][0] - v["masked"][0]
        for v in image_rows(records, preset)
        if v["oracle"][2] and v["masked"][2]
    }
    hi = max(gains, key=gains.get) if gains else None
    lo = min(gains, key=gains.get) if gains else None
    return {
        "most": hi or DASH,
        "most_gain": num(gains.get(hi), "+.2f"),
        "least": lo or DASH,
        "least_gain": num(gains.get(lo), "+.2f"),
    }


def scale_facts(prof: Profile) -> dict[str, Any]:
    """The scale of Table 1's runs at ``prof``, for the notebook's setup paragraph."""
    crop = prof.table1_crop
    return {
        **prof.scale_facts(),
        "images": len(prof.table1_images),
        "size": f"{crop}x{crop} center crops" if crop else "native size (256 or 512 px)",
        "width": prof.table1_width or 128,
        "paper_iterations": prof.table1_iterations["table1-paper"],
        "seed_iterations": prof.table1_iterations["table1-seed"],
        "seeds": listing(prof.seeds_table1),
        "csc_iterations": prof.csc_iterations,
        "log_every": prof.log_every,
    }


def headline_facts(records: Records) -> dict[str, Any]:
    """Table 1 at a profile's scale in a few numbers: the recipe with the higher mean oracle PSNR,
    that mean and its image count, and the two peers' means over the same images' rows."""
    means = {p: per_image(records, p) for p in ("table1-paper", "table1-seed")}
    means = {p: v for p, v in means.items() if v}
    if not means:
        return {"recipe": DASH, "oracle": DASH, "images": 0, "csc": DASH, "biharmonic": DASH}
    best = max(means, key=lambda p: mean_of(means[p].values()))
    rows = image_rows(records, best)
    return {
        "recipe": best,
        "oracle": num(mean_of(means[best].values())),
        "images": len(means[best]),
        "csc": num(mean_of(v["csc"][0] for v in rows if v["csc"][2])),
        "biharmonic": num(mean_of(v["biharmonic"][0] for v in rows if v["biharmonic"][2])),
    }
