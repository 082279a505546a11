"""Command line: ``python -m dip_lib {inpaint,presets,...}``. User errors: one line, exit code 2."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import DipError

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("dip_lib")


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {v}")
    return v


def _results_dir(text: str) -> Path:
    """--results-dir: a relative folder is taken from the current folder, like any path on a command line."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty folder name (the default is results/ in the project root)")
    return Path(text).absolute()


def preflight(preset, img: np.ndarray, cfg, args: argparse.Namespace) -> np.ndarray:
    """Before a fit: with --max-minutes, shrink the image to the largest size that fits in time;
    refuse (DipError) when the memory estimate exceeds what the machine has; print the estimate of
    time and memory (and a smaller --size when the fit is long). Returns the image to fit."""
    from dataclasses import replace

    from . import estimate as est
    from .device import resolve_device
    from .imageio import resize_longer_side
    from .inputs import make_input

    est.require_positive_minutes(args.max_minutes)
    c, h, w = img.shape
    net_cfg = replace(preset.net, out_channels=c)
    device = resolve_device(cfg.device).type
    if args.max_minutes is None:
        est.check_memory(net_cfg, h, w, cfg)  # at once: nothing allocated yet
    rate = est.calibrate_time(
        net_cfg, h, w, cfg, lambda hh, ww: make_input(preset.input_kind, net_cfg.in_channels, hh, ww, 0)
    )
    if args.max_minutes is not None:
        side = est.largest_side_within(net_cfg, h, w, cfg.iterations, rate, args.max_minutes * 60, cfg)
        avail = est.available_memory_bytes()
        if avail is not None:
            fits = est.largest_side_that_fits(net_cfg, h, w, est.memory_mode(cfg), avail + est.BASE_BYTES)
            side = fits if side is None else side if fits is None else min(side, fits)
        if side is None:
            raise DipError(
                f"no size of preset {preset.name!r} fits in {args.max_minutes:g} min at {cfg.iterations} iterations "
                f"on {device}; lower --iterations" + ("" if preset.name == "fast" else " or try --preset fast")
            )
        if side < max(h, w):
            if args.mask:
                raise DipError(
                    f"--max-minutes {args.max_minutes:g} needs --size {side}, which cannot be combined with --mask"
                )
            img = resize_longer_side(img, side)
            c, h, w = img.shape
        e = est.estimate(net_cfg, h, w, cfg.iterations, cfg, rate)
        print(f"--max-minutes {args.max_minutes:g}: chose --size {max(h, w)} ({w}x{h}), {est.describe(e, device)}")
        return img
    e = est.estimate(net_cfg, h, w, cfg.iterations, cfg, rate)
    suggestion = None
    if e.seconds > est.LONG_FIT_S:
        side = est.largest_side_within(net_cfg, h, w, cfg.iterations, rate, est.LONG_FIT_S, cfg)
        if side is not None and side < max(h, w):
            sh, sw = est.scaled_shape(h, w, side)
            suggestion = (side, est.estimate(net_cfg, sh, sw, cfg.iterations, cfg, rate).seconds)
    print(f"estimate: {est.describe(e, device, suggestion)}", flush=True)
    if e.seconds > est.LONG_FIT_S and preset.name != "fast":
        print(_fast_hint(c, h, w, cfg), flush=True)
    return img


def _fast_hint(c: int, h: int, w: int, cfg) -> str:
    """One line offering the ``fast`` preset, with its own calibrated estimate at this size (its recipe
    with the levers ``inpaint`` would use, as for any preset)."""
    from dataclasses import replace

    from . import estimate as est
    from .inputs import make_input
    from .presets import get_preset
    from .solver import fast_config

    fast = get_preset("fast")
    net_cfg = fast.net_config(c)
    fcfg = replace(fast_config(fast.fit_config(device=cfg.device)), checkpointing=cfg.checkpointing)
    rate = est.calibrate_time(
        net_cfg, h, w, fcfg, lambda hh, ww: make_input(fast.input_kind, net_cfg.in_channels, hh, ww, 0)
    )
    e = est.estimate(net_cfg, h, w, fcfg.iterations, fcfg, rate)
    return (
        f"hint: --preset fast ({fast.description}) would take about {est.fmt_seconds(e.seconds)} here; "
        "what it gives up: report/quick/06_cost_quality.html"
    )


