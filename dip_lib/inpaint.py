"""``python -m dip_lib inpaint``: one image, one fit, its outputs; nothing lost, nothing half-written.

Everything that can be refused is refused before the fit (paths, an output on an input, free space,
memory, time: without --size a fit must fit a budget of minutes); the fit's thread count is fixed at
start (``--threads``, default: the usable cores idle then) and recorded with the configuration, seed
and library versions in ``--history``. After the fit, an output that cannot be written is written to
a fallback file, named in one line on stderr; Ctrl-C (or SIGTERM) writes the best output so far as
``<output>.partial-<iteration>.<ext>`` and exits 130 (143). With ``--resume-dir`` the fit's whole
state is saved there every 5 minutes and on Ctrl-C, and the same command continues an interrupted
fit (bit-identically at the same thread count, ``dip_lib.core.resume``); the state is removed once
every output is written.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from .core.errors import DipError

log = logging.getLogger(__name__)

PNG_OVERHEAD = 64 * 1024  # header and zlib's worst case beyond the raw 8-bit pixels
HISTORY_BYTES_PER_CHECK = 400  # eight numbers per check as JSON, rounded up


DEFAULT_PRESET = "text"  # without --preset; the fast one when it fits no size in the default budget
DEFAULT_BUDGET_MIN = 10.0  # without --size, --max-minutes or --no-budget a fit is chosen to take at most this
MAX_FIT_S = 24 * 3600  # a fit estimated longer starts only with --no-budget


def check_args(args: argparse.Namespace) -> None:
    """Refuse bad options and output paths in one line (DipError) before torch is imported."""
    from .core.imageio import check_writable, image_format

    if args.iterations is not None and args.iterations <= 0:
        raise DipError(f"--iterations must be positive, got {args.iterations}")
    if args.bernoulli is not None and not 0 < args.bernoulli < 1:
        raise DipError(f"--bernoulli must be in (0, 1), got {args.bernoulli}")
    if args.lr is not None and not (0 < args.lr < float("inf")):
        raise DipError(f"--lr must be a positive finite number, got {args.lr}")
    if not 0 <= args.seed < 2**63:
        raise DipError(f"--seed must be in [0, 2^63), got {args.seed}")
    if args.text is not None and not args.text.strip():
        raise DipError("--text is empty")
    if args.threads is not None and args.threads <= 0:
        raise DipError(f"--threads must be positive, got {args.threads}")
    if args.invert_mask and args.mask is None:
        raise DipError("--invert-mask needs --mask")
    for flag, path in _outputs(args):
        check_writable(path, flag)
    image_format(args.output)
    if args.masked is not None:
        image_format(args.masked)
    named = [p.resolve() for _, p in _outputs(args)]
    if len(set(named)) < len(named):
        raise DipError("--output, --history and --masked must be different files")
    if not args.image.is_file():
        raise DipError(f"file not found: {args.image}" if not args.image.exists() else f"not a file: {args.image}")
    if args.resume_dir is not None:
        if args.resume_dir.exists() and not args.resume_dir.is_dir():
            raise DipError(f"--resume-dir {args.resume_dir} is not a folder")
        check_writable(args.resume_dir / "state.pt", "--resume-dir")
    check_inputs_kept(args)


def check_inputs_kept(args: argparse.Namespace) -> None:
    """Refuse (one line) any output that could land on the image or the mask: the same path after
    resolving links, the same file under another name (a hard link), a partial output's name
    (``<output>.partial-<iteration>``) or a saved state's (``--resume-dir``/inpaint-*.pt)."""
    inputs = [("the input image", args.image)] + ([("the mask", args.mask)] if args.mask is not None else [])
    for what, source in inputs:
        for flag, path in _outputs(args):
            if _same_file(path, source):
                raise DipError(f"{flag} {path} is {what}: it would be overwritten; write the output elsewhere")
        if _same_file(source.parent, args.output.parent) and _is_partial_name(source.name, args.output):
            raise DipError(
                f"{what} {source} has the name of a partial output of -o {args.output} (written on Ctrl-C); "
                "rename it or write the output elsewhere"
            )
        in_states = args.resume_dir is not None and _same_file(source.parent, args.resume_dir)
        if in_states and source.name.startswith("inpaint-") and source.suffix == ".pt":
            raise DipError(f"{what} {source} has the name of a saved state in --resume-dir; give another folder")


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


def _is_partial_name(name: str, output: Path) -> bool:
    return name.startswith(f"{output.stem}.partial") and name.endswith(output.suffix)


