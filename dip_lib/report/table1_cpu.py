"""Table 1 at the paper's scale where a CPU reaches it: the four 256 px images at native size.

The runs are the paper profile's ``table1-paper`` runs of house, peppers, cameraman and montage
(``registry.plan("table1-cpu", "paper")``: 128 filters, 11000 iterations, the guard on, the same masks
as the paper profile's) on the CPU's bf16 numerics, with the two peers at native size. The paper's
notebook reports the output after its last iteration, so the final output is the number set beside
the paper's; the oracle (the best check) and ES-WMV (no-reference early stopping) are shown beside it.
ES-WMV's value is, by the page's definition, the clean output's PSNR at the first check at or after the
iterate the rule chose, read from the run's history (``eswmv_psnr``); the guard's restores are shown
beside it, and the hardware is named as each record's environment names it (``devices``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .facts import DASH, mean_of, num
from .registry import plan
from .runs import TABLE1_CPU_IMAGES
from .scores import Records
from .store import ResultStore

PLAN = "table1-cpu"


def load(store: ResultStore) -> Records:
    """The stored records of the plan (DIP and peers), in plan order; missing runs left out."""
    from .runner import load_records

    return load_records(plan(PLAN, "paper"), store, partial=True)


@dataclass(frozen=True)
class Summary:
    """What the prose of the section says, computed from the records."""

    images: int  # images with a stored DIP run
    of_table: int  # the images of the paper's Table 1
    planned: int  # the images this plan covers
    mean_final: float | None
    mean_paper: float | None
    mean_diff: float | None  # ours (final) - paper's, over the images we have
    closest: tuple[str, float] | None  # image and |final - paper| of the closest
    farthest: tuple[str, float] | None
    beats_papyan: int  # images whose final output beats Papyan et al.'s published value
    hours: float  # wall time of the DIP runs, summed
    device: str  # the CPUs as the records name them, with their images where they differ
    numerics: str


def eswmv_psnr(rec: dict[str, Any]) -> float | None:
    """ES-WMV's PSNR by its stated definition: the clean output's PSNR at the first check at or after
    the iterate the rule chose, from the run's history (None: the rule chose nothing)."""
    it = (rec.get("eswmv") or {}).get("iteration")
    h = rec.get("history") or {}
    if it is None or not h.get("iteration"):
        return None
    for i, p in zip(h["iteration"], h["psnr_clean"]):
        if i >= it:
            return p
    return None


def devices(records: Records) -> str:
    """The hardware of the DIP runs as their records name it: 'AMD EPYC (house, peppers) and Intel(R)
    Xeon(R) Processor (montage, cameraman)', or one name when all ran on one kind."""
    from ..core.data import TABLE1_ORDER

    label = dict(TABLE1_ORDER)
    by: dict[str, list[str]] = {}
    for run, rec in records:
        if run.method == "dip":
            by.setdefault(rec["environment"]["device_name"], []).append(label.get(run.image, run.image))
    if len(by) == 1:
        return next(iter(by))
    return " and ".join(f"{name} ({', '.join(images)})" for name, images in by.items())


def rows(records: Records) -> list[dict[str, Any]]:
    """One row per image with a stored DIP run: our numbers, the peers', the published ones."""
    from ..core.data import TABLE1_ORDER, paper_table1

    label = dict(TABLE1_ORDER)
    paper = {r["name"]: r for r in paper_table1()}
    peers = {(r.image, r.method): rec["summary"]["final_psnr"] for r, rec in records if r.method != "dip"}
    out = []
    for run, rec in records:
        if run.method != "dip":
            continue
        s, es = rec["summary"], rec.get("eswmv") or {}
        pub = paper.get(run.image, {})
        out.append(
            {
                "image": label.get(run.image, run.image),
                "size": f"{rec['config'].get('crop') or 'native'}",
                "seed": run.seed,
                "final": s["final_psnr"],
                "oracle": s["oracle_psnr"],
                "oracle_iteration": s["oracle_iteration"],
                "eswmv": eswmv_psnr(rec),
                "eswmv_iteration": es.get("iteration"),
                "restores": s.get("guard_restores"),
                "paper": pub.get("dip_psnr"),
                "papyan": pub.get("papyan_psnr"),
                "biharmonic": peers.get((run.image, "biharmonic")),
                "csc": peers.get((run.image, "csc")),
                "hours": rec["wall_time"] / 3600,
                "_device": rec["environment"]["device_name"],
                "_numerics": dict(run.numerics),
            }
        )
    return out


