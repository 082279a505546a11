"""The six claims of the seed report, each one record: what the paper and the seed report say, one
question, a decision rule, the experiments whose runs answer it and the function that scores it.

The image is the unit: a paired difference is averaged over an image's seeds (its replicates) first,
and a score is the mean over images with a 90% Student-t interval over images. With fewer than
``MIN_IMAGES`` images a part of a claim is described, not decided (as the registered rules do,
``data/claims_registration.json``). A verdict can go either way: "supported", "not supported" or
"mixed"; "undecided" is given only where an interval straddles the rule's threshold, and the score then
says what would decide it: how many images at the effect's mean and spread (more seeds narrow only each
image's mean). These rules were written after most of the reduced-scale runs
they score, so the page calls the verdicts exploratory; the registered ones (``registered``) decide.
Each verdict says which evidence standard it met:

- absolute claims (1, 2, 4) use runs at their recipe's full iteration count;
- comparative claims (3, 5, 6) compare best-so-far PSNRs and also require the same direction of the
  effect, for every seed, at 50%, 75% and 100% of the budget.

Every threshold is a named constant that the rule's text is formatted from.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .facts import DASH, listing, num, side
from .runs import SHALLOW, Profile, Run, widths
from .scores import Records, by, oracle, quarter_loss
from .table1 import recipe_net

SUPPORTED, NOT_SUPPORTED, MIXED = "supported", "not supported", "mixed"
UNDECIDED = "undecided"
PARTIAL = "undecided: partial results"
DESCRIBED = "described: too few images"
NO_DATA = "no data"
CONFIDENCE = 0.90
MIN_IMAGES = 4  # the registration's min_images (a test ties them): fewer images are described, not decided
MAX_PROJECTED = 200  # images: beyond this, "no feasible number of images" would decide a straddling interval
BUDGETS = (0.5, 0.75, 1.0)  # the comparative standard: the same direction at these shares of the budget

GAP_DB = 1.0  # 1. the fall from the best iterate to the final output that "matters"
JUMP = 10.0  # 1. a destabilisation: the loss grows by this factor or more between two checks
WIN_DB = 0.0  # 2. DIP minus the CSC peer
TASK_DB = 0.0  # 3. the better recipe's margin on each task
RATIO = 1.0  # 4. Fig. 2: another target's loss over the natural image's
HOLE_DB = 0.0  # 4. DIP minus biharmonic on the missing pixels
SLOPE_DB = 0.0  # 5. PSNR per extra level of depth
SKIP_DB = 0.0  # 6. no-skip minus skip at the shallow depths


def n_images(n: int) -> str:
    return f"{n} image{'' if n == 1 else 's'}"


@dataclass(frozen=True)
class Effect:
    """A mean of paired differences with its 90% interval (``lo``/``hi`` are NaN for n < 2); ``n`` counts
    images where the values are ``over_images``'s."""

    mean: float
    lo: float
    hi: float
    n: int

    def side(self, threshold: float) -> int:
        """+1 when the interval lies above ``threshold``, -1 below it, 0 when it straddles it."""
        if self.n < 2:
            return 0
        return 1 if self.lo > threshold else (-1 if self.hi < threshold else 0)

    @property
    def decides(self) -> bool:
        """Enough images for an interval-based verdict."""
        return self.n >= MIN_IMAGES

    def images_to_decide(self, threshold: float, cap: int = MAX_PROJECTED) -> int | None:
        """The fewest images at which an interval with this mean and this spread over images (sd of the
        per-image values) would lie on one side of ``threshold``: n with t(n - 1) * sd / sqrt(n) <
        |mean - threshold|. None when no n up to ``cap`` would (or with fewer than 2 images)."""
        from scipy import stats

        if self.n < 2 or not np.isfinite(self.lo) or self.mean == threshold:
            return None
        t = stats.t.ppf(0.5 + CONFIDENCE / 2, self.n - 1)
        sd = (self.hi - self.lo) / (2 * t) * np.sqrt(self.n)
        gap = abs(self.mean - threshold)
        for n in range(max(self.n, 2), cap + 1):
            if stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * sd / np.sqrt(n) < gap:
                return n
        return None

    def to_decide(self, threshold: float) -> str:
        """What would decide an interval that straddles ``threshold``, in words: how many images."""
        n = self.images_to_decide(threshold)
        now = f"{n_images(self.n)} now"
        if n is None:
            return f"no feasible number of images at this mean and spread ({now}): it sits on the threshold"
        return f"about {n_images(n)} at this mean and spread ({now})"

    def text(self, unit: str = "dB", fmt: str = "+.2f") -> str:
        n = f"n = {n_images(self.n)}"
        if self.n < 2:
            return f"{self.mean:{fmt}} {unit} ({n}, no interval)"
        return f"{self.mean:{fmt}} {unit} [{self.lo:{fmt}}, {self.hi:{fmt}}] ({n})"


