"""The DIP solver loop (``fit``): fit one network to one masked image.

min_theta  mean(((f_theta(z + s * eps_t) - y) * m)^2),  eps_t ~ N(0, I) fresh each iteration,
with y (1, C, H, W) the observed image, m (1 or C, H, W) the mask (1 = observed), z the fixed input.

Every ``log_every`` iterations (a "check") the loop syncs with the host once: it logs the loss,
the PSNR on observed pixels of the iterate (the output for the noise-perturbed input, as the
original logs it) and, with a ground truth, the PSNR of that iterate and of the *clean* output
f_theta(z) (one extra no-grad forward), over the whole image and over the missing pixels (the
hole); then it runs the destabilisation guard and the callbacks. After the last step the final
clean output is one more check, so the best clean check ("oracle") is >= the final PSNR by
construction, and ``best`` is the clean output a user who stopped there would get. Between checks
nothing leaves the device; on a GPU the check computes its PSNRs on the device.

Speed levers (all off by default; ``fast_config`` picks the measured-best ones per device, see
``python -m dip_lib bench``): bf16 autocast, channels_last, cudnn.benchmark, TF32, the Adam
implementation, torch.compile, CUDA graphs, and activation checkpointing for memory.
The same loop drives ``batched.fit_many`` (K problems in one network pass).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import replace

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .config import Callback, CheckState, FitConfig, FitDiverged, FitResult, History, fast_config
from .device import backend_flags, resolve_device
from .resume import SavedState
from .step import Step, make_adam, prepare_net
from .tracking import Problem

log = logging.getLogger(__name__)

__all__ = [
    "Callback",
    "CheckState",
    "FitConfig",
    "FitDiverged",
    "FitResult",
    "History",
    "fast_config",
    "fit",
    "resolve_device",
    "run_problems",
]


class _StopFit(Exception):
    pass


def run_problems(
    model: nn.Module,
    problems: list[Problem],
    cfg: FitConfig,
    device: torch.device,
    eager_model: nn.Module | None = None,
    desc: str = "DIP fit",
    resume: SavedState | None = None,
) -> list[FitResult]:
    """The loop shared by ``fit`` (one problem) and ``batched.fit_many`` (K stacked problems).

    ``model`` maps the stacked inputs (K, C_in, H, W) to outputs (K, C, H, W); ``eager_model``
    (default ``model``) is the uncompiled one for the final no-grad pass. A problem that a
    callback stops leaves the loop (no more checks or steps) while the others go on.
    ``resume``: save one Adam problem's state there at intervals, and continue from a state saved
    there before (see ``dip_lib.core.resume``).
    """
    t0 = time.perf_counter()
    for p in problems:
        p.t0 = t0
    if resume is not None and (len(problems) != 1 or cfg.optimizer != "adam" or not problems[0].resumable):
        log.warning("this fit cannot save its state (one Adam problem whose callbacks can): it will not resume")
        resume = None
    problems[0].bar = bar = tqdm(total=cfg.iterations, disable=not cfg.progress, desc=desc, leave=False)
    step: Step | None = None
    eager = model if eager_model is None else eager_model
    scored = any(p.gt is not None for p in problems)  # clean outputs at checks need a ground truth
    try:
        if cfg.optimizer == "adam":
            optimizers = [make_adam(p.params, cfg) for p in problems]
            step = Step(model, problems, optimizers, cfg, device)
            active = [True] * len(problems)
            saved = resume.load() if resume is not None else None
            if saved is not None:
                problems[0].load_state(saved, optimizers[0])
                t0 = problems[0].t0
                bar.update(problems[0].it)
            for it in range(problems[0].it if saved is not None else 0, cfg.iterations):
                outs, losses = step(active)
                cleans = step.final(eager) if scored and problems[0].is_check(it) else [None] * len(problems)
                for k, p in enumerate(problems):
                    if not active[k]:
                        continue
                    if p.after_forward(it, outs[k], losses[k], optimizers[k], fresh=not step.graphed, clean=cleans[k]):
                        optimizers[k].step()
                    p.it = it + 1
                    active[k] = p.stop is None
                bar.update(1)
                if not any(active):
                    break
                if resume is not None and resume.due() and it + 1 < cfg.iterations:
                    resume.save(problems[0].state(optimizers[0]))
        else:
            if len(problems) != 1:
                raise ValueError("L-BFGS fits one problem at a time")
            step = Step(model, problems, [], replace(cfg, cuda_graphs=False), device)
            _fit_lbfgs(cfg, problems[0], step, bar, eager if scored else None)
    finally:
        bar.close()
        if step is not None:
            step.close()
    finals = step.final(eager)
    wall = time.perf_counter() - t0
    return [p.result(f, wall) for p, f in zip(problems, finals)]


def fit(
    net: nn.Module,
    net_input: torch.Tensor,
    observed: np.ndarray | torch.Tensor,
    mask: np.ndarray | torch.Tensor,
    config: FitConfig | None = None,
    ground_truth: np.ndarray | None = None,
    callbacks: Iterable[Callback | Callable[[CheckState], bool | None]] = (),
    resume: SavedState | None = None,
) -> FitResult:
    """Fit ``net`` so that ``net(net_input) * mask`` matches ``observed * mask``.

    Shapes: net_input (1, C_in, H, W); observed and ground_truth (C, H, W) or (1, C, H, W);
    mask (1 or C, H, W). The network is trained in place (its BatchNorm layers in train mode, as
    in the original). Seeded: with the same ``config.seed`` on the CPU the history is identical.
    ``resume``: where to save the fit's state at intervals and to resume it from (``dip_lib.core.resume``);
    the caller removes the file once the result is safe.
    """
    cfg = config or FitConfig()
    device = resolve_device(cfg.device)
    with backend_flags(cfg, device):
        net = prepare_net(net, cfg, device)
        try:
            problem = Problem(net, net_input, observed, mask, cfg, device, ground_truth, callbacks)
            model = torch.compile(net) if cfg.compile else net
            return run_problems(model, [problem], cfg, device, eager_model=net, resume=resume)[0]
        finally:
            if cfg.checkpointing:
                net.set_checkpointing(False)


def _fit_lbfgs(cfg: FitConfig, problem: Problem, step: Step, bar, eager: nn.Module | None) -> None:
    """The original's L-BFGS: ``lbfgs_warmup`` Adam steps at lr 0.001, then one L-BFGS step with
    max_iter = the iteration budget and its tolerances disabled. Iterations count function
    evaluations (L-BFGS evaluates several times per step), so its PSNR is logged per evaluation.
    The guard is off for L-BFGS: restoring weights under its line search would corrupt its state.
    After the warm-up the input is z without noise unless ``cfg.lbfgs_input`` is "perturbed" (see there).
    ``eager``: the model for the clean outputs at checks (None: no ground truth, no clean outputs)."""

    def clean(it: int) -> torch.Tensor | None:
        return step.final(eager)[0] if eager is not None and problem.is_check(it) else None

    adam = make_adam(problem.params, cfg, lr=0.001)
    warm = min(cfg.lbfgs_warmup, cfg.iterations)
    step.optimizers = [adam]
    for it in range(warm):
        (out,), (loss,) = step([True])
        problem.after_forward(it, out, loss, None, clean=clean(it))
        adam.step()
        bar.update(1)
        problem.it = it + 1
        if problem.stop is not None:
            return
    remaining = cfg.iterations - warm
    if remaining <= 0:
        return
    problem.perturb = cfg.lbfgs_input == "perturbed"
    lbfgs = torch.optim.LBFGS(
        problem.params, lr=cfg.lr, max_iter=remaining, max_eval=remaining, tolerance_grad=-1, tolerance_change=-1
    )
    step.optimizers = [lbfgs]

    def closure() -> torch.Tensor:
        it = problem.it
        if it >= cfg.iterations or problem.stop is not None:
            raise _StopFit
        (out,), (loss,) = step([True])
        problem.after_forward(it, out, loss, None, clean=clean(it))
        bar.update(1)
        problem.it = it + 1
        return loss

    try:
        lbfgs.step(closure)
    except _StopFit:
        pass