def _outputs(args: argparse.Namespace) -> list[tuple[str, Path]]:
    named = [("--output", args.output), ("--history", args.history), ("--masked", args.masked)]
    return [(flag, p) for flag, p in named if p is not None]


def output_bytes(args: argparse.Namespace, shape: tuple[int, int, int], iterations: int, log_every: int) -> dict:
    """An upper bound of the bytes each output will take: {path: bytes}."""
    c, h, w = shape
    image = c * h * w + PNG_OVERHEAD
    sizes = {args.output: image}
    if args.masked is not None:
        sizes[args.masked] = image
    if args.history is not None:
        sizes[args.history] = HISTORY_BYTES_PER_CHECK * (iterations // max(1, log_every) + 2) + 16 * 1024
    return sizes


def check_free_space(sizes: dict[Path, int]) -> None:
    """Refuse (one line) when a file system lacks the room for the outputs it will hold."""
    from .core.estimate import fmt_bytes

    need: dict[int, list] = {}  # file system -> [a folder on it, bytes]
    for path, size in sizes.items():
        folder = _existing_folder(Path(path))
        need.setdefault(folder.stat().st_dev, [folder, 0])[1] += size
    for folder, size in need.values():
        free = shutil.disk_usage(folder).free
        if free < size:
            raise DipError(
                f"the outputs need about {fmt_bytes(size)} in {folder} but {fmt_bytes(free)} is free; "
                "free some space or write them elsewhere"
            )


def _existing_folder(path: Path) -> Path:
    for folder in (path.parent, *path.parent.parents):
        if folder.exists():
            return folder
    return Path.cwd()


def target_shape(shape: tuple[int, int, int], size: int | None) -> tuple[int, int]:
    """(h, w) after ``--size`` (the longer side), computed without resizing anything."""
    from .core.estimate import scaled_shape

    _, h, w = shape
    return (h, w) if not size else scaled_shape(h, w, size)


class NoSizeFits(DipError):
    """No size of the preset fits the time budget."""


def preflight(preset, shape: tuple[int, int, int], cfg, args: argparse.Namespace) -> tuple[int, int]:
    """Before a fit of an image of ``shape`` (C, H, W, after --size): within a time budget (--max-minutes,
    or DEFAULT_BUDGET_MIN without --size and --no-budget), the largest size whose estimate fits it
    (refused, naming what would fit, when none does); with --size, refuse a fit estimated beyond
    MAX_FIT_S unless --no-budget, else print the estimate (naming the largest size that fits in 15
    minutes when it is longer). The memory estimate is checked first. Returns the (h, w) to fit."""
    from .core import estimate as est
    from .core.device import resolve_device
    from .core.inputs import make_input

    est.require_positive_minutes(args.max_minutes)
    from .core.nets import min_size

    c, h, w = shape
    net_cfg = replace(preset.net, out_channels=c)
    need = min_size(net_cfg)
    if min(h, w) < need:
        raise DipError(f"image is {w}x{h} but {preset.name!r} at depth {net_cfg.depth} needs at least {need}x{need}")
    device = resolve_device(cfg.device).type
    minutes = args.max_minutes
    if minutes is None and not args.size and not args.no_budget:
        minutes = DEFAULT_BUDGET_MIN
    if args.max_minutes is None:
        est.check_memory(net_cfg, h, w, cfg)  # at once: nothing allocated yet
    else:  # memory first: never calibrate (or resize) at a size the machine cannot hold
        avail = est.available_memory_bytes()
        if avail is not None:
            fits = est.largest_side_that_fits(net_cfg, h, w, est.memory_mode(cfg), avail + est.BASE_BYTES)
            if fits is None:
                est.check_memory(net_cfg, h, w, cfg)  # raises, naming what would fit
            if fits < max(h, w):
                h, w = est.scaled_shape(h, w, fits)
    rate = est.calibrate_time(
        net_cfg, h, w, cfg, lambda hh, ww: make_input(preset.input_kind, net_cfg.in_channels, hh, ww, 0)
    )
    if minutes is not None:
        where = f"in {minutes:g} min" if args.max_minutes is not None else f"in the default budget of {minutes:g} min"
        budget = minutes * 60
        side = est.largest_side_within(net_cfg, h, w, cfg.iterations, rate, budget, cfg)
        if side is None:
            anyway = "" if args.max_minutes is not None else "; --no-budget starts it anyway"
            raise NoSizeFits(
                f"no size of preset {preset.name!r} fits {where} at {cfg.iterations} iterations "
                f"on {device}: {_what_fits(preset, net_cfg, c, h, w, cfg, rate, budget)}{anyway}"
            )
        if side < max(h, w):
            h, w = est.scaled_shape(h, w, side)
        e = est.estimate(net_cfg, h, w, cfg.iterations, cfg, rate)
        assert e.seconds <= budget, "largest_side_within chose a size beyond the budget"
        label = f"--max-minutes {minutes:g}" if args.max_minutes is not None else f"budget {minutes:g} min (default)"
        print(f"{label}: chose --size {max(h, w)} ({w}x{h}), {est.describe(e, device)}", flush=True)
        return h, w
    e = est.estimate(net_cfg, h, w, cfg.iterations, cfg, rate)
    if e.seconds > MAX_FIT_S and not args.no_budget:
        raise DipError(
            f"this fit would take about {est.fmt_seconds(e.seconds)} on {device}, more than {MAX_FIT_S // 3600} h: "
            "lower --size or --iterations, or add --no-budget to start it anyway"
        )
    suggestion = None
    if e.seconds > est.LONG_FIT_S:
        side = est.largest_side_within(net_cfg, h, w, cfg.iterations, rate, est.LONG_FIT_S, cfg)
        if side is not None and side < max(h, w):
            sh, sw = est.scaled_shape(h, w, side)
            suggestion = (side, est.estimate(net_cfg, sh, sw, cfg.iterations, cfg, rate).seconds)
    print(f"estimate: {est.describe(e, device, suggestion)}", flush=True)
    if e.seconds > est.LONG_FIT_S and suggestion is None:
        small = est.smallest_side(net_cfg, h, w)
        if small < max(h, w):
            s = est.estimate(net_cfg, *est.scaled_shape(h, w, small), cfg.iterations, cfg, rate).seconds
            print(f"no smaller --size fits in 15 min: --size {small} would take about {est.fmt_seconds(s)}", flush=True)
    if e.seconds > est.LONG_FIT_S and preset.name != "fast":
        print(_fast_hint(c, h, w, cfg), flush=True)
    return h, w


def _what_fits(preset, net_cfg, c: int, h: int, w: int, cfg, rate, budget: float) -> str:
    """What would fit in ``budget`` seconds: the fast preset at some size, else fewer iterations."""
    from .core import estimate as est

    small = est.smallest_side(net_cfg, h, w)
    sh, sw = est.scaled_shape(h, w, small)
    per = est.estimate(net_cfg, sh, sw, 1, cfg, rate)
    took = est.estimate(net_cfg, sh, sw, cfg.iterations, cfg, rate).seconds
    parts = [f"--size {small} would take about {est.fmt_seconds(took)}"]
    if preset.name != "fast":
        fast, fcfg, frate, fnet = _fast_rate(c, h, w, cfg)
        side = est.largest_side_within(fnet, h, w, fcfg.iterations, frate, budget, fcfg)
        if side is not None:
            fh, fw = est.scaled_shape(h, w, side)
            t = est.estimate(fnet, fh, fw, fcfg.iterations, fcfg, frate).seconds
            parts.append(f"--preset fast --size {side} fits (about {est.fmt_seconds(t)})")
    iters = int((budget - (per.seconds - per.seconds_per_iteration)) / per.seconds_per_iteration)
    if iters >= 1:
        parts.append(f"--size {small} --iterations {iters} fits")
    return "; ".join(parts)


def _fast_rate(c: int, h: int, w: int, cfg):
    from .core import estimate as est
    from .core.inputs import make_input
    from .core.presets import get_preset
    from .core.solver import fast_config

    fast = get_preset("fast")
    net_cfg = fast.net_config(c)
    fcfg = replace(
        fast_config(fast.fit_config(device=cfg.device)), checkpointing=cfg.checkpointing, threads=cfg.threads
    )
    rate = est.calibrate_time(
        net_cfg, h, w, fcfg, lambda hh, ww: make_input(fast.input_kind, net_cfg.in_channels, hh, ww, 0)
    )
    return fast, fcfg, rate, net_cfg


def _fast_hint(c: int, h: int, w: int, cfg) -> str:
    """One line offering the ``fast`` preset, with its own calibrated estimate at this size (its recipe
    with the levers ``inpaint`` would use, as for any preset)."""
    from .core import estimate as est

    fast, fcfg, rate, net_cfg = _fast_rate(c, h, w, cfg)
    e = est.estimate(net_cfg, h, w, fcfg.iterations, fcfg, rate)
    return (
        f"hint: --preset fast ({fast.description}) would take about {est.fmt_seconds(e.seconds)} here; "
        f"what it gives up: {_report_page('06_cost_quality.html')}"
    )


def _report_page(name: str) -> str:
    """A page of the quick report, as a path from the current folder (absolute when that is shorter)."""
    page = Path(__file__).resolve().parent.parent / "report" / "quick" / name
    rel = os.path.relpath(page)
    return rel if len(rel) <= len(str(page)) else str(page)


class KeepBest:
    """Fit callback: a CPU copy of the best output so far, for Ctrl-C. With a ground truth the
    clean output at the best check (the oracle), else the latest iterate."""

    def __init__(self) -> None:
        self.output: np.ndarray | None = None
        self.iteration: int | None = None
        self._best = -float("inf")

    def on_check(self, state) -> None:
        if state.psnr_clean is not None and state.clean_output is not None:
            if state.psnr_clean > self._best:
                self._best = state.psnr_clean
                self.output, self.iteration = state.clean_output.detach().float().cpu().numpy()[0], state.iteration
        elif np.isfinite(state.loss):
            self.output, self.iteration = state.output.detach().float().cpu().numpy()[0], state.iteration

    def state_dict(self) -> dict:
        """Tensors and plain values, for a resumable fit (``dip_lib.core.resume``)."""
        import torch

        out = None if self.output is None else torch.from_numpy(self.output.copy())
        return {"output": out, "iteration": self.iteration, "best": self._best}

    def load_state_dict(self, state: dict) -> None:
        self.output = None if state["output"] is None else state["output"].numpy()
        self.iteration, self._best = state["iteration"], state["best"]


def partial_path(output: Path, iteration: int) -> Path:
    """Named by iteration: a rerun interrupted earlier never replaces a partial that got further."""
    return output.with_name(f"{output.stem}.partial-{iteration}{output.suffix}")


class Interrupts:
    """SIGINT (Ctrl-C) and SIGTERM during the fit. With a saved state the first one asks the fit to
    save it at the end of the iteration and stop; without one, or the second time, the fit stops at
    once (KeyboardInterrupt). ``code``: the exit status the signal asks for (130 or 143)."""

    def __init__(self, saved) -> None:
        self.saved = saved
        self.signum: int | None = None

    def __enter__(self) -> Interrupts:
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)

    def _handle(self, signum: int, _frame) -> None:
        first = self.signum is None
        self.signum = signum
        if first and self.saved is not None:
            self.saved.interrupt()
            print("stopping: saving the fit's state after this iteration (again to stop at once)", flush=True)
            return
        raise KeyboardInterrupt

    @property
    def code(self) -> int:
        return 128 + (self.signum or signal.SIGINT)


