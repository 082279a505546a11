"""The claims at the paper's own setting, scored by the rules registered in
``data/claims_registration.json`` before the runs that decide them (native size: the ``table1-cpu``
and ``fig8`` plans of the paper profile).

The image is the unit: a claim's value is computed per run, averaged over the seeds (and, where a
claim reads several runs of one image, over those runs) within each image; the spread over seeds is
reported as within-image variability. A claim's effect is the mean of the per-image values with a
90% Student-t interval over images and the sign count ("k of n images"). With fewer images than the
registration's ``min_images`` a claim is described, not decided. Which git commit registered each
claim's rule is read from the file's history; a rule that changed after its deciding runs were
stored is flagged."""

from __future__ import annotations

import json
import subprocess
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from .claims import DESCRIBED, NOT_SUPPORTED, PARTIAL, SUPPORTED, UNDECIDED, Effect, effect, n_images
from .facts import DASH, listing, num
from .runs import HOLES, Run
from .scores import Records

REGISTRATION = Path("data") / "claims_registration.json"
RULE_FIELDS = ("metric", "rule", "thresholds", "runs")  # a change of these after the runs is flagged
PLANS = ("table1-cpu", "fig8")  # the paper profile's plans that a CPU reaches


def _root() -> Path:
    from .store import find_root

    return find_root()


def registration(root: Path | None = None) -> dict[str, Any]:
    return json.loads(((root or _root()) / REGISTRATION).read_text())


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def registered_at(root: Path | None = None) -> dict[int, tuple[str, datetime]]:
    """claim id -> (commit, its time): the oldest commit since which the claim's registered rule
    (``RULE_FIELDS``) has stayed as it is now. Empty outside a git checkout."""
    root = root or _root()
    log = _git(root, "log", "--format=%h %cI", "--", str(REGISTRATION))
    if not log:
        return {}
    rule = lambda c: {k: c.get(k) for k in RULE_FIELDS}  # noqa: E731
    now = {c["id"]: rule(c) for c in registration(root)["claims"]}
    out: dict[int, tuple[str, datetime]] = {}
    changed: set[int] = set()
    for line in log.splitlines():  # newest first
        commit, when = line.split()
        text = _git(root, "show", f"{commit}:{REGISTRATION.as_posix()}")
        then = {c["id"]: rule(c) for c in json.loads(text)["claims"]} if text else {}
        for cid, current in now.items():
            if cid in changed or then.get(cid) != current:
                changed.add(cid)
            else:
                out[cid] = (commit, datetime.fromisoformat(when))
    return out


def _matches(run: Run, sel: dict[str, Any]) -> bool:
    return all(
        getattr(run, k) in (v if isinstance(v, list) else [v])
        for k, v in sel.items()
        if k not in ("experiment", "profile")
    )


def planned(claim: dict[str, Any]) -> list[Run]:
    """The runs a registered claim reads, as its plans list them."""
    from .registry import plan

    return [r for sel in claim["runs"] for r in plan(sel["experiment"], sel["profile"]) if _matches(r, sel)]


# ---------------------------------------------------------------- per-run values, per-image means


def hole_gap(rec: dict[str, Any]) -> float | None:
    """Best check's PSNR on the missing pixels minus the final output's (dB). A check whose iterate the
    destabilisation guard threw away (``restored``) is no check a user could stop at: the run held the
    last good weights there, so it is left out."""
    h = rec.get("history") or {}
    restored = h.get("restored") or [False] * len(h.get("psnr_hole") or [])
    holes = [v for v, r in zip(h.get("psnr_hole") or [], restored) if v is not None and not r]
    final = rec["summary"].get("final_hole_psnr")
    return max(holes) - final if holes and final is not None else None


def destabilised(rec: dict[str, Any], jump: float) -> bool:
    """The loss on the known pixels grew by ``jump`` or more between two consecutive checks."""
    loss = [v for v in (rec.get("history") or {}).get("loss") or [] if v is not None and v > 0]
    return any(b >= jump * a for a, b in zip(loss, loss[1:]))