def summary(records: Records) -> Summary:
    from ..core.data import TABLE1_ORDER

    rs = rows(records)
    have = [r for r in rs if r["paper"] is not None]
    diffs = [(r["image"], r["final"] - r["paper"]) for r in have]
    numerics = rs[0]["_numerics"] if rs else {}
    return Summary(
        images=len(rs),
        of_table=len(TABLE1_ORDER),
        planned=len(TABLE1_CPU_IMAGES),
        mean_final=mean_of(r["final"] for r in have),
        mean_paper=mean_of(r["paper"] for r in have),
        mean_diff=mean_of(d for _, d in diffs),
        closest=min(diffs, key=lambda d: abs(d[1])) if diffs else None,
        farthest=max(diffs, key=lambda d: abs(d[1])) if diffs else None,
        beats_papyan=sum(r["final"] > r["papyan"] for r in have if r["papyan"] is not None),
        hours=sum(r["hours"] for r in rs),
        device=devices(records),
        numerics=", ".join(f"{k} {v}" for k, v in numerics.items() if k != "device"),
    )


def table(records: Records):
    """The section's table for readers (pandas), a mean row last; empty when nothing is stored."""
    import pandas as pd

    rs = rows(records)
    if not rs:
        return pd.DataFrame()
    df = pd.DataFrame(
        [
            {
                "image": r["image"],
                "seed": r["seed"],
                "DIP final": r["final"],
                "DIP oracle": r["oracle"],
                "oracle iteration": r["oracle_iteration"],
                "DIP ES-WMV": r["eswmv"],
                "guard restores": r["restores"],
                "paper DIP": r["paper"],
                "final - paper": None if r["paper"] is None else r["final"] - r["paper"],
                "paper Papyan": r["papyan"],
                "biharmonic": r["biharmonic"],
                "CSC (sporco)": r["csc"],
                "hours": r["hours"],
            }
            for r in rs
        ]
    )
    mean = {
        c: df[c].mean() for c in df.columns if c not in ("image", "seed", "oracle iteration", "guard restores", "hours")
    }
    df = pd.concat([df, pd.DataFrame([{"image": f"mean ({len(df)} images)", "seed": "", **mean}])], ignore_index=True)
    for col in ("oracle iteration", "guard restores"):
        df[col] = [("" if v is None or v != v else f"{int(v)}") for v in df[col]]
    return df.round(2)


def facts(records: Records) -> dict[str, Any]:
    """``summary`` formatted for the notebook's Markdown (a dash where nothing is stored)."""
    s = summary(records)
    return {
        "images": s.images,
        "of_table": s.of_table,
        "final": num(s.mean_final),
        "paper": num(s.mean_paper),
        "diff": num(s.mean_diff, "+.2f"),
        "closest": num(s.closest[1] if s.closest else None, "+.2f"),
        "closest_image": s.closest[0] if s.closest else DASH,
        "farthest": num(s.farthest[1] if s.farthest else None, "+.2f"),
        "farthest_image": s.farthest[0] if s.farthest else DASH,
        "beats": s.beats_papyan,
        "hours": num(s.hours if s.images else None, ".1f"),
        "device": s.device or DASH,
        "restores": ", ".join(f"{r['restores']} ({r['image']})" for r in rows(records)) or DASH,
        "numerics": s.numerics or DASH,
    }
