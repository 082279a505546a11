"""The paper's Fig. 8, large-hole inpainting, as the paper runs it: the original ``inpainting.ipynb``'s
five networks (presets ``fig8-skip6``, ``fig8-skip4``, ``fig8-skip2``, ``fig8-unet``, ``fig8-resnet``)
at their own recipes, at native size, on library with its own mask (704x448) and on the four 256 px
Table-1 images with library's holes (``runs.library_holes``), three seeds, on the CPU numerics that
passed the parity rule (bf16 autocast, channels_last, one thread); biharmonic on the same masks.
For claim 3, the depth-6 hourglass with 4 skip channels per level beside it on those four images,
under library's holes and under Table 1's 50% Bernoulli masks (the same problems as Table 1's).
The rules these runs decide are registered in ``data/claims_registration.json``.

A plan of the paper profile that a CPU reaches (like ``table1-cpu``), run on request:
``python -m dip_lib reproduce --profile paper --only fig8 --workers 2``."""

from __future__ import annotations

from typing import Any

from .runs import ALL_TABLE1, CPU_BF16_NUMERICS, HOLES, TABLE1_CPU_IMAGES, Profile, Run
from .scores import Records

NETS = ("fig8-skip2", "fig8-skip4", "fig8-skip6", "fig8-unet", "fig8-resnet")
SEEDS = (0, 1, 2)
DEPTH6_SKIPS = (("channels_skip", (4,) * 6),)  # claim 3: the one change, skip channels as table1-paper's
# (image, source, mask): the 256 px images first (about 30 core-minutes for the five nets), then
# library (about 2 core-hours: its ResNet alone takes 70 minutes)
IMAGES = tuple((image, "table1", HOLES) for image in TABLE1_CPU_IMAGES) + (("library", "dip", "file"),)
MORE_IMAGES = tuple(i for i in ALL_TABLE1 if i not in TABLE1_CPU_IMAGES)  # 512 px: ``plan_more``


def _bernoulli(prof: Profile, images: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Table 1's problem (50% Bernoulli, its mask seed) for each of ``images``."""
    from .table1 import plan as table1_plan

    return {
        r.image: dict(mask=r.mask, missing=r.missing, mask_seed=r.mask_seed)
        for r in table1_plan(prof)
        if r.method == "biharmonic" and r.image in images
    }


def plan(prof: Profile, seeds: tuple[int, ...] | None = None) -> list[Run]:
    """The biharmonic peers, then seed by seed: the five networks on each image (the cheap 256 px images
    first), then claim 3's depth-6 hourglass with and without skips on Table 1's Bernoulli masks and
    with skips on the holes (its holes run without skips is ``fig8-skip6`` itself)."""
    return _plan(prof, seeds, IMAGES, TABLE1_CPU_IMAGES, dict(numerics=CPU_BF16_NUMERICS))


def plan_more(prof: Profile, seeds: tuple[int, ...] | None = None) -> list[Run]:
    """``plan``'s runs on Table 1's seven other images (512 px, native size) with library's holes: the
    images that could decide a registered claim left undecided on five. A GPU job (the profile's
    numerics): on one CPU core the five networks take about 3 hours per image and seed."""
    return _plan(prof, seeds, tuple((i, "table1", HOLES) for i in MORE_IMAGES), MORE_IMAGES, {})


def _plan(
    prof: Profile,
    seeds: tuple[int, ...] | None,
    images: tuple[tuple[str, str, str], ...],
    claim3: tuple[str, ...],
    numerics: dict[str, Any],
) -> list[Run]:
    base = dict(experiment="fig8", profile=prof.name, log_every=prof.log_every)
    bernoulli = _bernoulli(prof, claim3)
    runs = [
        Run(image=image, source=source, mask=mask, method="biharmonic", preset="", label="biharmonic", **base)
        for image, source, mask in images
    ]
    dip = dict(**numerics, **base)
    for seed in seeds or SEEDS:
        for image, source, mask in images:
            for preset in NETS:
                runs.append(Run(image=image, source=source, mask=mask, preset=preset, seed=seed, label=preset, **dip))
        for image in claim3:
            for net, label in (((), "fig8-skip6"), (DEPTH6_SKIPS, "fig8-skip6 + skips")):
                runs.append(
                    Run(image=image, preset="fig8-skip6", net=net, seed=seed, label=label, **bernoulli[image], **dip)
                )
            runs.append(
                Run(
                    image=image,
                    mask=HOLES,
                    preset="fig8-skip6",
                    net=DEPTH6_SKIPS,
                    seed=seed,
                    label="fig8-skip6 + skips",
                    **dip,
                )
            )
    return runs


# ---------------------------------------------------------------- the page: Fig. 8 from the stored runs

NET_NAMES = {
    "fig8-skip2": "depth 2",
    "fig8-skip4": "depth 4",
    "fig8-skip6": "depth 6",
    "fig8-unet": "U-Net",
    "fig8-resnet": "ResNet",
}


def holes_runs(records: Records) -> Records:
    """The large-hole runs of the five networks and biharmonic (claim 3's runs set aside)."""
    return [
        (r, x)
        for r, x in records
        if r.mask != "bernoulli" and (r.method == "biharmonic" or (r.preset in NETS and not r.net))
    ]


def facts(records: Records) -> dict[str, Any]:
    """The page's counts: runs of the five networks stored, planned, and the images with all five."""
    from .facts import listing
    from .runs import get_profile

    planned = [r for r in plan(get_profile("paper")) if r.method == "dip" and r.preset in NETS and not r.net]
    planned = [r for r in planned if r.mask != "bernoulli"]
    runs = [(r, x) for r, x in holes_runs(records) if r.method == "dip"]
    complete = sorted({r.image for r, _ in runs if {q.preset for q, _ in runs if q.image == r.image} >= set(NETS)})
    return {"stored": len(runs), "planned": len(planned), "complete": listing(complete) if complete else "none yet"}