def final_hole(rec: dict[str, Any]) -> float | None:
    return rec["summary"].get("final_hole_psnr")


@dataclass(frozen=True)
class PerImage:
    """A value per image: its mean over the image's runs, their spread (sd) and how many."""

    mean: dict[str, float]
    sd: dict[str, float]
    n: dict[str, int]

    def spread(self) -> str:
        """The within-image variability: the largest seed sd over images."""
        sds = [v for v in self.sd.values() if np.isfinite(v)]
        return f"{max(sds):.2f} dB" if sds else "none yet (one seed per image)"


def per_image(records: Records, value: Callable[[dict[str, Any]], float | None]) -> PerImage:
    groups: dict[str, list[float]] = defaultdict(list)
    for r, x in records:
        v = value(x)
        if v is not None and np.isfinite(v):
            groups[r.image].append(float(v))
    return PerImage(
        {k: float(np.mean(v)) for k, v in groups.items()},
        {k: float(np.std(v, ddof=1)) if len(v) > 1 else float("nan") for k, v in groups.items()},
        {k: len(v) for k, v in groups.items()},
    )


def paired(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """a - b on the images both have."""
    return {k: a[k] - b[k] for k in sorted(a) if k in b}


@dataclass(frozen=True)
class Contrast:
    """One registered comparison over images: its effect and sign count."""

    name: str
    values: dict[str, float]
    effect: Effect = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "effect", effect(self.values.values()))

    @property
    def k(self) -> int:
        return sum(v > 0 for v in self.values.values())

    def text(self) -> str:
        e = self.effect
        if not e.n:
            return f"{self.name}: no image yet"
        interval = f" [{e.lo:+.2f}, {e.hi:+.2f}]" if e.n > 1 else ""
        return f"{self.name}: {e.mean:+.2f} dB{interval}, higher on {self.k} of {n_images(e.n)}"


# ---------------------------------------------------------------- the six claims' registered measures


def _select(records: dict[str, Records], claim: dict[str, Any], **extra: Any) -> Records:
    return [
        (r, x) for sel in claim["runs"] for r, x in records.get(sel["experiment"], []) if _matches(r, {**sel, **extra})
    ]


def _dip(records: Records, preset: str, mask: str | None = None, skips: bool = False) -> Records:
    return [
        (r, x)
        for r, x in records
        if r.method == "dip" and r.preset == preset and bool(r.net) == skips and (mask is None or r.mask == mask)
    ]


