"""What the report computes: profiles, runs, their plans, ids and problems.

A run is one (method, image, mask, recipe, network, seed, numerics). Its id is a hash of its *resolved*
configuration (``spec``): the problem, the full network and FitConfig the recipe resolves to (lr,
guard, noise, iterations, ...), the numerics (device type, precision, CPU threads, Adam
implementation, ...) and torch's version. Anything that can change a run's numbers changes its id;
labels and timing do not.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from ..core.errors import DipError
from ..core.imageio import center_crop, resize_square

TABLE1_CPU_IMAGES = ("house", "peppers", "cameraman", "montage")
PROFILE_NAMES = ("smoke", "quick", "paper")
ALL_TABLE1 = (
    "barbara",
    "boat",
    "house",
    "lena",
    "peppers",
    "cameraman",
    "couple",
    "fingerprint",
    "hill",
    "man",
    "montage",
)
FIG2_TARGETS = ("image", "noisy", "shuffled", "noise")  # the paper's Fig. 2: what the network fits, how fast

Pairs = tuple[tuple[str, Any], ...]


HOLES = "holes-library"  # large holes at library's scale on any image (``library_holes``)
# the depths that claim 6 calls shallow
SHALLOW = (2, 3)


@dataclass(frozen=True)
class ClaimRuns:
    """The runs of the claims experiment, which the other experiments do not supply: the Table-1
    recipes on kate's text mask (claim 3; their Bernoulli cells are Table 1's runs) and a depth sweep
    whose networks fit their images (claims 5 and 6), with and without skips, on each of ``images``:
    (image, mask, center crop before the resize to ``depth_size``; None: none)."""

    seeds: tuple[int, ...]
    images: tuple[tuple[str, str, int | None], ...]
    depth_size: int | None
    depths: tuple[int, ...]
    width: int
    iterations: int


# a CPU profile's numerics: one thread (numbers do not depend on the machine's load), fp32 (bf16 has
# not passed the statistical parity rule on CPU), torch's fused Adam
CPU_NUMERICS: Pairs = (("adam_impl", "fused"), ("device", "cpu"), ("precision", "fp32"), ("threads", 1))
# the CPU numerics of the paper profile's Table-1 runs on a CPU (plan "table1-cpu"): bf16 autocast in
# channels_last, which passed the statistical parity rule on this project's CPU (mean +0.17 dB, 90%
# CI [-0.03, +0.36] against fp32: results/bench-vm-cpu-parity.json) and runs 2.0x faster there
# (results/bench-vm-cpu-levers.json: 210 vs 421 ms per iteration, table1-paper 128 px, 1 thread)
CPU_BF16_NUMERICS: Pairs = (
    ("adam_impl", "fused"),
    ("channels_last", True),
    ("device", "cpu"),
    ("precision", "bf16"),
    ("threads", 1),
)
# the GPU profile's: fp32 with TF32 convs, CUDA graphs, fused Adam (fit.fast_config on CUDA);
# cudnn.benchmark stays off so that the algorithm choice cannot change between runs
CUDA_NUMERICS: Pairs = (
    ("adam_impl", "fused"),
    ("cuda_graphs", True),
    ("device", "cuda"),
    ("precision", "fp32"),
    ("tf32", True),
)


def pairs(**kw: Any) -> Pairs:
    return tuple(sorted(kw.items()))


def numerics_for(device: str) -> Pairs:
    """The numerics a profile uses on a device type ('cpu' or 'cuda'); others run like the CPU."""
    import torch

    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        raise DipError(f"unknown device {device!r} (cpu, cuda, mps)") from None
    if kind == "cuda":
        return CUDA_NUMERICS
    return tuple((k, kind if k == "device" else v) for k, v in CPU_NUMERICS)


@dataclass(frozen=True)
class Profile:
    """How much of each experiment to run, and on which numerics. Built with keywords."""

    name: str
    description: str
    comparable: bool  # whether numbers can be set beside the paper's
    device: str  # the device type whose numerics the profile's run ids name
    seeds_table1: tuple[int, ...]
    seeds_sweep: tuple[int, ...]
    table1_images: tuple[str, ...]
    table1_crop: int | None  # center crop side; None = native size
    table1_width: int | None  # filters per layer; None keeps the recipe's 128
    table1_iterations: dict[str, int]
    kate_size: int | None  # kate (512x512) is resized to this side; None = native
    filters: tuple[int, ...]
    filter_iterations: int
    depth_size: int | None  # kate's side in the depth sweep (depth d needs 2^d + 1)
    depths: tuple[int, ...]
    depth_width: int
    depth_iterations: int
    sweep_masks: tuple[str, ...]
    optim_width: int | None
    optim_iterations: int
    trial3_iterations: int  # the seed's trial 3: Adam lr 0.1, guard off and on
    figure_width: int | None
    kate_iterations: int
    fig2_iterations: int
    csc_iterations: int
    log_every: int
    # cost against quality: Table-1 recipes at other widths than table1_width, on a few of its images
    cost_images: tuple[str, ...] = ()
    cost_widths: tuple[int, ...] = ()
    cost_iterations: dict[str, int] = field(default_factory=dict)
    claims: ClaimRuns | None = None
    fig2_images: tuple[str, ...] = ()  # Table-1 images (native size) Fig. 2 also fits, beside kate

    def scale_facts(self) -> dict[str, str]:
        """What every experiment's setup paragraph names: the profile and whether it is the paper's scale."""
        return {
            "profile": self.name,
            "comparability": "the paper's scale, comparable to its numbers"
            if self.comparable
            else "a reduced scale, not comparable to the paper: read trends, not values",
        }


def _quick_description() -> str:
    return (
        "reduced scale on a 2-core CPU, every recipe at its own iteration count where affordable: Table 1 on "
        "96x96 center crops of the 11 images with 16-filter networks, table1-paper 11000 and table1-seed 6001 "
        "iterations, 2 seeds; filter sweep 4..128 on kate at 96x96 (3001 iterations); depth sweep 1..8 with and "
        "without skips, 8 filters, kate at 257x257 (2001 iterations); optimiser sweep with 32 filters at 96x96 "
        "(6001 iterations, the seed's trial 3 at 12001); cost against quality: both Table-1 recipes at 8, 32, 64 "
        "and 128 filters on 3 of the crops (table1-paper 4001 iterations, table1-seed 3001; 128 filters only "
        "table1-seed at 1001); 2 seeds for every sweep; the claims' own runs with 3 seeds: both Table-1 recipes on "
        "kate's text mask at 96x96, and depths 2..8 with and without skips, 16 filters, on kate and library at "
        "257x257 (3000 iterations); fp32, one CPU thread per run"
    )


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        description="end-to-end check on CPU in under a minute per notebook: 64x64 crops of 3 "
        "images, 8-filter networks, a few dozen iterations, 2 seeds for Table 1",
        comparable=False,
        device="cpu",
        seeds_table1=(0, 1),
        seeds_sweep=(0,),
        table1_images=("house", "cameraman", "peppers"),
        table1_crop=64,
        table1_width=8,
        table1_iterations={"table1-paper": 40, "table1-seed": 40},
        kate_size=64,
        filters=(4, 8),
        filter_iterations=25,
        depth_size=64,
        depths=(1, 2, 3),
        depth_width=8,
        depth_iterations=25,
        sweep_masks=("text-seed",),
        optim_width=8,
        optim_iterations=30,
        trial3_iterations=40,
        figure_width=8,
        kate_iterations=30,
        fig2_iterations=30,
        csc_iterations=5,
        log_every=5,
        cost_images=("house",),
        cost_widths=(4, 16),
        cost_iterations={"table1-paper": 40, "table1-seed": 40},
        claims=ClaimRuns(
            seeds=(0,),
            images=(("kate", "text-seed", None), ("library", "file", 448)),
            depth_size=64,
            depths=(2, 3),
            width=8,
            iterations=25,
        ),
    ),
    "quick": Profile(
        name="quick",
        description=_quick_description(),
        comparable=False,
        device="cpu",
        seeds_table1=(0, 1),
        seeds_sweep=(0, 1),
        table1_images=ALL_TABLE1,
        table1_crop=96,
        table1_width=16,
        table1_iterations={"table1-paper": 11000, "table1-seed": 6001},
        kate_size=96,
        filters=(4, 8, 16, 32, 64, 128),
        filter_iterations=3001,
        depth_size=257,
        depths=(1, 2, 3, 4, 5, 6, 7, 8),
        depth_width=8,
        depth_iterations=2001,
        sweep_masks=("text-seed",),
        optim_width=32,
        optim_iterations=6001,
        trial3_iterations=12001,
        figure_width=32,
        kate_iterations=6001,
        fig2_iterations=2400,
        csc_iterations=60,
        log_every=20,
        cost_images=("barbara", "boat", "house"),
        cost_widths=(8, 32, 64, 128),
        cost_iterations={"table1-paper": 4001, "table1-paper@128": 0, "table1-seed": 3001, "table1-seed@128": 1001},
        # depth 1 is left out: at 16 filters it ended below kate's masked input (18.09 against 19.73 dB,
        # a 2000-iteration pilot), so it cannot say what skips do to a net that fits
        claims=ClaimRuns(
            seeds=(0, 1, 2),
            images=(("kate", "text-seed", None), ("library", "file", 448)),
            depth_size=257,
            depths=(2, 3, 4, 5, 6, 7, 8),
            width=16,
            iterations=3000,
        ),
    ),
    "paper": Profile(
        name="paper",
        description="full size, full iteration counts, 128 filters (a GPU job)",
        comparable=True,
        device="cuda",
        seeds_table1=(0, 1, 2),
        seeds_sweep=(0, 1),
        table1_images=ALL_TABLE1,
        table1_crop=None,
        table1_width=None,
        table1_iterations={"table1-paper": 11000, "table1-seed": 6001},
        kate_size=None,
        filters=(4, 16, 32, 64, 128),
        filter_iterations=6001,
        depth_size=None,
        depths=(1, 2, 3, 4, 5, 6, 7, 8),
        depth_width=128,
        depth_iterations=6001,
        sweep_masks=("text-seed", "file"),
        optim_width=None,
        optim_iterations=6001,
        trial3_iterations=12001,
        figure_width=None,
        kate_iterations=6001,
        fig2_iterations=2400,
        csc_iterations=200,
        log_every=50,
        cost_images=("barbara", "boat", "house"),
        cost_widths=(16, 32, 64),
        cost_iterations={"table1-paper": 11000, "table1-seed": 6001},
        claims=ClaimRuns(
            seeds=(0, 1, 2),
            images=(("kate", "text-seed", None), ("library", "file", 448)),
            depth_size=None,
            depths=(2, 3, 4, 5, 6, 7, 8),
            width=128,
            iterations=6001,
        ),
        fig2_images=TABLE1_CPU_IMAGES,
    ),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise DipError(f"unknown profile {name!r}; known: {', '.join(PROFILES)}")
    return PROFILES[name]


@dataclass(frozen=True)
class Run:
    """Everything that determines one result. ``net`` holds SkipConfig overrides and ``numerics``
    FitConfig levers, both as sorted (key, value) pairs; ``label`` is display text only."""

    experiment: str
    profile: str
    image: str
    source: str = "table1"  # table1 | dip | embedded
    method: str = "dip"  # dip | biharmonic | csc
    crop: int | None = None  # center-crop side
    resize: int | None = None  # resize to this side (square images)
    mask: str = "bernoulli"  # bernoulli | text-<recipe> | file | holes-library | none
    missing: float = 0.5
    mask_seed: int = 0
    target: str = "image"  # what is fitted: image | noisy | shuffled | noise (Fig. 2)
    preset: str = "table1-paper"
    net: Pairs = ()
    iterations: int | None = None
    lr: float | None = None
    optimizer: str | None = None
    guard: bool | None = None
    seed: int = 0
    log_every: int = 10
    csc_iterations: int | None = None
    numerics: Pairs = CPU_NUMERICS
    label: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["net"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.net}
        d["numerics"] = dict(self.numerics)
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Run:
        d = dict(d)
        d["net"] = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in sorted(d.get("net", {}).items()))
        d["numerics"] = tuple(sorted(d.get("numerics", {}).items()))
        return Run(**d)

    @property
    def run_id(self) -> str:
        return spec_hash(spec(self))[:16]

    @property
    def problem_id(self) -> str:
        """Hash of what defines the corrupted image (shared by methods and seeds)."""
        keys = ("image", "source", "crop", "resize", "mask", "missing", "mask_seed", "target")
        return spec_hash({k: getattr(self, k) for k in keys})[:12]

    @property
    def depth(self) -> int:
        return len(dict(self.net).get("channels_down", ())) or 5

    @property
    def filters(self) -> int | None:
        down = dict(self.net).get("channels_down")
        return down[0] if down else None

    @property
    def skip(self) -> bool:
        skips = dict(self.net).get("channels_skip")
        return skips is None or any(skips)


def spec_hash(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj`` (the ids of runs and of other stored results)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


PEER_LIBRARY = {"biharmonic": "scikit-image", "csc": "sporco"}  # the package each peer method runs on


def _series(package: str) -> str:
    """'major.minor' of an installed package ('absent' when it is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return ".".join(version(package).split(".")[:2])
    except PackageNotFoundError:
        return "absent"


def spec(run: Run) -> dict[str, Any]:
    """The resolved configuration a run's numbers depend on (what its id hashes)."""
    problem = {
        k: getattr(run, k) for k in ("image", "source", "crop", "resize", "mask", "missing", "mask_seed", "target")
    }
    out: dict[str, Any] = {
        "experiment": run.experiment,
        "profile": run.profile,
        "method": run.method,
        "problem": problem,
    }
    if run.method == "csc":
        out["csc_iterations"] = run.csc_iterations
    if run.method != "dip":
        # the peer's implementation: its library's release series (as torch's for DIP runs)
        out[PEER_LIBRARY[run.method]] = _series(PEER_LIBRARY[run.method])
        return out
    from ..core.presets import get_preset

    preset = get_preset(run.preset)
    net = _fields(net_config(run), _NET_FIELDS)
    net.pop("out_channels")  # set from the image, which the problem names
    fit_cfg = fit_config(run)
    cfg = _fields(fit_cfg, _FIT_FIELDS)
    cfg.pop("progress")
    if fit_cfg.optimizer == "lbfgs":  # always named: L-BFGS runs of before it existed fitted the perturbed input
        cfg["lbfgs_input"] = fit_cfg.lbfgs_input
    out.update(
        preset=run.preset,
        input=preset.input_kind,
        net=net,
        fit=cfg,
        torch=torch_series(),
    )
    return out


def torch_series() -> str:
    """torch's 'major.minor' (the part of its version that run ids and stored results name)."""
    import torch

    return ".".join(torch.__version__.split("+")[0].split(".")[:2])


# the configuration fields that existed when this schema of run ids was fixed: always hashed. A field
# added later enters the hash only where it differs from its default, so that a new lever (off by
# default) leaves the ids of runs that do not use it, and their stored results, valid.
_FIT_FIELDS = frozenset(
    (
        "iterations",
        "lr",
        "optimizer",
        "reg_noise_std",
        "param_noise",
        "log_every",
        "guard",
        "guard_drop_db",
        "ema_decay",
        "snapshots",
        "seed",
        "device",
        "progress",
        "lbfgs_warmup",
        "precision",
        "channels_last",
        "cudnn_benchmark",
        "tf32",
        "adam_impl",
        "compile",
        "cuda_graphs",
        "checkpointing",
        "threads",
    )
)
_NET_FIELDS = frozenset(
    (
        "in_channels",
        "out_channels",
        "channels_down",
        "channels_up",
        "channels_skip",
        "kernel_down",
        "kernel_up",
        "kernel_skip",
        "upsample_mode",
        "downsample_mode",
        "pad",
        "act",
        "need_sigmoid",
        "need_bias",
        "need_1x1_up",
        "need_bn",
    )
)


def _fields(obj: Any, known: frozenset[str]) -> dict[str, Any]:
    """A dataclass as a dict: the ``known`` fields always, later ones only where not at their default."""
    out = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        default = (
            f.default
            if f.default is not MISSING
            else (f.default_factory() if f.default_factory is not MISSING else MISSING)
        )
        if f.name in known or value != default:
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def fit_overrides(run: Run) -> dict[str, Any]:
    """What a run sets on top of its recipe's FitConfig: its overrides and the profile's numerics."""
    return dict(
        iterations=run.iterations,
        lr=run.lr,
        optimizer=run.optimizer,
        guard=run.guard,
        seed=run.seed,
        log_every=run.log_every,
        progress=False,
        **dict(run.numerics),
    )


def net_config(run: Run):
    """The run's network: its recipe's with the run's overrides (channels from the image aside)."""
    from ..core.presets import get_preset

    return replace(get_preset(run.preset).net, **dict(run.net))


def fit_config(run: Run):
    """The run's FitConfig: its recipe with the run's overrides and the profile's numerics."""
    from ..core.presets import get_preset

    return get_preset(run.preset).fit_config(**fit_overrides(run))


# ---------------------------------------------------------------- plans


def widths(width: int | None, depth: int = 5, skip: int | None = None) -> Pairs:
    if width is None:
        return ()
    return pairs(
        channels_down=(width,) * depth,
        channels_up=(width,) * depth,
        channels_skip=((width if skip is None else skip),) * depth,
    )


# ---------------------------------------------------------------- problems


def _fig2_target(image: np.ndarray, target: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if target == "noisy":
        return np.clip(image + rng.normal(0, 0.1, image.shape), 0, 1).astype(np.float32)
    if target == "shuffled":
        flat = image.reshape(image.shape[0], -1)
        return flat[:, rng.permutation(flat.shape[1])].reshape(image.shape)
    if target == "noise":
        return rng.random(image.shape, dtype=np.float32)
    if target == "image":
        return image
    raise DipError(f"unknown target {target!r}; known: {', '.join(FIG2_TARGETS)}")


def library_holes(shape: tuple[int, int]) -> np.ndarray:
    """Large holes for any image (the ``holes-library`` mask): the original library mask's center
    square, resized to ``shape`` so that a pixel is known only where every library pixel under it was.
    Deterministic; about 18% missing, in blobs and strokes of library's scale (1, H, W)."""
    from ..core import data
    from ..core.masks import resize_mask

    _, library = data.load_example("library")
    return resize_mask(center_crop(library, min(library.shape[-2:])), shape, margin=0)


def load_problem(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth (C, H, W) and mask (1 or C, H, W) of a run, float32."""
    from ..core import data
    from ..core import masks as masks_mod

    file_mask = None
    if run.source == "table1":
        image = data.load_table1([run.image])[0][1]
    elif run.source == "dip":
        image, file_mask = data.load_example(run.image)
    elif run.source == "embedded":
        image = data.load_embedded([run.image])[0][1]
    else:
        raise DipError(f"unknown image source {run.source!r}")
    if run.crop:  # before the resize: a square window of a wide image (library) keeps its aspect
        image = center_crop(image, run.crop)
        if file_mask is not None:
            file_mask = center_crop(file_mask, run.crop)
    if run.resize:
        image = resize_square(image, run.resize, order=1)
        if file_mask is not None:
            file_mask = (resize_square(file_mask, run.resize, order=0) > 0.5).astype(np.float32)
    image = _fig2_target(image, run.target, 7000 + run.mask_seed)
    h, w = image.shape[-2:]
    if run.mask == "bernoulli":
        mask = masks_mod.bernoulli_mask((h, w), run.missing, seed=run.mask_seed)
    elif run.mask.startswith("text-"):
        mask = masks_mod.recipe_text_mask((h, w), run.mask[len("text-") :])
    elif run.mask == "file":
        if file_mask is None:
            raise DipError(f"{run.image} has no mask file")
        mask = file_mask
    elif run.mask == HOLES:
        mask = library_holes((h, w))
    elif run.mask == "none":
        mask = np.ones((1, h, w), np.float32)
    else:
        raise DipError(f"unknown mask {run.mask!r}")
    return image, mask
