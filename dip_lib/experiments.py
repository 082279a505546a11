"""Run configurations, the results store, and the runner behind the notebooks and ``reproduce``.

A run is one (method, image, mask, preset, network, seed, profile). Its id is a hash of the
full configuration; its result is saved as soon as it finishes to
``results/<profile>/<experiment>/<run-id>.json`` with its output PNGs, written atomically, so an
interrupted reproduction resumes where it stopped and the notebooks build everything from files.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import platform
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from tqdm.auto import tqdm

from . import masks as masks_mod
from .errors import DipError
from .imageio import atomic_write_bytes, load_image, save_image
from .metrics import psnr, ssim

log = logging.getLogger(__name__)

EXPERIMENTS = ("table1", "arch", "optim")
PROFILE_NAMES = ("smoke", "quick", "paper")


def find_root(start: Path | None = None) -> Path:
    """The project root: the nearest folder above ``start`` (default: cwd) holding pyproject.toml."""
    here = (start or Path.cwd()).resolve()
    for p in [here, *here.parents]:
        if (p / "pyproject.toml").exists() and (p / "dip_lib").is_dir():
            return p
    return Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Profile:
    """How much of each experiment to run. ``net_width`` None keeps the paper's 128 filters."""

    name: str
    description: str
    table1_images: tuple[str, ...]
    table1_crop: int | None  # center crop side; None = native size
    table1_width: int | None
    table1_iterations: dict[str, int]
    seeds_table1: tuple[int, ...]
    seeds_sweep: tuple[int, ...]
    kate_size: int  # kate (512x512) is resized to this side for the sweeps
    filters: tuple[int, ...]
    depths: tuple[int, ...]
    depth_width: int
    sweep_masks: tuple[str, ...]
    depth_masks: tuple[str, ...]
    sweep_iterations: int
    optim_width: int
    optim_iterations: int
    csc_iterations: int
    log_every: int
    comparable: bool  # whether numbers can be set beside the paper's


ALL_TABLE1 = ("barbara", "boat", "house", "lena", "peppers", "cameraman", "couple", "fingerprint", "hill", "man", "montage")

PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        "smoke", "end-to-end check on CPU in under a minute per notebook: 64x64 crops of 3 images, "
        "8-filter networks, a few dozen iterations, 2 seeds for Table 1", ("house", "cameraman", "peppers"), 64, 8,
        {"table1-paper": 40, "table1-seed": 40}, (0, 1), (0,), 64, (4, 8), (1, 2, 3), 8,
        ("text-seed", "file"), ("text-seed",), 25, 8, 30, 5, 5, False),
    "quick": Profile(
        "quick", "meaningful reduced results on a 2-core CPU: 96x96 center crops of all 11 Table-1 images "
        "with 32-filter networks and 1000 iterations; kate resized to 128x128; filters sweep at full "
        "width, depth sweep with 32 filters on the seed's text mask; optimiser sweep with 64 filters; "
        "2 seeds for Table 1, 1 for the sweeps",
        ALL_TABLE1, 96, 32, {"table1-paper": 1000, "table1-seed": 1000}, (0, 1), (0,), 128,
        (4, 16, 32, 64, 128), (1, 2, 3, 4, 5, 6), 32, ("text-seed", "file"), ("text-seed",), 500, 64, 800, 60, 10, False),
    "paper": Profile(
        "paper", "full size, full iteration counts, 128 filters (a GPU job)", ALL_TABLE1, None, None,
        {"table1-paper": 11000, "table1-seed": 6001}, (0, 1, 2), (0, 1), 512,
        (4, 16, 32, 64, 128), (1, 2, 3, 4, 5, 6, 7, 8), 128, ("text-seed", "file"), ("text-seed", "file"), 6001, 128, 6001, 200, 50, True),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise DipError(f"unknown profile {name!r}; known: {', '.join(PROFILES)}")
    return PROFILES[name]