def cmd_inpaint(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .imageio import (
        atomic_write_bytes,
        center_crop_multiple,
        check_writable,
        image_format,
        load_image,
        load_mask,
        resize_longer_side,
        save_image,
    )

    # everything that can be refused is refused here, before torch is imported or a fit starts
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
    outputs = [("--output", args.output), ("--history", args.history), ("--masked", args.masked)]
    for flag, path in outputs:
        if path is not None:
            check_writable(path, flag)
    image_format(args.output)
    if args.masked is not None:
        image_format(args.masked)
    named = [p.resolve() for _, p in outputs if p is not None]
    if len(set(named)) < len(named) or args.image.resolve() in named:
        raise DipError("--output, --history, --masked and the input image must be different files")
    if not args.image.is_file():
        raise DipError(f"file not found: {args.image}" if not args.image.exists() else f"not a file: {args.image}")

    from . import masks
    from .device import resolve_device
    from .metrics import psnr
    from .presets import get_preset
    from .solver import fast_config, fit
    from .store import dumps

    preset = get_preset(args.preset)
    device = resolve_device(args.device)

    img = load_image(args.image)
    if args.size:
        if args.mask:
            raise DipError("--size cannot be combined with --mask (the mask would no longer match)")
        img = resize_longer_side(img, args.size)
    if args.crop:
        img = center_crop_multiple(img, 2**preset.net.depth)
    # the network, its input and the recipe with the levers measured fast here (bf16 autocast in
    # channels_last on a CPU with native bf16: it passed the parity rule); then the estimate, which
    # may refuse or resize
    net, z, cfg = preset.setup(img.shape, seed=args.seed, iterations=args.iterations, lr=args.lr, device=str(device))
    cfg = replace(fast_config(cfg), checkpointing=args.checkpointing)
    fitted = preflight(preset, img, cfg, args)
    if fitted is not img:
        img = fitted
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

    callbacks = []
    if args.stop == "es-wmv":
        from .stopping import ESWMV

        callbacks.append(ESWMV.for_iterations(cfg.iterations))
    result = fit(net, z, observed, mask, cfg, ground_truth=ground_truth, callbacks=callbacks)
    chosen = result.final
    if callbacks and getattr(callbacks[0], "best_output", None) is not None:
        chosen = callbacks[0].best_output

    save_image(args.output, chosen)
    if args.masked:
        save_image(args.masked, observed)
    if args.history:
        payload = {
            "preset": preset.name,
            "image": str(args.image),
            "summary": result.summary(),
            "history": result.history.to_dict(),
        }
        atomic_write_bytes(args.history, dumps(payload))
    print(
        f"preset {preset.name}, {w}x{h}x{c}, {result.iterations_run} iterations on {result.device} "
        f"in {result.wall_time:.1f} s"
    )
    if ground_truth is not None:
        print(f"masked input PSNR {psnr(ground_truth, observed):.2f} dB")
        print(
            f"final PSNR {result.final_psnr:.2f} dB, best PSNR {result.best_psnr:.2f} dB at iteration "
            f"{result.best_iteration} (the output for the clean input at each check)"
        )
        if chosen is not result.final:
            es = callbacks[0]
            when = f"stopped at {es.stop_iteration}" if es.stop_iteration is not None else "never triggered"
            print(
                f"es-wmv {when}; its output (iteration {es.best_iteration}) has PSNR "
                f"{psnr(ground_truth, chosen):.2f} dB"
            )
    print(f"wrote {args.output}")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from .presets import PRESETS

    print(f"{'preset':<16}{'params (1 ch)':>15}{'params (3 ch)':>15}  iterations  lr      description")
    for p in PRESETS.values():
        print(
            f"{p.name:<16}{p.param_count(1):>15,}{p.param_count(3):>15,}  {p.iterations:>10}  {p.lr:<7g} "
            f"{p.description}"
        )
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line (``error: ...``, exit 2), like every other user error."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


# the modes and presets ``bench`` implements (tests check that bench.py agrees); named here so that
# building the parser imports no torch and a bad option is refused at once
BENCH_MODES = ("original", "reference", "fast", "batched")
BENCH_PRESETS = ("table1-paper", "text")
NOISE_RNGS = ("torch", "numpy")  # FitConfig.noise_rng's values


def _handler(target: str) -> Callable[[argparse.Namespace], int]:
    """'module:function' of dip_lib, imported only when the command runs."""

    def run(args: argparse.Namespace) -> int:
        module, name = target.split(":")
        return getattr(importlib.import_module(f"dip_lib.{module}"), name)(args)

    return run


def _worker_options(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="compute on N local Dask workers (1: here, one run after "
        "another, no Dask; default: one per idle CPU core, one per GPU on CUDA)",
    )
    g.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="compute on the existing Dask cluster at ADDRESS "
        "(tcp://host:port), e.g. SLURM workers started with dask-jobqueue",
    )


