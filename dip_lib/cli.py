"""Command line: ``python -m dip_lib {inpaint,presets,...}``: the parser; each command lives in its module.
User errors: one line, exit code 2."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from .core.errors import DipError

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


def cmd_presets(args: argparse.Namespace) -> int:
    from .core.nets import describe_net
    from .core.presets import PRESETS

    print(
        f"{'preset':<16}{'params (1 ch)':>15}{'params (3 ch)':>15}  {'network':<25}{'input':<12}"
        "iterations  lr      description"
    )
    for p in PRESETS.values():
        z = f"{p.input_kind} x{p.net.in_channels}"
        print(
            f"{p.name:<16}{p.param_count(1):>15,}{p.param_count(3):>15,}  {describe_net(p.net):<25}{z:<12}"
            f"{p.iterations:>10}  {p.lr:<7g} {p.description}"
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
        help="compute on the existing Dask cluster at ADDRESS, e.g. SLURM workers started with dask-jobqueue: "
        "tls://host:port with your TLS credentials in the dask config (distributed.comm.tls.*); "
        "an unencrypted tcp:// address only on this machine (127.0.0.1, e.g. an SSH tunnel)",
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
    from .report.registry import EXPERIMENTS, EXTRA_PLANS
    from .report.runs import PROFILE_NAMES

    parser = _Parser(prog="python -m dip_lib", description="Deep Image Prior inpainting")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser(
        "inpaint",
        help="inpaint one image",
        description="Inpaint one image with a Deep Image Prior fit. Without --size, --max-minutes or --no-budget "
        "the largest size whose estimate fits 10 minutes on this machine is chosen.",
    )
    p.add_argument("image", type=Path, help="the image (PNG, JPEG, TIFF, BMP, ...; 8 or 16 bits)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument(
        "--mask",
        type=Path,
        help="mask file of the image's size, white = known, black = hole (the image is the damaged one)",
    )
    g.add_argument("--bernoulli", type=float, metavar="P", help="drop a fraction P of pixels (image = ground truth)")
    g.add_argument("--text", help="text to write over the image, or recipe:seed (image = ground truth)")
    p.add_argument("--invert-mask", action="store_true", help="the mask's white pixels are the holes")
    p.add_argument("--per-channel", action="store_true", help="Bernoulli draw per channel, as the original")
    p.add_argument(
        "--preset",
        help="the recipe (see `presets`; default: text, or fast when text fits no size in the default budget)",
    )
    p.add_argument("--iterations", type=int, metavar="N", help="iterations of the fit (default: the preset's)")
    p.add_argument("--lr", type=float, help="Adam's learning rate (default: the preset's)")
    p.add_argument("--seed", type=int, default=0, help="seeds the network, its input and the mask (default: 0)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto (default: %(default)s)")
    p.add_argument(
        "--threads",
        type=_positive_int,
        metavar="N",
        help="CPU threads of the fit, at most the usable cores (default: the cores this process may use; "
        "recorded in --history)",
    )
    p.add_argument(
        "--size",
        type=_positive_int,
        metavar="N",
        help="resize (the mask too) so the longer side is N px (default: the largest that fits the time budget)",
    )
    p.add_argument("--crop", action="store_true", help="center-crop to a multiple of 2^depth, as the original")
    p.add_argument(
        "--stop", choices=["none", "es-wmv"], default="none", help="no-reference early stopping (default: %(default)s)"
    )
    p.add_argument(
        "--checkpointing", action="store_true", help="recompute activations in backward: less memory, ~30%% slower"
    )
    budget = p.add_mutually_exclusive_group()
    budget.add_argument(
        "--max-minutes",
        type=float,
        metavar="M",
        help="fit the largest size (longer side) that the estimate says takes at most M minutes here "
        "(default without --size: 10)",
    )
    budget.add_argument(
        "--no-budget",
        action="store_true",
        help="no time budget: fit the full (or --size) size however long the estimate says it takes",
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="the inpainted image (format by extension)")
    p.add_argument("--history", type=Path, help="JSON file: configuration, versions and curves (default: none)")
    p.add_argument("--masked", type=Path, help="also write the masked input here (default: none)")
    p.add_argument(
        "--resume-dir",
        type=Path,
        metavar="DIR",
        help="save the fit's state here every 5 min and on Ctrl-C; the same command continues an interrupted fit "
        "(default: none)",
    )
    p.set_defaults(func=_handler("inpaint:cmd_inpaint"))

    sub.add_parser("presets", help="list the named recipes with their parameter counts").set_defaults(func=cmd_presets)

    p = sub.add_parser("data", help="fetch, list or import the Table-1 and original DIP images")
    data = p.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    f = data.add_parser("fetch", help="download into the cache and verify (default: all)")
    f.add_argument("targets", nargs="*", metavar="table1|dip|all|NAME", help="groups or file names")
    f.set_defaults(func=_handler("core.data:cmd_fetch"))
    data.add_parser("list", help="registry files with cached / verified state").set_defaults(
        func=_handler("core.data:cmd_list")
    )
    f = data.add_parser("import", help="copy registry files found in a folder into the cache")
    f.add_argument("folder", type=Path, metavar="DIR")
    f.set_defaults(func=_handler("core.data:cmd_import"))

    p = sub.add_parser("reproduce", help="compute the runs of the report without notebooks (resumable)")
    p.add_argument("--profile", choices=PROFILE_NAMES, required=True)
    p.add_argument(
        "--only",
        action="append",
        choices=EXPERIMENTS + EXTRA_PLANS,
        help="one experiment (repeatable); table1-cpu: the paper profile's 256 px Table-1 images on a CPU",
    )
    p.add_argument("--device", help="run on this device instead of the profile's (other numerics, other run ids)")
    p.add_argument("--budget-seconds", type=float, help="start no new run once this would be exceeded")
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        metavar="S",
        help="these seeds instead of each plan's own (default: the plan's), e.g. a plan's next replicates",
    )
    _results_option(p)
    _worker_options(p)
    p.set_defaults(func=_handler("report.runner:cmd_reproduce"))

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
    p.set_defaults(func=_handler("report.render:cmd_report"))

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
        help="bf16 levers vs fp32: PSNR parity over 3 images x --parity-seeds seeds (dip_lib.speed.parity) instead",
    )
    g.add_argument(
        "--memory-study", action="store_true", help="peak memory with/without checkpointing (default 512 px) instead"
    )
    g.add_argument(
        "--selfcheck", action="store_true", help="CUDA graphs / channels_last / fit_many against the plain loop instead"
    )
    g.add_argument(
        "--threads-under-load",
        action="store_true",
        help="ms/iteration with 1 and the default threads, idle and beside a CPU burner, per OpenMP wait policy "
        "(first preset, first size; default 64 px) instead",
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
    p.set_defaults(func=_handler("speed.bench:cmd_bench"))
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
    except BrokenPipeError:  # the reader went away (``| head``): stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 141