@dataclass(frozen=True)
class Run:
    """Everything that determines one result. ``net`` holds SkipConfig overrides as (key, value)."""

    experiment: str
    profile: str
    image: str
    source: str = "table1"  # table1 | dip | embedded
    method: str = "dip"  # dip | biharmonic | csc
    crop: int | None = None  # center-crop side
    resize: int | None = None  # resize to this side (square images)
    mask: str = "bernoulli"  # bernoulli | text-seed | file
    missing: float = 0.5
    mask_seed: int = 0
    preset: str = "table1-paper"
    net: tuple[tuple[str, Any], ...] = ()
    iterations: int | None = None
    lr: float | None = None
    optimizer: str | None = None
    seed: int = 0
    log_every: int = 10
    csc_iterations: int | None = None
    label: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["net"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.net}
        return d

    @property
    def run_id(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def problem_id(self) -> str:
        """Hash of what defines the corrupted image (shared by methods and seeds)."""
        keys = ("image", "source", "crop", "resize", "mask", "missing", "mask_seed")
        blob = json.dumps({k: getattr(self, k) for k in keys}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "Run":
        d = dict(d)
        d["net"] = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in sorted(d.get("net", {}).items()))
        return Run(**d)


def _net(**kw: Any) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(kw.items()))


def _width(width: int | None, skip: int | None) -> tuple[tuple[str, Any], ...]:
    if width is None:
        return ()
    return _net(channels_down=(width,) * 5, channels_up=(width,) * 5, channels_skip=(skip,) * 5)


def plan(experiment: str, profile: str, seeds: Iterable[int] | None = None, images: Iterable[str] | None = None) -> list[Run]:
    """The runs of one experiment at one profile, in the order they should be computed."""
    prof = get_profile(profile)
    if experiment == "table1":
        return _plan_table1(prof, tuple(seeds) if seeds is not None else prof.seeds_table1, tuple(images or prof.table1_images))
    if experiment == "arch":
        return _plan_arch(prof, tuple(seeds) if seeds is not None else prof.seeds_sweep)
    if experiment == "optim":
        return _plan_optim(prof, tuple(seeds) if seeds is not None else prof.seeds_sweep)
    raise DipError(f"unknown experiment {experiment!r}; known: {', '.join(EXPERIMENTS)}")


def table1_source(images: Iterable[str]) -> str:
    """'table1' when the Table-1 files can be had (cache or mirror), else 'embedded'."""
    from . import data

    try:
        data.fetch(list(images))
        return "table1"
    except DipError as exc:
        log.warning("Table-1 images unavailable (%s); using the embedded set (%s)", exc, data.EMBEDDED_LABEL)
        return "embedded"


def _plan_table1(prof: Profile, seeds: tuple[int, ...], images: tuple[str, ...]) -> list[Run]:
    runs: list[Run] = []
    source = "table1"
    if images and images[0] not in ALL_TABLE1:
        source = "embedded"
    for seed in seeds:
        for preset in ("table1-paper", "table1-seed"):
            skip = 4 if preset == "table1-paper" else prof.table1_width
            for k, image in enumerate(images):
                runs.append(Run("table1", prof.name, image, source, crop=prof.table1_crop, mask="bernoulli", missing=0.5,
                                mask_seed=1000 + k, preset=preset, net=_width(prof.table1_width, skip),
                                iterations=prof.table1_iterations[preset], seed=seed, log_every=prof.log_every))
    # the CPU peers go last, so that a GPU budget is spent on DIP first
    for k, image in enumerate(images):
        base = Run("table1", prof.name, image, source, crop=prof.table1_crop, mask="bernoulli", missing=0.5,
                   mask_seed=1000 + k, log_every=prof.log_every)
        for method in ("biharmonic", "csc"):
            runs.append(replace(base, method=method, preset="", csc_iterations=prof.csc_iterations if method == "csc" else None))
    return runs