def plan(prof: Profile, seeds: tuple[int, ...] | None = None) -> list[Run]:
    """The runs in the order that decides claims soonest: the two Table-1 recipes on kate's text mask
    at Table 1's width and iteration counts for every seed (claim 3's pairs), then the depth sweep
    (``ClaimRuns``) in two tiers: the ``SHALLOW`` depths with and without skips (claim 6), then the other
    depths with skips (claim 5). The deeper nets without skips are not planned: no claim reads them.
    Within a tier, seed by seed on each image."""
    seeds = seeds or (prof.claims.seeds if prof.claims else ())
    c = prof.claims
    if c is None:
        return []
    runs: list[Run] = []
    base = dict(experiment="claims", profile=prof.name, source="dip", log_every=prof.log_every)
    for seed in seeds:
        for preset in ("table1-paper", "table1-seed"):
            runs.append(
                Run(
                    image="kate",
                    resize=prof.kate_size,
                    mask="text-seed",
                    preset=preset,
                    net=recipe_net(preset, prof.table1_width),
                    iterations=prof.table1_iterations[preset],
                    seed=seed,
                    label=f"{preset} on kate's text mask",
                    **base,
                )
            )
    sweep: list[Run] = []
    for seed in seeds:
        for image, mask, crop in c.images:
            for skip in (True, False):
                for d in (d for d in c.depths if skip or d in SHALLOW):
                    sweep.append(
                        Run(
                            image=image,
                            crop=crop,
                            resize=c.depth_size,
                            mask=mask,
                            preset="text",
                            net=widths(c.width, d, c.width if skip else 0),
                            iterations=c.iterations,
                            seed=seed,
                            label=f"depth {d}, {'skip' if skip else 'no skip'}",
                            **base,
                        )
                    )
    return runs + sorted(sweep, key=lambda r: 0 if r.depth in SHALLOW else 1)


def effect(values: Iterable[float]) -> Effect:
    """Mean and 90% Student-t interval of paired differences (NaN and None dropped)."""
    from scipy import stats

    v = np.array([float(x) for x in values if x is not None and np.isfinite(x)])
    if v.size == 0:
        return Effect(float("nan"), float("nan"), float("nan"), 0)
    if v.size == 1 or np.all(v == v[0]):
        return Effect(
            float(v.mean()),
            float(v.mean()) if v.size > 1 else float("nan"),
            float(v.mean()) if v.size > 1 else float("nan"),
            int(v.size),
        )
    ci = stats.ttest_1samp(v, 0.0).confidence_interval(CONFIDENCE)
    return Effect(float(v.mean()), float(ci.low), float(ci.high), int(v.size))


def over_images(values: Iterable[tuple[str, float | None]]) -> Effect:
    """The image as the unit: (image, paired difference) pairs averaged within each image (over its seeds
    and runs), then ``effect`` over the images (NaN and None dropped)."""
    groups: dict[str, list[float]] = defaultdict(list)
    for image, v in values:
        if v is not None and np.isfinite(v):
            groups[image].append(float(v))
    return effect(np.mean(v) for v in groups.values())


@dataclass(frozen=True)
class Score:
    """A claim's result: verdict, headline effect, the standard it met, the evidence in numbers, and for
    an undecided verdict what would decide it, in words."""

    verdict: str
    effect: Effect | None
    unit: str
    standard: str
    evidence: str
    decide: str = ""
    label: str = ""  # what the headline effect measures, where the claim has several parts

    @property
    def key(self) -> str:
        if self.effect is None:
            return ""
        return (f"{self.label}: " if self.label else "") + self.effect.text(self.unit)


@dataclass(frozen=True)
class Claim:
    """One claim: its title, the paper's and the seed report's side, the question and rule, the
    experiments it needs, the report pages holding its numbers, and its score function."""

    title: str
    paper: str
    seed: str
    question: str
    rule: str
    needs: tuple[str, ...]
    pages: tuple[str, ...]
    score: Callable[[dict[str, Records]], Score]
    uses: Callable[[Run], bool] = lambda run: True  # the runs of ``needs`` it reads: it waits for no other


# ---------------------------------------------------------------- helpers


def _dip(records: Records) -> Records:
    return [(r, x) for r, x in records if r.method == "dip"]


def at_recipe(run: Run) -> bool:
    """Whether a DIP run is its recipe as published: its full iteration count, lr, optimiser and guard."""
    from ..core.presets import get_preset  # imports torch: not at import time (the CLI's parser imports the registry)

    p = get_preset(run.preset)
    return (
        (run.iterations or p.iterations) >= p.iterations
        and run.lr in (None, p.lr)
        and run.optimizer in (None, p.optimizer)
        and run.guard in (None, p.guard)
    )


def best_by(rec: dict[str, Any], share: float) -> float | None:
    """The best clean PSNR over the checks within ``share`` of the run's iterations (share 1: the oracle)."""
    h = rec.get("history") or {}
    pts = [(i, v) for i, v in zip(h.get("iteration") or [], h.get("psnr_clean") or []) if v is not None]
    if not pts:
        return oracle(rec) if share >= 1 else None
    cut = share * pts[-1][0]
    vals = [v for i, v in pts if i <= cut]
    return max(vals) if vals else None


def mechanism(rec: dict[str, Any]) -> str:
    """How a run lost its best iterate by the end: "kept" (final within GAP_DB of the oracle),
    "destabilisation" (after the best check the loss grows >= JUMP-fold between two checks) or
    "gradual decline" (it falls with no such jump)."""
    s = rec["summary"]
    if oracle(rec) - s["final_psnr"] <= GAP_DB:
        return "kept"
    h = rec.get("history") or {}
    its, loss = h.get("iteration") or [], h.get("loss") or []
    best = s.get("oracle_iteration") or 0
    after = [v for i, v in zip(its, loss) if i >= best and v is not None and np.isfinite(v)]
    jumps = [b / a for a, b in zip(after, after[1:]) if a > 0]
    return "destabilisation" if jumps and max(jumps) >= JUMP else "gradual decline"


def _mask_kind(run: Run) -> str:
    if run.mask == "bernoulli":
        return "Bernoulli holes"
    return "a text mask" if run.mask.startswith("text") or run.mask == "file" else f"mask {run.mask}"


