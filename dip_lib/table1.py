"""Table 1's numbers for the narrative of notebook 01: each function returns the values one
paragraph of the notebook cites, formatted for the page (a dash where nothing is stored), to be
glued (``myst_nb.glue``) into the notebook's own Markdown. The tables and figures stay in ``pages``
and ``plots``."""

from __future__ import annotations

from typing import Any

from .pages import DASH, display_names, mean_of, num, per_image, published, table1_rows, wins
from .scores import Records


def recipe_facts(records: Records, preset: str) -> dict[str, Any]:
    """One recipe against the peers, the user's iterates and the paper: images stored, mean oracle
    PSNR, wins and mean differences against CSC and biharmonic, how far the final output and
    ES-WMV end below the oracle, and the mean difference from the paper's DIP values."""
    rows = table1_rows(records, preset)
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
        for v in table1_rows(records, preset)
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