def _plan_arch(prof: Profile, seeds: tuple[int, ...]) -> list[Run]:
    runs: list[Run] = []
    size = prof.kate_size if prof.kate_size != 512 else None
    for seed in seeds:
        for mask in prof.sweep_masks:
            for f in prof.filters:
                runs.append(Run("arch", prof.name, "kate", "dip", resize=size, mask=mask, preset="text",
                                net=_net(channels_down=(f,) * 5, channels_up=(f,) * 5, channels_skip=(f,) * 5),
                                iterations=prof.sweep_iterations, seed=seed, log_every=prof.log_every, label=f"filters={f}"))
        for mask in prof.depth_masks:
            for skip in (True, False):
                for d in prof.depths:
                    w = prof.depth_width
                    runs.append(Run("arch", prof.name, "kate", "dip", resize=size, mask=mask, preset="text",
                                    net=_net(channels_down=(w,) * d, channels_up=(w,) * d, channels_skip=((w if skip else 0),) * d),
                                    iterations=prof.sweep_iterations, seed=seed, log_every=prof.log_every,
                                    label=f"depth={d},skip={int(skip)}"))
    return runs


def _plan_optim(prof: Profile, seeds: tuple[int, ...]) -> list[Run]:
    runs: list[Run] = []
    size = prof.kate_size if prof.kate_size != 512 else None
    w = prof.optim_width
    net = () if w == 128 else _net(channels_down=(w,) * 5, channels_up=(w,) * 5, channels_skip=(w,) * 5)
    for seed in seeds:
        for opt, lr in (("adam", 0.1), ("adam", 0.01), ("adam", 0.001), ("lbfgs", 0.01)):
            runs.append(Run("optim", prof.name, "kate", "dip", resize=size, mask="text-seed", preset="text", net=net,
                            iterations=prof.optim_iterations, lr=lr, optimizer=opt, seed=seed,
                            log_every=max(1, prof.log_every // 2), label=f"{opt} lr={lr:g}"))
    return runs


# ---------------------------------------------------------------- problems


def _resize(img: np.ndarray, side: int, order: int) -> np.ndarray:
    from skimage.transform import resize

    out = resize(np.moveaxis(img, 0, -1), (side, side), order=order, anti_aliasing=order > 0, preserve_range=True)
    return np.clip(np.moveaxis(np.atleast_3d(out), -1, 0), 0, 1).astype(np.float32)


def _crop(img: np.ndarray, side: int) -> np.ndarray:
    h, w = img.shape[-2:]
    if min(h, w) < side:
        raise DipError(f"image is {w}x{h}, smaller than the {side}x{side} crop")
    top, left = (h - side) // 2, (w - side) // 2
    return img[..., top : top + side, left : left + side]


def load_problem(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth (C, H, W) and mask (1 or C, H, W) of a run, float32."""
    from . import data

    file_mask = None
    if run.source == "table1":
        image = data.load_table1([run.image])[0][1]
    elif run.source == "dip":
        image, file_mask = data.load_example(run.image)
    elif run.source == "embedded":
        image = data.load_embedded([run.image])[0][1]
    else:
        raise DipError(f"unknown image source {run.source!r}")
    if run.resize:
        image = _resize(image, run.resize, order=1)
        if file_mask is not None:
            file_mask = (_resize(file_mask, run.resize, order=0) > 0.5).astype(np.float32)
    if run.crop:
        image = _crop(image, run.crop)
        if file_mask is not None:
            file_mask = _crop(file_mask, run.crop)
    h, w = image.shape[-2:]
    if run.mask == "bernoulli":
        mask = masks_mod.bernoulli_mask((h, w), run.missing, seed=run.mask_seed)
    elif run.mask.startswith("text-"):
        mask = masks_mod.recipe_text_mask((h, w), run.mask[len("text-"):])
    elif run.mask == "file":
        if file_mask is None:
            raise DipError(f"{run.image} has no mask file")
        mask = file_mask
    else:
        raise DipError(f"unknown mask {run.mask!r}")
    return image, mask


# ---------------------------------------------------------------- store


class ResultStore:
    """results/<profile>/<experiment>/<run-id>.json plus PNGs; one problem's input is shared."""

    def __init__(self, root: str | Path = "results") -> None:
        root = Path(root)
        self.root = root if root.is_absolute() else find_root() / root

    def folder(self, run: Run) -> Path:
        return self.root / run.profile / run.experiment

    def path(self, run: Run) -> Path:
        return self.folder(run) / f"{run.run_id}.json"

    def exists(self, run: Run) -> bool:
        return self.path(run).exists()

    def load(self, run: Run) -> dict[str, Any]:
        try:
            return json.loads(self.path(run).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DipError(f"cannot read result {self.path(run)}: {exc}") from None

    def image(self, run: Run, kind: str = "final") -> np.ndarray:
        """A stored output ('final', 'best', 'observed', 'eswmv' or 'drop<k>') as (C, H, W)."""
        rec = self.load(run)
        name = rec["images"].get(kind)
        if name is None:
            raise DipError(f"run {run.run_id} has no {kind!r} image")
        return load_image(self.folder(run) / name)

    def save(self, run: Run, record: dict[str, Any], images: dict[str, np.ndarray]) -> None:
        folder = self.folder(run)
        names: dict[str, str] = {}
        for kind, arr in images.items():
            if arr is None:
                continue
            name = f"inputs/{run.problem_id}.png" if kind == "observed" else f"{run.run_id}-{kind}.png"
            if kind != "observed" or not (folder / name).exists():
                save_image(folder / name, arr)
            names[kind] = name
        record["images"] = names
        # the JSON goes last: a run counts as done only once all its files are there
        atomic_write_bytes(self.path(run), json.dumps(record, indent=1, allow_nan=True).encode())

    def missing(self, runs: Iterable[Run]) -> list[Run]:
        return [r for r in runs if not self.exists(r)]


def environment(device: torch.device) -> dict[str, Any]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    return {
        "torch": torch.__version__, "python": sys.version.split()[0], "platform": platform.platform(),
        "device": str(device), "device_name": name, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


# ---------------------------------------------------------------- execution


def _fit_config(run: Run, device: str, fast: bool = True):
    """The run's FitConfig; ``fast`` adds the speed levers that measurably help on the device
    (``fit.fast_config``: e.g. bf16 autocast where its PSNR parity holds, CUDA graphs)."""
    from .fit import fast_config
    from .presets import get_preset

    preset = get_preset(run.preset)
    cfg = preset.fit_config(iterations=run.iterations, lr=run.lr, optimizer=run.optimizer, seed=run.seed,
                            device=device, log_every=run.log_every, progress=False)
    return preset, fast_config(cfg) if fast else cfg


def _levers(cfg) -> dict[str, Any]:
    keys = ("precision", "channels_last", "cudnn_benchmark", "tf32", "adam_impl", "compile", "cuda_graphs", "checkpointing")
    return {k: getattr(cfg, k) for k in keys if hasattr(cfg, k)}


def _dip_record(run: Run, result, image: np.ndarray, mask: np.ndarray, stopper, drops, params: int, cfg) -> tuple[dict, dict]:
    s = result.summary()
    s["params"] = params
    s["masked_psnr"] = psnr(image, image * mask)
    s["ms_per_iteration"] = 1000 * result.wall_time / max(1, result.iterations_run)
    images = {"final": result.final, "best": result.best, "ema": result.ema, "observed": image * mask}
    es = {"window": stopper.window, "patience": stopper.patience, "iteration": stopper.best_iteration,
          "stop_iteration": stopper.stop_iteration, "psnr": None}
    if stopper.best_output is not None:
        es["psnr"] = psnr(image, stopper.best_output)
        images["eswmv"] = stopper.best_output
    drop_list = []
    for k, d in enumerate(drops.result()):
        drop_list.append({"start_iteration": d.start_iteration, "bottom_iteration": d.bottom_iteration,
                          "from_psnr": d.from_psnr, "to_psnr": d.to_psnr, "image": f"drop{k}"})
        images[f"drop{k}"] = d.output
    record = {"summary": s, "history": result.history.to_dict(), "eswmv": es, "drops": drop_list, "levers": _levers(cfg)}
    return record, images


def _make_callbacks(iterations: int):
    from .drops import DropRecorder
    from .stopping import ESWMV

    # record where ES-WMV would stop; the full run continues for the curves
    stopper = ESWMV.for_iterations(iterations, stop=False)
    return stopper, DropRecorder()


def execute(run: Run, device: str = "auto") -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Compute one run; returns its record and output images (not yet saved)."""
    from .fit import fit, resolve_device
    from .nets import count_params, min_size

    image, mask = load_problem(run)
    dev = resolve_device(device)
    t0 = time.perf_counter()
    if run.method in ("biharmonic", "csc"):
        from . import peers

        out = peers.biharmonic(image * mask, mask) if run.method == "biharmonic" else peers.csc(image * mask, mask, iterations=run.csc_iterations)
        wall = time.perf_counter() - t0
        record = {"summary": {"final_psnr": psnr(image, out), "final_ssim": ssim(image, out), "wall_time": wall,
                              "masked_psnr": psnr(image, image * mask), "device": "cpu"}}
        images = {"final": out, "observed": image * mask}
        dev = torch.device("cpu")
    else:
        preset, cfg = _fit_config(run, str(dev))
        c, h, w = image.shape
        net = preset.build_net(c, seed=run.seed, **dict(run.net))
        need = min_size(net.cfg)
        if min(h, w) < need:
            raise DipError(f"{run.image} is {w}x{h}; depth {net.cfg.depth} needs at least {need}x{need}")
        z = preset.make_input(h, w, seed=run.seed)
        stopper, drops = _make_callbacks(cfg.iterations)
        result = fit(net, z, image * mask, mask, cfg, ground_truth=image, callbacks=[stopper, drops])
        record, images = _dip_record(run, result, image, mask, stopper, drops, count_params(net), cfg)
    return _finish(record, run, dev, time.perf_counter() - t0), images


def _finish(record: dict[str, Any], run: Run, device: torch.device, wall: float, **extra: Any) -> dict[str, Any]:
    """Stamp a record with what identifies it and where and how long it ran."""
    record.update({"run_id": run.run_id, "config": run.to_dict(), "environment": environment(device), "wall_time": wall, **extra})
    return record


def _batch_key(run: Run) -> tuple:
    return (run.experiment, run.preset, run.net, run.iterations, run.lr, run.optimizer, run.log_every, run.crop, run.resize, run.source)


def execute_batch(runs: list[Run], device: str) -> list[tuple[dict, dict]]:
    """Compute DIP runs of one shape and configuration together in one network pass (fit_many)."""
    from .batched import fit_many
    from .fit import resolve_device
    from .nets import count_params

    dev = resolve_device(device)
    problems = [load_problem(r) for r in runs]
    preset, cfg = _fit_config(runs[0], str(dev))
    nets, inputs, cbs = [], [], []
    for r, (image, _) in zip(runs, problems):
        c, h, w = image.shape
        nets.append(preset.build_net(c, seed=r.seed, **dict(r.net)))
        inputs.append(preset.make_input(h, w, seed=r.seed))
        cbs.append(list(_make_callbacks(cfg.iterations)))
    t0 = time.perf_counter()
    results = fit_many(nets, inputs, [im * m for im, m in problems], [m for _, m in problems], cfg,
                       ground_truths=[im for im, _ in problems], seeds=[r.seed for r in runs], callbacks=cbs)
    wall = time.perf_counter() - t0
    out = []
    for r, (image, mask), res, (stopper, drops), net in zip(runs, problems, results, cbs, nets):
        record, images = _dip_record(r, res, image, mask, stopper, drops, count_params(net), cfg)
        out.append((_finish(record, r, dev, wall, batched=len(runs)), images))
    return out


def run_all(runs: list[Run], store: ResultStore | None = None, device: str = "auto", compute: bool = True,
            budget_seconds: float | None = None, batch: int | str = "auto", progress: bool = True) -> list[dict]:
    """Load every run's result, computing the missing ones (if ``compute``) and saving each at once.

    Without ``compute`` a missing run is an error listing all missing runs. With a budget, no new
    run (or batch) starts once the time spent plus the slowest one so far would pass it.
    """
    from .fit import resolve_device

    store = store or ResultStore()
    todo = store.missing(runs)
    if todo and not compute:
        listing = ", ".join(f"{r.experiment}/{r.run_id} ({r.method} {r.image} {r.preset} {r.label} seed {r.seed})".replace("  ", " ") for r in todo[:20])
        more = f" and {len(todo) - 20} more" if len(todo) > 20 else ""
        raise DipError(f"{len(todo)} of {len(runs)} runs have no stored result in {store.root}: {listing}{more}")
    dev = resolve_device(device)
    if batch == "auto":
        # on a GPU, batch problems up to one 512x512 image's pixels per pass; on a CPU one at a time
        size = (lambda shape: max(1, min(8, 512 * 512 // (shape[-2] * shape[-1])))) if dev.type == "cuda" else (lambda shape: 1)
    else:
        size = (lambda shape, k=int(batch): k)
    groups = _group(todo, size)
    costs = [sum(_cost(r) for r in g) for g in groups]
    if budget_seconds is not None:
        # cheapest per run first, so that a short budget finishes as many runs as it can
        order = sorted(range(len(groups)), key=lambda i: (groups[i][0].method != "dip", costs[i] / len(groups[i])))
        groups, costs = [groups[i] for i in order], [costs[i] for i in order]
    started, rate = time.perf_counter(), 0.0  # rate: the slowest seconds per unit of cost so far
    bar = tqdm(total=len(todo), desc="runs", disable=not progress or not todo)
    for group, cost in zip(groups, costs):
        spent = time.perf_counter() - started
        if budget_seconds is not None and (spent > budget_seconds or spent + rate * cost > budget_seconds):
            log.warning("budget of %.0f s: stopping after %.0f s; %d runs remain", budget_seconds, spent, bar.total - bar.n)
            break
        t0 = time.perf_counter()
        if len(group) > 1:
            done = execute_batch(group, str(dev))
        else:
            done = [execute(group[0], str(dev))]
        for run, (record, images) in zip(group, done):
            store.save(run, record, images)
        if cost > 0:
            rate = max(rate, (time.perf_counter() - t0) / cost)
        bar.update(len(group))
    bar.close()
    return [store.load(r) for r in runs if store.exists(r)]


@functools.lru_cache(maxsize=None)
def _shape(image: str, source: str, crop: int | None, resize: int | None) -> tuple[int, ...]:
    if resize:
        return (resize, resize)
    if crop:
        return (crop, crop)
    if source == "table1":
        from . import data

        entry = next(e for e in data.registry() if e.name == image)
        return (int(entry.height), int(entry.width))
    return tuple(load_problem(Run("table1", "smoke", image, source))[0].shape[-2:])


@functools.lru_cache(maxsize=None)
def _params(preset: str, net: tuple) -> int:
    from .nets import SkipNet, count_params
    from .presets import get_preset

    return count_params(SkipNet(replace(get_preset(preset).net, out_channels=1, **dict(net))))


def _cost(run: Run) -> float:
    """Relative compute of a DIP run: pixels x iterations x parameters (0 for the CPU peers)."""
    if run.method != "dip":
        return 0.0
    h, w = _shape(run.image, run.source, run.crop, run.resize)
    from .presets import get_preset

    iterations = run.iterations or get_preset(run.preset).iterations
    return float(h * w) * iterations * _params(run.preset, run.net)


def _group(runs: list[Run], size) -> list[list[Run]]:
    """Batches of DIP runs that share shape and configuration (at most ``size(shape)`` each);
    peers and L-BFGS run alone."""
    groups: dict[tuple, list[list[Run]]] = {}
    order: list[list[Run]] = []
    for r in runs:
        if r.method != "dip" or r.optimizer == "lbfgs":
            order.append([r])
            continue
        shape = _shape(r.image, r.source, r.crop, r.resize)
        key = (_batch_key(r), shape)
        bucket = groups.setdefault(key, [])
        if not bucket or len(bucket[-1]) >= size(shape):
            bucket.append([])
            order.append(bucket[-1])
        bucket[-1].append(r)
    return order


def load_records(runs: list[Run], store: ResultStore | None = None, compute: bool = False, device: str = "auto",
                 partial: bool = False) -> list[tuple[Run, dict]]:
    """(run, record) for each run, in order; computes missing ones only when ``compute``.

    ``partial`` (without ``compute``): only the stored runs, skipping missing ones instead of failing."""
    store = store or ResultStore()
    if partial and not compute:
        return [(r, store.load(r)) for r in runs if store.exists(r)]
    records = run_all(runs, store, device=device, compute=compute)
    return list(zip(runs, records))


def coverage(runs: list[Run], store: ResultStore | None = None) -> dict[str, Any]:
    """How much of a plan is stored: counts, the missing runs, the seeds and images with stored runs,
    the images with no stored run and those with only some of their runs stored."""
    store = store or ResultStore()
    missing = store.missing(runs)
    gone = set(missing)
    stored = [r for r in runs if r not in gone]
    images = list(dict.fromkeys(r.image for r in runs))
    have = {r.image for r in stored}
    return {"planned": len(runs), "stored": len(stored), "missing": missing,
            "seeds": sorted({r.seed for r in stored}), "planned_seeds": sorted({r.seed for r in runs}),
            "images": [i for i in images if i in have], "missing_images": [i for i in images if i not in have],
            "incomplete_images": sorted({r.image for r in missing} & have)}


def reproduce(profile: str, only: Iterable[str] | None = None, device: str = "auto", budget_seconds: float | None = None,
              results_dir: str | Path = "results") -> dict[str, int]:
    """Compute every missing run of the chosen experiments; returns {experiment: runs still missing}."""
    store = ResultStore(results_dir)
    chosen = list(only) if only else list(EXPERIMENTS)
    started = time.perf_counter()
    remaining: dict[str, int] = {}
    for exp in chosen:
        runs = plan(exp, profile)
        if exp == "table1" and runs and runs[0].source == "table1":
            from . import data

            data.fetch(list(dict.fromkeys(r.image for r in runs)))
        left = None if budget_seconds is None else budget_seconds - (time.perf_counter() - started)
        if left is not None and left <= 0:
            remaining[exp] = len(store.missing(runs))
            continue
        run_all(runs, store, device=device, budget_seconds=left)
        remaining[exp] = len(store.missing(runs))
    return remaining


def cmd_reproduce(args) -> int:
    prof = get_profile(args.profile)
    print(f"profile {prof.name}: {prof.description}")
    remaining = reproduce(args.profile, args.only, args.device, args.budget_seconds, args.results_dir)
    for exp, n in remaining.items():
        total = len(plan(exp, args.profile))
        print(f"{exp}: {total - n} of {total} runs stored" + (f", {n} remain (run the same command again to resume)" if n else ""))
    return 0


def add_cli(sub) -> None:
    p = sub.add_parser("reproduce", help="compute the runs of the report without notebooks (resumable)")
    p.add_argument("--profile", choices=PROFILE_NAMES, required=True)
    p.add_argument("--only", action="append", choices=EXPERIMENTS, help="one experiment (repeatable)")
    p.add_argument("--device", default="auto")
    p.add_argument("--budget-seconds", type=float, help="start no new run once this would be exceeded")
    p.add_argument("--results-dir", default="results")
    p.set_defaults(func=cmd_reproduce)