def measures(claim: dict[str, Any], records: dict[str, Records]) -> tuple[list[Contrast], str, PerImage | None]:
    """The registered contrasts of one claim, a note on what else it counts, and the per-image values
    its spread is read from."""
    cid, t = claim["id"], claim["thresholds"]
    recs = _select(records, claim)
    if cid == 1:
        dip = [(r, x) for r, x in recs if r.method == "dip"]
        gap = per_image(dip, hole_gap)
        jumped = [destabilised(x, t["jump_factor"]) for _, x in dip]
        lost = [(hole_gap(x) or 0.0) > t["gap_db"] for _, x in dip]
        gradual = sum(g and not j for g, j in zip(lost, jumped))
        restores = sum(int(x["summary"].get("guard_restores") or 0) for _, x in dip)
        note = (
            f"{sum(jumped)} of {len(dip)} runs destabilised (the loss grew {t['jump_factor']:g}x or more between "
            f"two checks); of the others {gradual} declined gradually by more than {t['gap_db']:g} dB and "
            f"{len(dip) - sum(jumped) - gradual} ended within {t['gap_db']:g} dB of their best check; the guard "
            f"restored the weights {restores} times in all, which hides those falls from the final output"
        )
        return [Contrast("best check - final output, hole PSNR", gap.mean)], note, gap
    if cid == 2:
        from ..core.data import paper_table1

        ours = per_image([(r, x) for r, x in recs if r.method == "dip"], lambda x: x["summary"].get("final_psnr"))
        papyan = {row["name"]: row["papyan_psnr"] for row in paper_table1()}
        return [Contrast("our final output - Papyan et al.", paired(ours.mean, papyan))], "", ours
    if cid == 3:
        cells = {
            (mask, skips): per_image(_dip(recs, "fig8-skip6", mask, skips), final_hole)
            for mask in ("bernoulli", HOLES)
            for skips in (True, False)
        }
        gain = {mask: paired(cells[(mask, True)].mean, cells[(mask, False)].mean) for mask in ("bernoulli", HOLES)}
        note = (
            f"skips minus none: {Contrast('Bernoulli', gain['bernoulli']).text()}; "
            f"{Contrast('large holes', gain[HOLES]).text()}"
        )
        return [Contrast("skip gain, Bernoulli - large holes", paired(gain["bernoulli"], gain[HOLES]))], note, None
    recs = [(r, x) for r, x in recs if cid < 4 or r.mask != "bernoulli"]  # 4-6 are about large holes
    if cid == 4:
        dip = per_image(_dip(recs, "fig8-skip6"), final_hole)
        bih = per_image([(r, x) for r, x in recs if r.method == "biharmonic"], final_hole)
        return [Contrast("fig8-skip6 - biharmonic, hole PSNR", paired(dip.mean, bih.mean))], "", dip
    if cid in (5, 6):
        nets = {p: per_image(_dip(recs, p), final_hole) for p in claim["runs"][0]["preset"]}
        base, *others = claim["runs"][0]["preset"]
        return (
            [Contrast(f"{base} - {o}, hole PSNR", paired(nets[base].mean, nets[o].mean)) for o in others],
            "",
            nets[base],
        )
    raise ValueError(f"no measure for claim {cid}")


def _verdict(contrasts: list[Contrast], threshold: float, min_images: int) -> str:
    if min(c.effect.n for c in contrasts) < min_images:
        return DESCRIBED
    sides = [c.effect.side(threshold) for c in contrasts]
    if all(s == 1 for s in sides):
        return SUPPORTED
    return NOT_SUPPORTED if any(s == -1 for s in sides) else UNDECIDED


@dataclass(frozen=True)
class Scored:
    id: int
    title: str
    paper: str
    question: str
    rule: str
    thresholds: dict[str, float]
    verdict: str
    evidence: str
    scale: str
    registered: str
    flagged: bool
    missing: list[Run]
    decide: str = ""  # for an undecided claim: how many images would decide it, and where more come from
    fresh: str = ""  # for a flagged claim: its rule on the runs stored since its registration alone


def _scale(recs: Records) -> str:
    dip = [r for r, _ in recs if r.method == "dip"]
    if not dip:
        return "no run stored yet"
    from ..core.nets import describe_net
    from .runs import fit_config, net_config

    its = sorted({fit_config(r).iterations for r in dip})
    images = sorted({r.image for r in dip})
    seeds = sorted({r.seed for r in dip})
    nets = sorted({describe_net(net_config(r)) for r in dip})
    return (
        f"native size; {listing(nets)}; {listing(its)} iterations; {n_images(len(images))} ({listing(images)}); "
        f"seeds {listing(seeds)}; {dict(dip[0].numerics).get('precision', 'fp32')} on {dict(dip[0].numerics)['device']}"
    )


def _stored_since(recs: Records) -> datetime | None:
    dates = [x.get("environment", {}).get("date") for _, x in recs]
    dates = [datetime.fromisoformat(d) for d in dates if d]
    return min(dates) if dates else None


def _since(records: dict[str, Records], when: datetime) -> dict[str, Records]:
    """The records stored after ``when`` (their environment's date)."""
    return {
        p: [(r, x) for r, x in recs if (d := x.get("environment", {}).get("date")) and datetime.fromisoformat(d) > when]
        for p, recs in records.items()
    }