def _results_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--results-dir",
        type=_results_dir,
        default=Path("results"),  # a Path: argparse leaves it as it is, and the store takes it from the project root
        metavar="DIR",
        help="the results store (default: results/ in the project root)",
    )


def build_parser() -> argparse.ArgumentParser:
    from .runs import EXPERIMENTS, PROFILE_NAMES

    parser = _Parser(prog="python -m dip_lib", description="Deep Image Prior inpainting")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("inpaint", help="inpaint one image")
    p.add_argument("image", type=Path)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--mask", type=Path, help="mask file, white = known (the image is the corrupted one)")
    g.add_argument("--bernoulli", type=float, metavar="P", help="drop a fraction P of pixels (image = ground truth)")
    g.add_argument("--text", help="text to write over the image, or recipe:seed (image = ground truth)")
    p.add_argument("--per-channel", action="store_true", help="Bernoulli draw per channel, as the original")
    p.add_argument("--preset", default="text")
    p.add_argument("--iterations", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--size", type=_positive_int, help="resize so the longer side is N px")
    p.add_argument("--crop", action="store_true", help="center-crop to a multiple of 2^depth, as the original")
    p.add_argument("--stop", choices=["none", "es-wmv"], default="none", help="no-reference early stopping")
    p.add_argument(
        "--checkpointing", action="store_true", help="recompute activations in backward: less memory, ~30%% slower"
    )
    p.add_argument(
        "--max-minutes",
        type=float,
        metavar="M",
        help="fit the largest size (longer side) that the estimate says takes at most M minutes here",
    )
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--history", type=Path)
    p.add_argument("--masked", type=Path)
    p.set_defaults(func=cmd_inpaint)

    sub.add_parser("presets", help="list the named recipes with their parameter counts").set_defaults(func=cmd_presets)

    p = sub.add_parser("data", help="fetch, list or import the Table-1 and original DIP images")
    data = p.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    f = data.add_parser("fetch", help="download into the cache and verify (default: all)")
    f.add_argument("targets", nargs="*", metavar="table1|dip|all|NAME", help="groups or file names")
    f.set_defaults(func=_handler("data:cmd_fetch"))
    data.add_parser("list", help="registry files with cached / verified state").set_defaults(
        func=_handler("data:cmd_list")
    )
    f = data.add_parser("import", help="copy registry files found in a folder into the cache")
    f.add_argument("folder", type=Path, metavar="DIR")
    f.set_defaults(func=_handler("data:cmd_import"))

    p = sub.add_parser("reproduce", help="compute the runs of the report without notebooks (resumable)")
    p.add_argument("--profile", choices=PROFILE_NAMES, required=True)
    p.add_argument("--only", action="append", choices=EXPERIMENTS, help="one experiment (repeatable)")
    p.add_argument("--device", help="run on this device instead of the profile's (other numerics, other run ids)")
    p.add_argument("--budget-seconds", type=float, help="start no new run once this would be exceeded")
    _results_option(p)
    _worker_options(p)
    p.set_defaults(func=_handler("experiments:cmd_reproduce"))

    p = sub.add_parser("report", help="run the notebooks from stored results and render the HTML report")
    p.add_argument("--profile", choices=PROFILE_NAMES, required=True)
    p.add_argument(
        "--execute",
        action="store_true",
        help="compute missing runs first (make reproduce); without it the pages show what is stored",
    )
    _results_option(p)
    p.add_argument("--device", help="the device whose runs to compute and show (default: the profile's)")
    _worker_options(p)
    p.set_defaults(func=_handler("report:cmd_report"))

    p = sub.add_parser(
        "bench",
        help="time the DIP loop per preset, size and mode (JSON)",
        description="Speed of the DIP loop: median ms per iteration per mode, at equal thread counts.",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--presets", nargs="+", default=list(BENCH_PRESETS))
    p.add_argument("--sizes", nargs="+", type=_positive_int, help="image sides (default: CPU 64 128, GPU 256 512)")
    p.add_argument("--modes", nargs="+", choices=BENCH_MODES, default=list(BENCH_MODES))
    p.add_argument("--iterations", type=_positive_int, help="timed iterations per chunk (default: CPU 5, GPU 40)")
    p.add_argument("--rounds", type=_positive_int, help="interleaved rounds (default 2)")
    p.add_argument(
        "--batch", type=_positive_int, help="K problems per batched pass (default: CPU 2, GPU 8 up to 256 px, else 4)"
    )
    p.add_argument("--checkpointing", action="store_true", help="fast and batched modes with activation checkpointing")
    p.add_argument(
        "--no-memory", action="store_true", help="skip the CPU peak-memory probes (one fresh process per row)"
    )
    p.add_argument(
        "--threads",
        type=_positive_int,
        nargs="+",
        metavar="T",
        help="CPU threads for every row (default 1: equal for all modes); several = a scaling ladder",
    )
    p.add_argument(
        "--chunk-budget",
        type=float,
        metavar="S",
        help="end a timing chunk after S seconds (default: CPU 5, GPU none); 0 = never",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--levers", action="store_true", help="measure each speed lever (cumulative ladder) instead")
    g.add_argument(
        "--parity",
        action="store_true",
        help="bf16 levers vs fp32: PSNR parity rule over 3 images x --parity-seeds seeds (dip_lib.parity) instead",
    )
    g.add_argument(
        "--memory-study", action="store_true", help="peak memory with/without checkpointing (default 512 px) instead"
    )
    g.add_argument(
        "--selfcheck", action="store_true", help="CUDA graphs / channels_last / fit_many against the plain loop instead"
    )
    p.add_argument("--parity-iterations", type=_positive_int, help="iterations per parity fit (default 300)")
    p.add_argument("--parity-seeds", type=_positive_int, default=3, help="parity: seeds 0..N-1 per image (default 3)")
    p.add_argument(
        "--parity-noise",
        choices=NOISE_RNGS,
        default="torch",
        help="parity: the input-noise generator of every arm, baseline included (FitConfig.noise_rng)",
    )
    p.add_argument(
        "--workers", type=_positive_int, default=1, help="parity: fits run side by side in this many processes"
    )
    p.add_argument("--compile", action="store_true", help="add torch.compile to the lever study (slow to compile)")
    p.add_argument("--out", type=Path, help="JSON file to write")
    p.set_defaults(func=_handler("bench:cmd_bench"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except DipError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