def write_or_fallback(path: Path, write) -> Path | None:
    """``write(path)``; when it fails, ``write`` into the temporary folder, else the home folder, and
    say where in one line on stderr. Returns the fallback path used (None: written where asked)."""
    try:
        write(path)
        return None
    except OSError as exc:
        reason = exc.strerror or str(exc)
    for folder in (Path(tempfile.gettempdir()), Path.home()):
        fallback = folder / f"dip-{os.getpid()}-{path.name}"
        try:
            write(fallback)
        except OSError:
            continue
        print(f"error: could not write {path} ({reason}); wrote it to {fallback} instead", file=sys.stderr)
        return fallback
    print(f"error: could not write {path} ({reason}), nor a copy in {tempfile.gettempdir()} or ~", file=sys.stderr)
    return path


def resume_key(args: argparse.Namespace, cfg, net_cfg, shape: tuple[int, int, int]) -> str:
    """A hash of everything a fit's numbers depend on: the image and mask files' bytes, the mask
    options, the size, the network and the whole fit configuration."""
    import hashlib
    import json

    h = hashlib.sha256(args.image.read_bytes())
    if args.mask is not None:
        h.update(args.mask.read_bytes())
    what = {
        "mask": [args.bernoulli, args.text, args.per_channel, args.invert_mask],
        "shape": list(shape),
        "crop": args.crop,
        "stop": args.stop,
        "net": asdict(net_cfg),
        # not the threads, chosen by the load at start: a rerun on a quieter machine still continues
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("progress", "threads")},
    }
    h.update(json.dumps(what, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def history_payload(args, preset, cfg, net_cfg, result, device, shape) -> dict[str, Any]:
    """What --history records: the command's inputs, the fit's whole configuration (seed, threads,
    numerics), the network, the library versions, then the summary and the curves."""
    from .report.store import environment

    env = environment(device)
    env.update(_versions())
    return {
        "preset": preset.name,
        "image": str(args.image),
        "shape": list(shape),
        "mask": {
            "mask": None if args.mask is None else str(args.mask),
            "bernoulli": args.bernoulli,
            "text": args.text,
            "per_channel": args.per_channel,
        },
        "seed": args.seed,
        "threads": cfg.threads,
        "config": asdict(cfg),
        "net": asdict(net_cfg),
        "environment": env,
        "summary": result.summary(),
        "history": result.history.to_dict(),
    }


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("dip-inpainting", "numpy", "scikit-image", "pillow"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def cmd_inpaint(args: argparse.Namespace) -> int:
    check_args(args)  # before torch is imported
    from .core.device import default_threads, usable_cores

    cores = usable_cores()
    if args.threads is not None and args.threads > cores:
        print(f"--threads {args.threads}: this process may use {cores} cores; using {cores}", flush=True)
        args.threads = cores

    from .core import masks, resume
    from .core.device import resolve_device
    from .core.imageio import (
        atomic_write_bytes,
        center_crop_multiple,
        load_image,
        load_mask,
        resize_longer_side,
        save_image,
    )
    from .core.metrics import masked_psnr, psnr
    from .core.presets import get_preset
    from .core.solver import fast_config, fit
    from .report.store import dumps

    preset = get_preset(args.preset or DEFAULT_PRESET)
    device = resolve_device(args.device)
    img = load_image(args.image)
    user_mask = None
    if args.mask:
        user_mask = load_mask(args.mask, img.shape[1:])  # the image's size: it is resized and cropped with it
        if args.invert_mask:
            user_mask = 1 - user_mask
        check_mask(user_mask, args)
        missing = 1 - float(user_mask.mean())
        if missing > 0.5 and not args.invert_mask:
            print(
                f"warning: mask {args.mask} marks {missing:.0%} of the pixels missing; white = known, black = hole "
                "(--invert-mask if your holes are white)",
                file=sys.stderr,
                flush=True,
            )
    c = img.shape[0]
    threads = None
    if device.type == "cpu":
        threads = args.threads or default_threads()
        if threads < cores and not args.threads:
            print(f"other processes load the CPU: fitting on {threads} of {cores} cores (--threads to choose)")

    def fit_plan(preset):
        """The size before the budget and the recipe with the levers measured fast here (bf16 autocast in
        channels_last on a CPU with native bf16: it passed the parity rule), on a fixed number of threads."""
        depth = 2**preset.net.depth
        h, w = target_shape(img.shape, args.size)
        if args.crop:
            h, w = h - h % depth, w - w % depth
        cfg = preset.fit_config(seed=args.seed, iterations=args.iterations, lr=args.lr, device=str(device))
        return depth, h, w, replace(fast_config(cfg), checkpointing=args.checkpointing, threads=threads)

    depth, h, w, cfg = fit_plan(preset)
    try:
        chosen_shape = preflight(preset, (c, h, w), cfg, args)  # refuses or shrinks before anything is allocated
    except NoSizeFits:
        if args.preset is not None or args.iterations is not None or args.max_minutes is not None:
            raise  # the user's own recipe or budget: refused, naming what would fit
        print(f"{DEFAULT_PRESET} fits no size in the default budget here: the fast preset instead", flush=True)
        preset = get_preset("fast")
        depth, h, w, cfg = fit_plan(preset)
        chosen_shape = preflight(preset, (c, h, w), cfg, args)
    check_free_space(output_bytes(args, (c, *chosen_shape), cfg.iterations, cfg.log_every))
    side = max(chosen_shape) if chosen_shape != (h, w) else args.size
    if side:
        img = resize_longer_side(img, side)
    if user_mask is not None:  # known only where every source pixel was: no hole bleeds into a known pixel
        user_mask = masks.resize_mask(user_mask, img.shape[1:])
    if args.crop:
        img = center_crop_multiple(img, depth)
        user_mask = None if user_mask is None else center_crop_multiple(user_mask, depth)
    net, z, _ = preset.setup(img.shape, seed=args.seed)
    c, h, w = img.shape

    ground_truth = None
    if user_mask is not None:
        mask = user_mask
    elif args.bernoulli is not None:
        mask = masks.bernoulli_mask((h, w), args.bernoulli, seed=args.seed, channels=c if args.per_channel else 1)
        ground_truth = img
    elif args.text.startswith("recipe:"):
        mask = masks.recipe_text_mask((h, w), args.text[len("recipe:") :])
        ground_truth = img
    else:
        mask = masks.user_text_mask((h, w), args.text)
        ground_truth = img
    check_mask(mask, args)
    observed = img * mask

    keep = KeepBest()
    callbacks: list = [keep]
    if args.stop == "es-wmv":
        from .core.stopping import ESWMV

        callbacks.insert(0, ESWMV.for_iterations(cfg.iterations))
    saved = None
    if args.resume_dir is not None:
        key = resume_key(args, cfg, net.cfg, img.shape)
        saved = resume.SavedState(args.resume_dir / f"inpaint-{key}.pt", key=key, every_s=resume.EVERY_S)
        if saved.path.exists():
            print(f"continuing the fit saved in {saved.path}", flush=True)
    interrupts = Interrupts(saved)
    try:
        with interrupts:
            result = fit(net, z, observed, mask, cfg, ground_truth=ground_truth, callbacks=callbacks, resume=saved)
    except KeyboardInterrupt:
        again = f"; the same command continues it from {saved.path}" if saved and saved.path.exists() else ""
        if keep.output is None:
            print(f"error: interrupted before the first check: no output to save{again}", file=sys.stderr)
            return interrupts.code
        target = partial_path(args.output, keep.iteration)
        where = write_or_fallback(target, lambda p: save_image(p, keep.output)) or target
        print(
            f"error: interrupted; wrote the best output so far (iteration {keep.iteration}) to {where}{again}",
            file=sys.stderr,
        )
        return interrupts.code
    except MemoryError:
        raise DipError("out of memory during the fit: try a smaller --size or --checkpointing") from None
    except RuntimeError as exc:
        if "alloc" in str(exc).lower() or "memory" in str(exc).lower():
            first = str(exc).splitlines()[0][:120]
            raise DipError(f"out of memory during the fit ({first}): try a smaller --size") from None
        raise

    es = callbacks[0] if args.stop == "es-wmv" else None
    chosen = es.best_output if es is not None and es.best_output is not None else result.final
    failed = [write_or_fallback(args.output, lambda p: save_image(p, chosen))]
    if args.masked:
        failed.append(write_or_fallback(args.masked, lambda p: save_image(p, observed)))
    if args.history:
        payload = dumps(history_payload(args, preset, cfg, net.cfg, result, device, (c, h, w)))
        failed.append(write_or_fallback(args.history, lambda p: atomic_write_bytes(p, payload)))
    threads_note = f", {cfg.threads} thread{'s' if cfg.threads != 1 else ''}" if cfg.threads else ""
    print(
        f"preset {preset.name}, {w}x{h}x{c}, {result.iterations_run} iterations on {result.device}{threads_note} "
        f"in {result.wall_time:.1f} s"
    )
    if ground_truth is not None:
        print(f"masked input PSNR {psnr(ground_truth, observed):.2f} dB")
        print(
            f"final PSNR {result.final_psnr:.2f} dB, best PSNR {result.best_psnr:.2f} dB at iteration "
            f"{result.best_iteration} (the output for the clean input at each check)"
        )
    else:  # a user's mask: no ground truth, but the output must still agree with what is known
        print(f"known pixels: output vs masked input PSNR {masked_psnr(img, chosen, mask):.2f} dB")
    if chosen is not result.final:
        when = (
            f"stopped the fit at iteration {es.stop_iteration}" if es.stop_iteration is not None else "ran to the end"
        )
        quality = f" (PSNR {psnr(ground_truth, chosen):.2f} dB)" if ground_truth is not None else ""
        print(f"es-wmv {when}; the output written is its pick, iteration {es.best_iteration}{quality}")
    if any(f is not None for f in failed):
        return 1
    if saved is not None:
        saved.remove()
    print(f"wrote {args.output}")
    return 0


def check_mask(mask: np.ndarray, args: argparse.Namespace) -> None:
    """Refuse (one line) a mask that hides no pixel, or every pixel."""
    if args.bernoulli is not None:
        flag = f"--bernoulli {args.bernoulli:g}"
    else:
        flag = f"--text {args.text!r}" if args.text is not None else f"mask {args.mask}"
    if mask.all():
        raise DipError(f"{flag} hides no pixel of this image: nothing to inpaint")
    if not mask.any():
        known = "is all black: no pixel is known (white = known)" if args.mask is not None else "leaves no pixel known"
        raise DipError(f"{flag} {known}")