def _verdict(parts: list[tuple[str, Effect, float]]) -> tuple[str, list[str]]:
    """Over the (label, effect, threshold) parts with at least ``MIN_IMAGES`` images (the others are
    described): supported when every part lies above its threshold, not supported when every part lies
    below, mixed when some lie above and some below; else undecided (returns the straddling parts);
    described when no part has enough images."""
    voting = [(lab, e.side(t)) for lab, e, t in parts if e.decides]
    if not voting:
        return DESCRIBED, []
    labels, sides = [lab for lab, _ in voting], [s for _, s in voting]
    straddle = [lab for s, lab in zip(sides, labels) if s == 0]
    if 1 in sides and -1 in sides:
        return MIXED, []
    if straddle:
        return UNDECIDED, straddle
    return (SUPPORTED if sides[0] == 1 else NOT_SUPPORTED), []


MORE_IMAGES = "More images (more seeds narrow only each image's mean): "


def _to_decide(parts: list[tuple[str, Effect, float]], straddle: Iterable[str]) -> str:
    """What would decide the straddling parts: more images, not more seeds (seeds narrow only each
    image's mean), as many as ``Effect.images_to_decide`` projects."""
    straddle = set(straddle)
    named = [f"{lab}: {e.to_decide(t)}" for lab, e, t in parts if lab in straddle]
    return MORE_IMAGES + "; ".join(named) if named else ""


def _one_part(e: Effect, threshold: float) -> str:
    if not e.decides:
        return DESCRIBED
    return {1: SUPPORTED, -1: NOT_SUPPORTED, 0: UNDECIDED}[e.side(threshold)]


def _per_image(per_image_seed: dict[tuple[str, int], float], unit: str) -> str:
    """Each image's mean over its seeds, with their spread (the within-image variability)."""
    groups = defaultdict(list)
    for (image, _), v in per_image_seed.items():
        groups[image].append(v)
    return "per image: " + ", ".join(
        f"{image} {np.mean(v):+.2f} {unit} (sd {np.std(v, ddof=1):.2f} over {len(v)} seeds)"
        if len(v) > 1
        else f"{image} {v[0]:+.2f} {unit} (1 seed)"
        for image, v in sorted(groups.items())
    )


def _seed_means(per_image_seed: dict[tuple[str, int], float]) -> dict[int, float]:
    """Mean over images of (image, seed) -> value, per seed."""
    per_seed = defaultdict(list)
    for (_, seed), v in per_image_seed.items():
        per_seed[seed].append(v)
    return {k: float(np.mean(v)) for k, v in per_seed.items()}


def _stable(per_seed_by_share: dict[float, dict[int, float]], sign: int) -> bool:
    """The comparative standard: every seed's effect has ``sign`` at every budget share."""
    return all(
        shares and all(np.sign(v) == sign for v in shares.values()) for shares in per_seed_by_share.values()
    ) and set(per_seed_by_share) == set(BUDGETS)


def _comparative(verdict: str, stable: bool) -> tuple[str, str]:
    if verdict == DESCRIBED:
        return verdict, TOO_FEW
    if verdict in (SUPPORTED, NOT_SUPPORTED) and not stable:
        return UNDECIDED, "comparative standard not met: the direction changes with the budget or the seed"
    return verdict, (
        "comparative: best-so-far PSNR, the same direction for every seed at 50/75/100% of the budget"
        if stable
        else "comparative standard not met"
    )


_UNSTABLE = (
    "Not more runs of the same: the ranking changes with the budget or the seed at this scale; the same claim "
    "at the paper's setting (above) decides it"
)


def _comparative_decide(verdict: str, e: Effect, threshold: float) -> str:
    """What would decide an undecided comparative claim: more images where its interval straddles the
    threshold, else (a ranking that moves with the budget or the seed) not more of the same runs."""
    if verdict != UNDECIDED:
        return ""
    return MORE_IMAGES + e.to_decide(threshold) if e.side(threshold) == 0 else _UNSTABLE


ABSOLUTE = "absolute: runs at their recipe's full iteration count"
TOO_FEW = f"none: fewer than {MIN_IMAGES} images, described without an interval-based verdict"


# ---------------------------------------------------------------- 1. early stopping


def early_stopping(loaded: dict[str, Records]) -> Score:
    from ..core.presets import get_preset

    runs = [(r, x) for e in ("table1", "optim", "figures", "claims") for r, x in _dip(loaded.get(e, []))]
    runs = [(r, x) for r, x in runs if r.mask != "none" and r.optimizer != "lbfgs" and at_recipe(r)]
    if not runs:
        return Score(NO_DATA, None, "dB", "", "no DIP run at its recipe's full length")
    groups: dict[str, Records] = defaultdict(list)
    for r, x in runs:
        groups[f"{r.preset} on {_mask_kind(r)}"].append((r, x))
    scored, parts, head, head_name = [], [], None, ""
    for name, recs in sorted(groups.items()):
        e = over_images((r.image, oracle(x) - x["summary"]["final_psnr"]) for r, x in recs)
        kinds = defaultdict(list)
        for _, x in recs:
            kinds[mechanism(x)].append(oracle(x) - x["summary"]["final_psnr"])
        how = ", ".join(f"{len(v)} {k} (mean cost {np.mean(v):.2f} dB)" for k, v in sorted(kinds.items()))
        guard = "guard on" if get_preset(recs[0][0].preset).guard else "guard off"
        parts.append(f"{name} ({guard}): oracle - final {e.text()}; of its {len(recs)} runs {how}")
        scored.append((name, e, GAP_DB))
        if head is None or (e.decides, e.mean) > (head.decides, head.mean):
            head, head_name = e, f"{name}, oracle - final"
    # the guard's effect where the same recipe ran with it off and on (the seed's trial 3)
    trial = [(r, x) for r, x in _dip(loaded.get("optim", [])) if r.guard is not None and r.lr == 0.1]
    pairs = defaultdict(dict)
    for r, x in trial:
        pairs[(r.image, r.seed)][r.guard] = x
    g = over_images(
        (image, p[True]["summary"]["final_psnr"] - p[False]["summary"]["final_psnr"])
        for (image, _), p in pairs.items()
        if len(p) == 2
    )
    if g.n:
        off = [mechanism(p[False]) for p in pairs.values() if len(p) == 2]
        on = [mechanism(p[True]) for p in pairs.values() if len(p) == 2]
        parts.append(
            f"Adam lr 0.1 (the seed's trial 3, {len(off)} seeds): guard on - off, final {g.text()}; destabilisations "
            f"{off.count('destabilisation')} of {len(off)} with the guard off, "
            f"{on.count('destabilisation')} of {len(on)} on"
        )
    verdict, straddle = _verdict(scored)
    return Score(verdict, head, "dB", ABSOLUTE, "; ".join(parts) + ".", _to_decide(scored, straddle), head_name)