def _fresh(claim: dict[str, Any], records: dict[str, Records], when: datetime, min_images: int, waiting: bool) -> str:
    """A flagged claim's rule on the runs stored since its registration alone (what decides it afresh):
    its contrasts and the verdict they give, or that none is stored yet."""
    contrasts, _, _ = measures(claim, _since(records, when))
    if not any(c.effect.n for c in contrasts):
        return "no run it reads has been stored since its registration yet"
    threshold = next(iter(claim["thresholds"].values()))
    verdict = PARTIAL if waiting else _verdict(contrasts, threshold, min_images)
    return f"on the runs stored since its registration alone: {'; '.join(c.text() for c in contrasts)} ({verdict})"


def _reads(claim: dict[str, Any], run: Run) -> bool:
    """Whether the claim's measures read this run of its selection: claims 4-6 are about large holes and
    the networks as published (claim 3's variants with skip channels and its Bernoulli runs are not theirs)."""
    return claim["id"] < 4 or (run.mask != "bernoulli" and not run.net)


def more_images(claim: dict[str, Any]) -> list[Run]:
    """The runs on more images that could decide the claim (``more_images``, not part of its rule)."""
    from .registry import plan

    sels = claim.get("more_images", [])
    return [r for sel in sels for r in plan(sel["experiment"], sel["profile"]) if _matches(r, sel) and _reads(claim, r)]


def to_decide(claim: dict[str, Any], contrasts: list[Contrast], threshold: float, min_images: int) -> str:
    """What would decide an undecided or described claim: the images its straddling contrasts need at
    their mean and spread (or ``min_images``), and the runs on more images with their cost (the FLOP
    prior on a GPU) and command."""
    from .compute import duration, prior_seconds

    fewest = min(c.effect.n for c in contrasts)
    if fewest < min_images:
        need = [f"at least {n_images(min_images)} ({n_images(fewest)} now)"]
    else:
        need = [f"{c.name}: {c.effect.to_decide(threshold)}" for c in contrasts if c.effect.side(threshold) == 0]
    runs = more_images(claim)
    have = {i for c in contrasts for i in c.values}
    new = sorted({r.image for r in runs} - have)
    if not runs or not new:
        return "; ".join(need) + "; this report plans no more images for it"
    plans = sorted({sel["experiment"] for sel in claim["more_images"]})
    gpu = sum(prior_seconds(r) for r in runs if r.method == "dip")
    command = "; ".join(f"python -m dip_lib reproduce --profile paper --only {p}" for p in plans)
    return (
        "; ".join(need) + f"; {len(new)} more images ({listing(new)}) come from {len(runs)} runs of the paper "
        f"profile's {listing(plans)}, {duration(gpu)} on a GPU by the FLOP prior ({command}, with the rest of "
        "its plan); reading them changes the registered runs, which this page would flag"
    )


def score(records: dict[str, Records], stored_ids: Iterable[str], root: Path | None = None) -> list[Scored]:
    """Every registered claim scored from ``records`` ({plan: [(run, record)]}); ``stored_ids``: the
    run ids stored, so that each claim names the runs it still waits for."""
    reg = registration(root)
    at = registered_at(root)
    stored = set(stored_ids)
    out = []
    for claim in reg["claims"]:
        contrasts, note, values = measures(claim, records)
        threshold = next(iter(claim["thresholds"].values()))
        missing = [r for r in planned(claim) if r.run_id not in stored and _reads(claim, r)]
        # a claim waits for every run it reads: a verdict on part of them could still turn
        verdict = PARTIAL if missing else _verdict(contrasts, threshold, reg["min_images"])
        recs = [(r, x) for r, x in _select(records, claim) if _reads(claim, r)]
        first = _stored_since(recs)
        commit, when = at.get(claim["id"], ("not a git checkout", None))
        parts = [c.text() for c in contrasts] + ([note] if note else [])
        if values is not None:
            parts.append(f"largest spread (sd) among one image's runs: {values.spread()}")
        flagged = bool(when and first and when > first)
        out.append(
            Scored(
                id=claim["id"],
                title=claim["title"],
                paper=claim["paper"],
                question=claim["question"],
                rule=claim["rule"],
                thresholds=claim["thresholds"],
                verdict=verdict,
                evidence="; ".join(parts) + ".",
                scale=_scale(recs),
                registered=f"{commit} ({when:%Y-%m-%d %H:%M} UTC)" if when else commit,
                flagged=flagged,
                missing=missing,
                decide=to_decide(claim, contrasts, threshold, reg["min_images"])
                if verdict in (UNDECIDED, DESCRIBED)
                else "",
                fresh=_fresh(claim, records, when, reg["min_images"], bool(missing)) if flagged else "",
            )
        )
    return out


