"""``python -m dip_lib inpaint``: one image, one fit, its outputs; nothing lost, nothing half-written.

Everything that can be refused is refused before the fit (paths, free space, memory, time); the
fit's thread count is fixed (``--threads``, default: the cores this process may use) and recorded
with the configuration, seed and library versions in ``--history``. After the fit, an output that
cannot be written is written to a fallback file, named in one line on stderr; Ctrl-C writes the
best output so far as ``<output>.partial.<ext>`` and exits 130. With ``--resume-dir`` the fit's
whole state is saved there every 5 minutes and the same command continues an interrupted fit
bit-identically (``dip_lib.core.resume``); the state is removed once every output is written.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
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


def default_threads() -> int:
    """OMP_NUM_THREADS when it is set, else the cores this process may run on (its affinity); never
    the cores idle right now, so that the same command gives the same numbers whatever else the
    machine is doing."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


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
    if args.size and args.mask:
        raise DipError("--size cannot be combined with --mask (the mask would no longer match)")
    for flag, path in _outputs(args):
        check_writable(path, flag)
    image_format(args.output)
    if args.masked is not None:
        image_format(args.masked)
    named = [p.resolve() for _, p in _outputs(args)]
    if len(set(named)) < len(named) or args.image.resolve() in named:
        raise DipError("--output, --history, --masked and the input image must be different files")
    if not args.image.is_file():
        raise DipError(f"file not found: {args.image}" if not args.image.exists() else f"not a file: {args.image}")
    if args.resume_dir is not None:
        if args.resume_dir.exists() and not args.resume_dir.is_dir():
            raise DipError(f"--resume-dir {args.resume_dir} is not a folder")
        check_writable(args.resume_dir / "state.pt", "--resume-dir")


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


def preflight(preset, shape: tuple[int, int, int], cfg, args: argparse.Namespace) -> tuple[int, int]:
    """Before a fit of an image of ``shape`` (C, H, W, after --size): with --max-minutes, the
    largest size whose estimate fits the budget (refused, naming what would fit, when none does);
    without it, refuse (DipError) when the memory estimate exceeds what the machine has and print
    the estimate (naming the largest size that fits in 15 minutes when it is longer). Returns the
    (h, w) to fit."""
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
    if args.max_minutes is not None:
        budget = args.max_minutes * 60
        side = est.largest_side_within(net_cfg, h, w, cfg.iterations, rate, budget, cfg)
        if side is None:
            raise DipError(
                f"no size of preset {preset.name!r} fits in {args.max_minutes:g} min at {cfg.iterations} iterations "
                f"on {device}: {_what_fits(preset, net_cfg, c, h, w, cfg, rate, budget)}"
            )
        if side < max(h, w):
            if args.mask:
                raise DipError(
                    f"--max-minutes {args.max_minutes:g} needs --size {side}, which cannot be combined with --mask"
                )
            h, w = est.scaled_shape(h, w, side)
        e = est.estimate(net_cfg, h, w, cfg.iterations, cfg, rate)
        assert e.seconds <= budget, "largest_side_within chose a size beyond the budget"
        print(f"--max-minutes {args.max_minutes:g}: chose --size {max(h, w)} ({w}x{h}), {est.describe(e, device)}")
        return h, w
    e = est.estimate(net_cfg, h, w, cfg.iterations, cfg, rate)
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
        "what it gives up: report/quick/06_cost_quality.html"
    )


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


def partial_path(output: Path) -> Path:
    return output.with_name(f"{output.stem}.partial{output.suffix}")


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
        "mask": [args.bernoulli, args.text, args.per_channel],
        "shape": list(shape),
        "crop": args.crop,
        "stop": args.stop,
        "net": asdict(net_cfg),
        "config": {k: v for k, v in asdict(cfg).items() if k != "progress"},
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
    from .core.metrics import psnr
    from .core.presets import get_preset
    from .core.solver import fast_config, fit
    from .report.store import dumps

    preset = get_preset(args.preset)
    device = resolve_device(args.device)
    img = load_image(args.image)
    depth = 2**preset.net.depth
    c = img.shape[0]
    h, w = target_shape(img.shape, args.size)
    if args.crop:
        h, w = h - h % depth, w - w % depth
    # the recipe with the levers measured fast here (bf16 autocast in channels_last on a CPU with
    # native bf16: it passed the parity rule), on a fixed number of threads
    cfg = preset.fit_config(seed=args.seed, iterations=args.iterations, lr=args.lr, device=str(device))
    threads = (args.threads or default_threads()) if device.type == "cpu" else None
    cfg = replace(fast_config(cfg), checkpointing=args.checkpointing, threads=threads)
    chosen_shape = preflight(preset, (c, h, w), cfg, args)  # refuses or shrinks before anything is allocated
    check_free_space(output_bytes(args, (c, *chosen_shape), cfg.iterations, cfg.log_every))
    side = max(chosen_shape) if chosen_shape != (h, w) else args.size
    if side:
        img = resize_longer_side(img, side)
    if args.crop:
        img = center_crop_multiple(img, depth)
    net, z, _ = preset.setup(img.shape, seed=args.seed)
    c, h, w = img.shape

    ground_truth = None
    if args.mask:
        mask = load_mask(args.mask, (h, w))
        if not mask.any():
            raise DipError(f"mask {args.mask} is all black: no pixel is known (white = known)")
    elif args.bernoulli is not None:
        mask = masks.bernoulli_mask((h, w), args.bernoulli, seed=args.seed, channels=c if args.per_channel else 1)
        ground_truth = img
    elif args.text.startswith("recipe:"):
        mask = masks.recipe_text_mask((h, w), args.text[len("recipe:") :])
        ground_truth = img
    else:
        mask = masks.user_text_mask((h, w), args.text)
        ground_truth = img
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
    try:
        result = fit(net, z, observed, mask, cfg, ground_truth=ground_truth, callbacks=callbacks, resume=saved)
    except KeyboardInterrupt:
        again = f"; the same command continues it from {saved.path}" if saved and saved.path.exists() else ""
        if keep.output is None:
            print(f"error: interrupted before the first check: no output to save{again}", file=sys.stderr)
            return 130
        target = partial_path(args.output)
        where = write_or_fallback(target, lambda p: save_image(p, keep.output)) or target
        print(
            f"error: interrupted; wrote the best output so far (iteration {keep.iteration}) to {where}{again}",
            file=sys.stderr,
        )
        return 130
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
    threads_note = f", {cfg.threads} threads" if cfg.threads else ""
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
        if chosen is not result.final:
            when = f"stopped at {es.stop_iteration}" if es.stop_iteration is not None else "never triggered"
            print(
                f"es-wmv {when}; its output (iteration {es.best_iteration}) has PSNR "
                f"{psnr(ground_truth, chosen):.2f} dB"
            )
    if any(f is not None for f in failed):
        return 1
    if saved is not None:
        saved.remove()
    print(f"wrote {args.output}")
    return 0