# ---------------------------------------------------------------- 2. DIP against Papyan et al.


def dip_vs_papyan(loaded: dict[str, Records]) -> Score:
    table1 = loaded.get("table1", [])
    csc = {r.image: x["summary"]["final_psnr"] for r, x in table1 if r.method == "csc"}
    dip = [(r, x) for r, x in _dip(table1) if r.image in csc and at_recipe(r)]
    if not dip:
        return Score(NO_DATA, None, "dB", "", "no Table-1 DIP run beside the CSC peer")
    iterates = {
        "oracle": lambda x: oracle(x),
        "final": lambda x: x["summary"]["final_psnr"],
        "ES-WMV": lambda x: (x.get("eswmv") or {}).get("psnr_clean"),
    }
    parts, head, scored = [], None, []
    for preset in ("table1-paper", "table1-seed"):
        recs = [(r, x) for r, x in dip if r.preset == preset]
        if not recs:
            continue
        cells = []
        for name, get in iterates.items():
            e = over_images((r.image, get(x) - csc[r.image] if get(x) is not None else None) for r, x in recs)
            cells.append(f"{name} {e.text()}")
            if preset == "table1-paper":
                scored.append((name, e, WIN_DB))
                head = e if name == "final" else head
        parts.append(f"{preset} - CSC peer: " + ", ".join(cells))
    native = [(r, x) for r, x in _dip(loaded.get("table1-cpu", [])) if r.preset == "table1-paper"]
    if native:
        from ..core.data import TABLE1_ORDER, paper_table1

        papyan = {row["name"]: float(row["papyan_psnr"]) for row in paper_table1()}
        e = over_images((r.image, x["summary"]["final_psnr"] - papyan[r.image]) for r, x in native if r.image in papyan)
        names = dict(TABLE1_ORDER)
        parts.append(
            f"at the paper's scale (native size, {e.n} of {len(names)} images): table1-paper final - "
            f"Papyan et al.'s published PSNR {e.text()}"
        )
    verdict, straddle = _verdict(scored)
    decide = _to_decide(scored, straddle)
    if decide:  # all 11 Table-1 images are in: more can only come from the paper's setting
        decide += "; Table 1 has no more images, and the same claim at the paper's setting (above) decides it"
    standard = ABSOLUTE + " (verdict from table1-paper, per iterate)"
    return Score(verdict, head, "dB", standard, "; ".join(parts) + ".", decide)


# ---------------------------------------------------------------- 3. structure fits the task


def _recipe_gap(recs: Records, share: float) -> tuple[dict[Any, float], dict[int, list[float]]]:
    """table1-paper minus table1-seed best-so-far PSNR per (image, seed) and, listed by seed, over images."""
    cell = defaultdict(dict)
    for r, x in recs:
        if r.preset in ("table1-paper", "table1-seed"):
            cell[(r.image, r.seed)][r.preset] = best_by(x, share)
    pairs = {k: v["table1-paper"] - v["table1-seed"] for k, v in cell.items() if len(v) == 2 and None not in v.values()}
    per_seed = defaultdict(list)
    for (_, seed), d in pairs.items():
        per_seed[seed].append(d)
    return pairs, per_seed


def structure_fits_task(loaded: dict[str, Records]) -> Score:
    tasks = {
        "Bernoulli (Table 1's crops)": [(r, x) for r, x in _dip(loaded.get("table1", []))],
        "kate's text mask": [(r, x) for r, x in _dip(loaded.get("claims", [])) if r.label.endswith("text mask")],
    }
    if not all(tasks.values()):
        return Score(NO_DATA, None, "dB", "", "the two Table-1 recipes are not stored on both tasks")
    sides, parts, effects, stable_by_task = [], [], [], []
    for name, recs in tasks.items():
        pairs, _ = _recipe_gap(recs, 1.0)
        if not pairs:  # one recipe stored so far: nothing to pair
            return Score(NO_DATA, None, "dB", "", f"no image has both Table-1 recipes stored on {name}")
        e = over_images((image, d) for (image, _), d in pairs.items())
        effects.append(e)
        sides.append(e.side(TASK_DB) if e.decides else None)
        better = "table1-paper" if e.mean > 0 else "table1-seed"
        parts.append(f"{name}: table1-paper - table1-seed {e.text()} (better: {better})")
        by_share = {s: {k: float(np.mean(v)) for k, v in _recipe_gap(recs, s)[1].items()} for s in BUDGETS}
        stable_by_task.append(_stable(by_share, int(np.sign(e.mean))))
    a, b = effects
    interaction = Effect(a.mean - b.mean, float("nan"), float("nan"), min(a.n, b.n))
    if a.n > 1 and b.n > 1:  # Welch interval for a difference of two independent means
        from scipy import stats

        va, vb = ((e.hi - e.lo) / (2 * stats.t.ppf(0.5 + CONFIDENCE / 2, e.n - 1)) for e in (a, b))
        se = float(np.hypot(va, vb))
        df = se**4 / (va**4 / (a.n - 1) + vb**4 / (b.n - 1)) if va > 0 and vb > 0 else max(a.n, b.n) - 1
        t = stats.t.ppf(0.5 + CONFIDENCE / 2, df)
        interaction = Effect(a.mean - b.mean, a.mean - b.mean - t * se, a.mean - b.mean + t * se, min(a.n, b.n))
    parts.append(f"interaction (Bernoulli gap - text gap): {interaction.text()}")
    if None in sides:  # a task with too few images: the interaction is described
        verdict = DESCRIBED
    elif 0 in sides:
        verdict = UNDECIDED
    else:
        verdict = SUPPORTED if sides[0] != sides[1] else NOT_SUPPORTED
    verdict, standard = _comparative(verdict, all(stable_by_task))
    decide = ""
    if verdict == UNDECIDED:
        straddle = [name for name, s in zip(tasks, sides) if s == 0]
        decide = _to_decide([(n, e, TASK_DB) for n, e in zip(tasks, effects)], straddle) or _UNSTABLE
    return Score(verdict, interaction, "dB", standard, "; ".join(parts) + ".", decide)