def load(store) -> tuple[dict[str, Records], set[str]]:
    """The stored records of the paper profile's CPU plans, and every stored run id among them."""
    from .registry import plan
    from .runner import load_records

    records = {p: load_records(plan(p, "paper"), store, partial=True) for p in PLANS}
    return records, {r.run_id for recs in records.values() for r, _ in recs}


def table(scored: list[Scored]):
    """The registered claims for the page: claim, verdict, scale, registration, what would decide it
    (the runs it still waits for, or for an undecided claim ``to_decide``), evidence."""
    import pandas as pd

    from .tables import Table

    df = pd.DataFrame(
        [
            {
                "claim": f"{s.id}. {s.title}",
                "verdict": s.verdict,
                "scale": s.scale,
                "registered": s.registered + (" (after some of its runs)" if s.flagged else ""),
                "to decide it": f"{len(s.missing)} runs still to compute (below)"
                if s.missing
                else s.decide or "decided",
                "evidence (per image, seeds averaged)": s.evidence
                + (f" {s.fresh[:1].upper()}{s.fresh[1:]}." if s.fresh else ""),
            }
            for s in scored
        ]
    )
    caption = "Each claim scored by its rule as registered in data/claims_registration.json."
    return Table(df, caption, wrap_last=True, css="dip-claims")


def statements(scored: list[Scored]):
    """What the paper states for each registered claim, the question the rule asks, and the rule, as
    registered (``data/claims_registration.json``)."""
    import pandas as pd

    from .tables import Table

    df = pd.DataFrame(
        [
            {
                "claim": f"{s.id}. {s.title}",
                "the paper": s.paper,
                "question": s.question,
                "rule": f"{s.rule} ({', '.join(f'{k} = {v:g}' for k, v in s.thresholds.items())})",
            }
            for s in scored
        ]
    )
    caption = "The registered claims: the paper's statement (quoted where in quotation marks), question and rule."
    return Table(df, caption, wrap_last=True, css="dip-claims")


def facts(scored: list[Scored], records: dict[str, Records] | None = None) -> dict[str, Any]:
    """The counts the page's prose cites; the missing runs' cost scaled by the stored ``records`` (the
    FLOP prior alone is several times too fast on a CPU)."""
    from .compute import duration, estimate_seconds
    from .registry import plan

    missing = list({r.run_id: r for s in scored for r in s.missing}.values())
    ids = {r.run_id for r in missing}
    stored = [rx for recs in (records or {}).values() for rx in recs]
    have = {r.run_id for r, _ in stored}
    # the runs that would decide the flagged claims afresh: table1-cpu's DIP runs of its next seed
    seed = max((r.seed for r in plan("table1-cpu", "paper") if r.method == "dip"), default=0) + 1
    fresh = [r for r in plan("table1-cpu", "paper", seeds=(seed,)) if r.method == "dip" and r.run_id not in have]
    return {
        "min_images": registration()["min_images"],
        "decided": sum(s.verdict in (SUPPORTED, NOT_SUPPORTED) for s in scored),
        "waiting": sum(s.verdict == PARTIAL for s in scored),
        "flagged": sum(s.flagged for s in scored),
        "missing": len(missing),
        "missing_plans": listing([p for p in PLANS if {r.run_id for r in plan(p, "paper")} & ids]) or DASH,
        "missing_cost": duration(estimate_seconds(missing, stored)) if missing else num(0),
        "fresh_seed": seed,
        "fresh_runs": len(fresh),
        "fresh_cost": duration(estimate_seconds(fresh, stored)) if fresh else num(0),
    }