# ---------------------------------------------------------------- 4. the network is the prior


def network_is_prior(loaded: dict[str, Records]) -> Score:
    figs = _dip(loaded.get("figures", []))
    quarter = defaultdict(dict)
    for r, x in figs:
        if r.mask == "none":
            quarter[(r.image, r.seed)][r.target] = quarter_loss(x)
    scored, parts = [], []
    for target in ("noisy", "shuffled", "noise"):
        logs = [
            (img, np.log(v[target] / v["image"])) for (img, _), v in quarter.items() if target in v and "image" in v
        ]
        if not logs:
            continue
        e = over_images(logs)
        scored.append((f"Fig. 2 {target}", e, np.log(RATIO)))
        ci = f" [{np.exp(e.lo):.1f}x, {np.exp(e.hi):.1f}x]" if e.n > 1 else ""
        parts.append(
            f"Fig. 2, loss at a quarter of the budget, {target} / natural image: {np.exp(e.mean):.1f}x{ci} "
            f"({n_images(e.n)}, {len(logs)} seeds)"
        )
    table1 = loaded.get("table1", [])
    bih = {r.image: x["summary"].get("final_hole_psnr") for r, x in table1 if r.method == "biharmonic"}
    dip = [(r, x) for r, x in _dip(table1) if r.preset == "table1-paper" and r.image in bih and at_recipe(r)]
    head = None
    if dip:
        head = over_images((r.image, x["summary"].get("final_hole_psnr") - bih[r.image]) for r, x in dip)
        scored.append(("hole PSNR", head, HOLE_DB))
        parts.append(f"table1-paper final - biharmonic, PSNR on the missing pixels: {head.text()}")
    kate_bih = [x for r, x in loaded.get("figures", []) if r.method == "biharmonic"]
    kate = [(r, x) for r, x in figs if r.mask == "file" and at_recipe(r)]
    if kate_bih and kate:
        k = over_images(
            (r.image, x["summary"].get("final_hole_psnr") - kate_bih[0]["summary"].get("final_hole_psnr"))
            for r, x in kate
        )
        parts.append(f"kate, the original mask, text recipe final - biharmonic on the missing pixels: {k.text()}")
    if not scored:
        return Score(NO_DATA, None, "dB", "", "no Fig. 2 runs and no Table-1 runs beside biharmonic")
    verdict, straddle = _verdict(scored)
    return Score(verdict, head, "dB", ABSOLUTE, "; ".join(parts) + ".", _to_decide(scored, straddle))


# ---------------------------------------------------------------- 5, 6. depth and skips


def _depth_runs(loaded: dict[str, Records]) -> Records:
    return [(r, x) for r, x in _dip(loaded.get("claims", [])) if r.label.startswith("depth")]


def _fit_note(recs: Records) -> str:
    above = sum(x["summary"]["final_psnr"] > x["summary"]["masked_psnr"] for _, x in recs)
    return f"{above} of {len(recs)} runs end above their masked input"


def _slopes(recs: Records, share: float) -> dict[tuple[str, int], float]:
    """PSNR per extra level of depth (least squares over the depths), per (image, seed), with skips."""
    pts = defaultdict(list)
    for r, x in recs:
        if r.skip:
            v = best_by(x, share)
            if v is not None:
                pts[(r.image, r.seed)].append((r.depth, v))
    return {k: float(np.polyfit(*zip(*v), 1)[0]) for k, v in pts.items() if len({d for d, _ in v}) >= 3}


def deeper_is_better(loaded: dict[str, Records]) -> Score:
    recs = [(r, x) for r, x in _depth_runs(loaded) if r.skip]  # the slope is the skip networks'
    slopes = _slopes(recs, 1.0)
    if not slopes:
        return Score(NO_DATA, None, "dB/level", "", "no depth sweep of the claims experiment")
    e = over_images((image, v) for (image, _), v in slopes.items())
    verdict = _one_part(e, SLOPE_DB)
    by_share = {share: _seed_means(_slopes(recs, share)) for share in BUDGETS}
    verdict, standard = _comparative(verdict, _stable(by_share, int(np.sign(e.mean))))
    evidence = (
        f"with skips, PSNR per extra level of depth, {e.text('dB/level')}; {_per_image(slopes, 'dB/level')}; "
        f"{_fit_note(recs)}."
    )
    return Score(verdict, e, "dB/level", standard, evidence, _comparative_decide(verdict, e, SLOPE_DB))


def _skip_gain(recs: Records, depths: tuple[int, ...], share: float) -> dict[tuple[str, int], float]:
    """No-skip minus skip best-so-far PSNR, mean over ``depths``, per (image, seed)."""
    cell = defaultdict(dict)
    for r, x in recs:
        if r.depth in depths:
            cell[(r.image, r.seed, r.depth)][r.skip] = best_by(x, share)
    out = defaultdict(list)
    for (img, seed, _), v in cell.items():
        if len(v) == 2 and None not in v.values():
            out[(img, seed)].append(v[False] - v[True])
    return {k: float(np.mean(v)) for k, v in out.items()}


def skips_hurt_shallow(loaded: dict[str, Records]) -> Score:
    recs = _depth_runs(loaded)
    shallow = _skip_gain(recs, SHALLOW, 1.0)
    if not shallow:
        return Score(NO_DATA, None, "dB", "", "no shallow depths with and without skips")
    e = over_images((image, v) for (image, _), v in shallow.items())
    verdict = _one_part(e, SKIP_DB)
    by_share = {share: _seed_means(_skip_gain(recs, SHALLOW, share)) for share in BUDGETS}
    verdict, standard = _comparative(verdict, _stable(by_share, int(np.sign(e.mean))))
    evidence = (
        f"no skip - skip at depths {'/'.join(map(str, SHALLOW))}: {e.text()}; {_per_image(shallow, 'dB')}; "
        f"{_fit_note(recs)}."
    )
    return Score(verdict, e, "dB", standard, evidence, _comparative_decide(verdict, e, SKIP_DB))


# ---------------------------------------------------------------- the six records

CLAIMS: tuple[Claim, ...] = (
    Claim(
        title="1. Early stopping matters",
        paper="natural images are fitted faster than noise, so the fit must stop before it reproduces the corruption",
        seed="early stopping is not crucial: PSNR rises and stays, except for destabilisations (sudden drops)",
        question="At each recipe's full iteration count, does the final output fall short of the best iterate by "
        "more than the margin, and is the fall a slow approach to the corrupted image or a destabilisation?",
        rule=f"per recipe and mask, the oracle - final PSNR per image (seeds averaged): it matters where the "
        f"interval over images lies above {GAP_DB:g} dB, not where it lies below; over the recipes with at least "
        f"{MIN_IMAGES} images, supported if it matters for every one, not supported if for none, mixed otherwise "
        f"(the others are described). A lost run is a destabilisation when, after its best check, the loss "
        f"grows {JUMP:g}x or more between two checks, else a gradual decline",
        needs=("table1", "optim", "figures"),
        pages=("03_optimizer_lr_sweep", "01_table1_bernoulli", "07_paper_figures"),
        score=early_stopping,
    ),
    Claim(
        title="2. DIP beats Papyan et al.",
        paper="Table 1: DIP {paper_dip:.2f} dB against {paper_papyan:.2f} dB for Papyan et al. (mean over 11 images)",
        seed="DIP beats Papyan et al.; its Table 1 mean is {g71:.2f} dB, with the 256 px images resized to 512 "
        "({g71_resized:+.2f} dB on those 4 against the paper, {g71_other:+.2f} dB on the others)",
        question="On 50% Bernoulli holes, does DIP's output beat convolutional sparse coding? Our CSC peer is "
        "sporco's with a fixed dictionary, a proxy for Papyan et al.'s learned one",
        rule=f"table1-paper - CSC peer PSNR per image (seeds averaged), for the oracle, the final output and ES-WMV: "
        f"supported if every interval lies above {WIN_DB:g} dB, not supported if every one lies below, mixed if "
        "the iterates disagree",
        needs=("table1",),
        pages=("01_table1_bernoulli",),
        score=dip_vs_papyan,
    ),
    Claim(
        title="3. Structure should fit the task",
        paper="the network's structure is the prior, so it should suit the image and task",
        seed="the architecture should fit the task",
        question="Does the better of the two Table-1 recipes change between Bernoulli holes and text?",
        rule=f"table1-paper - table1-seed best PSNR on each task, per image (seeds averaged): supported if both "
        f"intervals over images exclude {TASK_DB:g} dB with opposite signs, not supported if with the same sign; "
        f"described while a task has fewer than {MIN_IMAGES} images (text: kate alone); the headline is the "
        "interaction (the difference of the two gaps)",
        needs=("table1", "claims"),
        pages=("02_architecture_sweep", "01_table1_bernoulli"),
        score=structure_fits_task,
        uses=lambda run: run.experiment != "claims" or run.label.endswith("text mask"),
    ),
    Claim(
        title="4. The network is the prior",
        paper="a randomly initialised network restores images with no training data",
        seed="the network itself is the prior; its random outputs are blurry",
        question="Does the untrained network fit a natural image faster than noise (Fig. 2), and does it fill "
        "holes better than a smooth interpolator?",
        rule=f"supported if every Fig. 2 loss ratio (other target / natural image, a quarter into the fit) lies "
        f"above {RATIO:g}x and table1-paper's final PSNR on the missing pixels lies above biharmonic's "
        f"(+{HOLE_DB:g} dB); not supported if all lie below; mixed if the parts disagree. Each ratio and "
        f"difference is averaged over an image's seeds; a part with fewer than {MIN_IMAGES} images is described",
        needs=("table1", "figures"),
        pages=("07_paper_figures", "01_table1_bernoulli"),
        score=network_is_prior,
    ),
    Claim(
        title="5. Deeper is better",
        paper="deeper networks inpaint large holes better (the library example)",
        seed="deeper is better up to a point: its best depth with skips is {g71_best_depth}",
        question="Among networks that fit their image, does PSNR rise with depth?",
        rule=f"the least-squares slope of best PSNR over depths {'..'.join(map(str, (2, 8)))} with skips, per "
        f"image (seeds averaged): supported if its interval over images lies above {SLOPE_DB:g} dB per level, "
        f"not supported if below; described with fewer than {MIN_IMAGES} images",
        needs=("claims",),
        pages=("05_claims", "02_architecture_sweep"),
        score=deeper_is_better,
        uses=lambda run: run.label.startswith("depth") and run.skip,
    ),
    Claim(
        title="6. Skip connections hurt shallow nets",
        paper='Fig. 8 (library, large holes): the skip connections of a U-Net or a ResNet are "highly detrimental" '
        "against an hourglass without them",
        seed="skips hurt shallow networks (depth 2: {g71_skip2:+.2f} dB without them) and help deep ones",
        question=f"At depths {' and '.join(map(str, SHALLOW))}, does removing the skips raise PSNR?",
        rule=f"no-skip - skip best PSNR, mean over depths {'/'.join(map(str, SHALLOW))}, per image (seeds "
        f"averaged): supported if its interval over images lies above {SKIP_DB:g} dB, not supported if below; "
        f"described with fewer than {MIN_IMAGES} images",
        needs=("claims",),
        pages=("05_claims", "02_architecture_sweep"),
        score=skips_hurt_shallow,
        uses=lambda run: run.label.startswith("depth") and run.depth in SHALLOW,
    ),
)


def seed_facts() -> dict[str, float]:
    """The published numbers the claims quote: the paper's Table 1 means and the seed report's (its
    Table 1, the four 256 px images that it resized to 512, its kate depth figure)."""
    from ..core.data import group71_kate_sweeps, group71_table1, paper_table1
    from .runs import TABLE1_CPU_IMAGES

    paper = {r["name"]: r for r in paper_table1()}
    g71 = {r["name"]: float(r["max_psnr"]) for r in group71_table1()}
    diff = {n: g71[n] - float(paper[n]["dip_psnr"]) for n in g71 if n in paper}
    depth = [r for r in group71_kate_sweeps() if r["sweep"] == "depth"]
    skip = {(r["depth"], r["skip"]): r["psnr"] for r in depth}
    with_skip = [r for r in depth if r["skip"]]
    return {
        "paper_dip": float(np.mean([float(r["dip_psnr"]) for r in paper.values()])),
        "paper_papyan": float(np.mean([float(r["papyan_psnr"]) for r in paper.values()])),
        "paper_images": len(paper),
        "g71": float(np.mean(list(g71.values()))),
        "g71_resized": float(np.mean([d for n, d in diff.items() if n in TABLE1_CPU_IMAGES])),
        "g71_other": float(np.mean([d for n, d in diff.items() if n not in TABLE1_CPU_IMAGES])),
        "g71_best_depth": max(with_skip, key=lambda r: r["psnr"])["depth"],
        "g71_skip2": skip[(2, False)] - skip[(2, True)],
        "g71_best_width": max((r for r in group71_kate_sweeps() if r["sweep"] == "filters"), key=lambda r: r["psnr"])[
            "filters"
        ],
    }


# the seed report's best learning rate (TU Delft group 71, experiment 3: "adam and LR=0.001 with 6001 epochs")
SEED_BEST_LR = 0.001


def _sentence(text: str) -> str:
    """``text`` ended with a full stop, capitalised unless it opens with a name such as table1-paper."""
    first = text.split(" ", 1)[0]
    if not any(c.isdigit() or c == "-" for c in first):
        text = text[:1].upper() + text[1:]
    return text + ("" if text.endswith((".", "?", "!")) else ".")


def section_facts(verdicts, stored: Records) -> dict[str, str]:
    """Each claim's section of the claims page, under c<number>_: question, rule, verdict, evidence,
    standard (the one met) and missing (the runs that would decide it and their estimated cost)."""
    from .compute import duration, estimate_seconds

    out: dict[str, str] = {}
    for n, row in enumerate(verdicts.itertuples(), 1):
        deciding = list(row.deciding)
        missing = (
            f"{len(deciding)} runs ({listing(sorted({r.experiment for r in deciding}))}), "
            f"{duration(estimate_seconds(deciding, stored))} of compute on this machine"
            if deciding
            else _sentence(row.decide)
            if row.decide
            else (
                "More images: this profile's runs hold too few; the same claim at the paper's setting (above) "
                "reads more."
                if row.verdict == DESCRIBED
                else "Nothing more: the verdict is decided."
            )
        )
        out |= {
            f"c{n}_question": _sentence(row.question),
            f"c{n}_rule": _sentence(row.rule),
            f"c{n}_verdict": row.verdict,
            f"c{n}_evidence": _sentence(row.evidence),
            f"c{n}_standard": _sentence(row.standard) if row.standard else "None yet.",
            f"c{n}_missing": missing,
        }
    return out


def _best_setting(records: Records, key: Callable[[Run], Any], name: str) -> dict[str, Any]:
    """The setting ``key(run)`` with the highest mean oracle over its seeds: name, name_psnr, name_seeds."""
    scored = [(r, x) for r, x in records if oracle(x) is not None]
    groups = {k: [oracle(x) for _, x in recs] for k, recs in by(scored, key).items()}
    if not groups:
        return {name: DASH, f"{name}_psnr": DASH, f"{name}_seeds": 0}
    best = max(groups, key=lambda k: np.mean(groups[k]))
    return {name: f"{best:g}", f"{name}_psnr": num(np.mean(groups[best])), f"{name}_seeds": len(groups[best])}


def seed_comparison_facts(arch: Records, optim: Records, native) -> dict[str, Any]:
    """The seed report's findings per experiment (published, from ``data/``) and ours beside them:
    its Table 1 mean and what resizing did to it, against our native-size mean (``native``:
    ``table1_cpu.summary``); its best width and Adam learning rate on kate against ours (best mean
    oracle); our final PSNR of its trial 3 (Adam at lr 0.1); its skip gain at depth 2."""
    from .runs import TABLE1_CPU_IMAGES

    f = seed_facts()
    adam = [(r, x) for r, x in optim if r.optimizer == "adam" and r.guard is None]
    trial = [(r, x) for r, x in optim if r.lr == 0.1 and r.guard is not None]
    return {
        "g71": num(f["g71"]),
        "g71_resized": num(f["g71_resized"], "+.2f"),
        "g71_other": num(f["g71_other"], "+.2f"),
        "resized_images": len(TABLE1_CPU_IMAGES),
        "other_images": f["paper_images"] - len(TABLE1_CPU_IMAGES),
        "g71_best_width": f["g71_best_width"],
        "g71_best_lr": f"{SEED_BEST_LR:g}",
        "g71_skip2": num(f["g71_skip2"], "+.2f"),
        "native_mean": num(native.mean_final),
        "native_paper": num(native.mean_paper),
        "native_images": native.images,
        **_best_setting([(r, x) for r, x in arch if r.label.endswith("filters")], lambda r: r.filters, "width"),
        **_best_setting(adam, lambda r: r.lr, "lr"),
        "trial3": "; ".join(
            f"guard {'on' if r.guard else 'off'} with seed {r.seed}: {x['summary']['final_psnr']:.2f} dB"
            for r, x in sorted(trial, key=lambda rx: (rx[0].guard, rx[0].seed))
        )
        or DASH,
    }


def tally(verdicts) -> dict[str, int]:
    """How many claims got each verdict (``score``'s rows): supported, not_supported, mixed, described
    and undecided, which counts the partial and the unscored ones too; waiting: the partial ones."""
    named = {SUPPORTED: "supported", NOT_SUPPORTED: "not_supported", MIXED: "mixed", DESCRIBED: "described"}
    out = dict.fromkeys([*named.values(), "undecided", "waiting"], 0)
    for v in verdicts["verdict"] if len(verdicts) else ():
        out[named.get(v, "undecided")] += 1
        out["waiting"] += v == PARTIAL
    return out


def _size(run: Run) -> str:
    crop = f"{run.crop} px crops" if run.crop else ""
    if run.resize:
        return f"{crop} resized to {run.resize} px" if crop else f"{run.resize} px"
    return crop or "native size"


def scale(runs: Iterable[Run]) -> str:
    """The scale of a claim's DIP runs for its row: image sizes, filters per layer, iteration counts,
    images and seeds."""
    from .runs import fit_config, net_config

    dip = [r for r in runs if r.method == "dip"]
    if not dip:
        return "no run stored yet"
    sizes = {_size(r) for r in dip}
    width = {net_config(r).channels_down[0] for r in dip}
    its = {fit_config(r).iterations for r in dip}
    return (
        f"reduced: {listing(sorted(sizes))}; {listing(sorted(width))} filters; {listing(sorted(its))} iterations; "
        f"{n_images(len({r.image for r in dip}))}; seeds {listing(sorted({r.seed for r in dip}))}"
    )


def score(loaded: dict[str, Records], partial: dict[str, tuple[str, list[Run]]] | None = None):
    """A DataFrame, one row per claim: claim, scale, question, rule, verdict, key (effect and interval),
    standard, evidence, deciding (the missing runs a partial claim waits for), decide (what would decide
    an undecided one, in words), paper, seed.

    ``partial``: experiment -> (its coverage line, its missing runs) for the experiments not completely
    stored; a claim missing runs it uses (``Claim.uses``) is "undecided: partial results", deciding
    runs those missing."""
    import pandas as pd

    facts = seed_facts()
    rows = []
    for claim in CLAIMS:
        s = claim.score(loaded)
        verdict, evidence, deciding, decide = s.verdict, s.evidence, [], s.decide
        waiting = [
            (line, mine)
            for e in claim.needs
            if partial and e in partial
            for line, missing in [partial[e]]
            for mine in [[r for r in missing if claim.uses(r)]]
            if mine
        ]
        if waiting:
            evidence += f" Partial results ({' '.join(line for line, _ in waiting)}): the verdict waits for the rest."
            verdict, deciding, decide = PARTIAL, [r for _, missing in waiting for r in missing], ""
        read = [r for e in claim.needs for r, _ in loaded.get(e, []) if claim.uses(r)]
        rows.append(
            {
                "claim": claim.title,
                "scale": scale(read),
                "question": claim.question,
                "rule": claim.rule,
                "verdict": verdict,
                "key": s.key,
                "standard": s.standard,
                "evidence": evidence,
                "deciding": deciding,
                "decide": decide,
                "paper": claim.paper.format(**facts),
                "seed": claim.seed.format(**facts),
            }
        )
    return pd.DataFrame(rows)


def scale_facts(prof: Profile) -> dict[str, Any]:
    """The scale of the claims' own runs at ``prof``, for the notebook's setup paragraph."""
    c = prof.claims
    return {
        **prof.scale_facts(),
        "kate_size": side(prof.kate_size),
        "table1_width": prof.table1_width or 128,
        "paper_iterations": prof.table1_iterations["table1-paper"],
        "seed_iterations": prof.table1_iterations["table1-seed"],
        "depths": listing(c.depths),
        "width": c.width,
        "iterations": c.iterations,
        "images": listing(f"{i} ({m} mask{f', center {k} px' if k else ''})" for i, m, k in c.images),
        "size": side(c.depth_size, "native size"),
        "seeds": listing(c.seeds),
    }
