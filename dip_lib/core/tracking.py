"""One problem of a fit and its bookkeeping: its tensors and noise stream (``Problem``), and what
happens to each iterate (``Problem.after_forward``): tracking (EMA, snapshots, per-iteration
callbacks), and at checks measuring, guarding, recording and notifying, as separate steps.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from .config import CheckState, FitConfig, FitDiverged, FitResult, History
from .masks import Inpainting
from .metrics import hole_psnr, masked_psnr, psnr, ssim

log = logging.getLogger(__name__)


def _as_batch(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x, dtype=np.float32)) if not isinstance(x, torch.Tensor) else x.float()
    return t if t.dim() == 4 else t[None]


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()[0]


def _copy_all(dst: list[torch.Tensor], src: list[torch.Tensor]) -> None:
    """dst[i] <- src[i] in place (one fused launch per device where torch has it)."""
    if not dst:
        return
    if hasattr(torch, "_foreach_copy_") and all(d.device == s.device for d, s in zip(dst, src)):
        torch._foreach_copy_(dst, src)
    else:
        for d, s in zip(dst, src):
            d.copy_(s)


class _GoodCopy:
    """The guard's last good parameters and optimiser state, kept in preallocated buffers.

    Saving copies in place (no reallocation, no deepcopy); restoring is what
    ``optimizer.load_state_dict(deepcopy(saved))`` did: parameters and per-parameter state take
    the saved values, and a parameter that had no state yet gets none.
    """

    def __init__(self, params: list[torch.Tensor]) -> None:
        self.params = params
        self.saved_params: list[torch.Tensor] | None = None
        self.saved_state: list[dict[str, Any]] = []

    @torch.no_grad()
    def save(self, optimizer: torch.optim.Optimizer) -> None:
        if self.saved_params is None:
            self.saved_params = [p.detach().clone() for p in self.params]
        else:
            _copy_all(self.saved_params, [p.detach() for p in self.params])
        states = [optimizer.state.get(p, {}) for p in self.params]
        same = len(self.saved_state) == len(states) and all(
            s.keys() == t.keys() and all(not isinstance(v, torch.Tensor) or v.shape == t[k].shape for k, v in s.items())
            for s, t in zip(states, self.saved_state)
        )
        if not same:
            self.saved_state = [
                {k: v.detach().clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v) for k, v in s.items()}
                for s in states
            ]
            return
        dst, src = [], []
        for s, t in zip(states, self.saved_state):
            for k, v in s.items():
                if isinstance(v, torch.Tensor):
                    dst.append(t[k])
                    src.append(v.detach())
                else:
                    t[k] = copy.deepcopy(v)
        _copy_all(dst, src)

    @torch.no_grad()
    def restore(self, optimizer: torch.optim.Optimizer) -> None:
        _copy_all(self.params, self.saved_params)
        dst, src = [], []
        for p, t in zip(self.params, self.saved_state):
            cur = optimizer.state.get(p)
            if not t:
                optimizer.state.pop(p, None)
            elif (
                cur is not None
                and cur.keys() == t.keys()
                and all(
                    not isinstance(v, torch.Tensor) or (isinstance(cur[k], torch.Tensor) and cur[k].shape == v.shape)
                    for k, v in t.items()
                )
            ):
                for k, v in t.items():
                    if isinstance(v, torch.Tensor):
                        dst.append(cur[k])
                        src.append(v)
                    else:
                        cur[k] = copy.deepcopy(v)
            else:
                optimizer.state[p] = {
                    k: v.clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v) for k, v in t.items()
                }
        _copy_all(dst, src)


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _diverged(m: dict[str, Any]) -> bool:
    """A check's numbers say the fit went non-finite: the loss, a NaN PSNR (an infinite one is a
    perfect match) or the EMA (non-finite once any iterate since the last check was)."""
    psnrs = [m[k] for k in ("obs", "gt", "clean", "hole") if m[k] is not None]
    return not math.isfinite(m["loss"]) or any(math.isnan(p) for p in psnrs) or not m["ema_ok"]


def _saves_state(cb: Any) -> bool:
    """Whether a callback can save its state and put it back (``state_dict``/``load_state_dict``)."""
    return hasattr(cb, "state_dict") and hasattr(cb, "load_state_dict")


def _copy_state(state: Any) -> Any:
    """A copy of a callback's ``state_dict`` that its later in-place updates cannot reach: tensors
    cloned, dicts copied through, lists copied shallowly (their items taken as plain values: ES-WMV's
    VAR curve, copied in C at each check), anything else shared."""
    if isinstance(state, torch.Tensor):
        return state.clone()
    if isinstance(state, dict):
        return {k: _copy_state(v) for k, v in state.items()}
    if isinstance(state, list):
        return list(state)
    return state


class Problem:
    """One inpainting problem: its tensors on the device (input z (1, C_in, H, W), observed y and the
    physics A(x) = m * x), its noise stream, and its bookkeeping (EMA, snapshots, checks with
    history, guard, best output, callbacks)."""

    def __init__(
        self,
        net: nn.Module,
        net_input,
        observed,
        mask,
        cfg: FitConfig,
        device: torch.device,
        ground_truth: np.ndarray | None,
        callbacks: Iterable,
    ) -> None:
        self.cfg, self.device, self.net = cfg, device, net
        fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.z = _as_batch(net_input).to(device).contiguous(memory_format=fmt)
        m = _as_batch(mask).to(device)
        self.y = _as_batch(observed).to(device) * m
        self.m = m
        self.physics = Inpainting(m)
        self.y_np, self.m_np = _to_numpy(self.y), _to_numpy(self.m)
        self.gt = None if ground_truth is None else np.asarray(ground_truth, np.float32).reshape(self.y_np.shape)
        self.hole_np = np.broadcast_to(self.m_np < 0.5, self.y_np.shape)
        self.params = [p for p in net.parameters() if p.requires_grad]
        self.conv_weights = [p for p in self.params if p.dim() == 4]
        self.gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
        self.perturb = True  # False: ``noisy_input`` is z itself (L-BFGS on the clean input)
        # the numpy noise lever: a stream of its own (keyed apart from numpy streams seeded by the seed
        # alone, e.g. masks) drawn into one reused NCHW buffer that ``eps`` views without a copy
        self.np_rng: np.random.Generator | None = None
        if cfg.noise_rng == "numpy" and device.type == "cpu" and cfg.reg_noise_std > 0:
            self.np_rng = np.random.default_rng((cfg.seed, 1))
            self.eps_np = np.empty(tuple(self.z.shape), np.float32)
            self.eps = torch.from_numpy(self.eps_np)
        callbacks = list(callbacks)
        self.callbacks = callbacks
        # objects may define on_check and/or on_iteration; a plain function is an on_check
        self.hooks = [
            cb.on_check if hasattr(cb, "on_check") else cb
            for cb in callbacks
            if hasattr(cb, "on_check") or not hasattr(cb, "on_iteration")
        ]
        self.iter_hooks = [cb for cb in callbacks if hasattr(cb, "on_iteration")]
        self.hist = History()
        self.ema: torch.Tensor | None = None
        self.best: np.ndarray | torch.Tensor | None = None
        self.best_it: int | None = None
        self.best_psnr: float | None = None
        self.best_hole: float | None = None
        self.snap: dict[int, np.ndarray] = {}
        self.restores = 0
        self.good = _GoodCopy(self.params)
        self.good_obs: float | None = None
        # the EMA and the per-iteration callbacks' states at the last good check (``_save_good``)
        self.good_ema: torch.Tensor | None = None
        self.good_hooks: list[dict[str, Any]] | None = None
        self.stop: int | None = None
        self.it = 0
        self.t0 = time.perf_counter()
        self.bar: Any = None
        # on an accelerator the checks' PSNRs are computed there (float64 where it exists)
        self.on_host = device.type == "cpu"
        if not self.on_host:
            dt = torch.float32 if device.type == "mps" else torch.float64
            self._y = self.y.to(dt)
            self._w = (self.m > 0.5).to(dt).expand_as(self.y)
            self._n_obs = float(self._w.sum())
            self._gt = None if self.gt is None else torch.as_tensor(self.gt[None]).to(device, dt)
            self._hole = torch.as_tensor(np.ascontiguousarray(self.hole_np)[None]).to(device, dt)
            self._n_hole = float(self._hole.sum())

    def state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """Everything the rest of the fit depends on, as tensors and plain values (``resume``).
        Callbacks must have ``state_dict``; timings are kept only to continue the clock."""
        best = self.best
        snap = {int(k): torch.from_numpy(v.copy()) for k, v in self.snap.items()}
        good = self.good
        return {
            "problem": {
                "it": self.it,
                "net": self.net.state_dict(),
                "optimizer": optimizer.state_dict(),
                "gen": self.gen.get_state(),
                "np_rng": None if self.np_rng is None else self.np_rng.bit_generator.state,
                "history": self.hist.to_dict(),
                "ema": self.ema,
                "best": torch.from_numpy(best.copy()) if isinstance(best, np.ndarray) else best,
                "best_it": self.best_it,
                "best_psnr": self.best_psnr,
                "best_hole": self.best_hole,
                "snapshots": snap,
                "restores": self.restores,
                "good_params": good.saved_params,
                "good_state": good.saved_state,
                "good_obs": self.good_obs,
                "good_ema": self.good_ema,
                "good_hooks": self.good_hooks,
                "elapsed": time.perf_counter() - self.t0,
            },
            "callbacks": [cb.state_dict() for cb in self.callbacks],
        }

    @property
    def resumable(self) -> bool:
        """Whether ``state`` can capture this problem: every callback can save its own state."""
        return all(_saves_state(cb) for cb in self.callbacks)

    def load_state(self, state: dict[str, Any], optimizer: torch.optim.Optimizer) -> None:
        """Put back what ``state`` saved (the inverse of ``state``)."""
        s, device = state["problem"], self.device
        self.net.load_state_dict(s["net"])
        optimizer.load_state_dict(s["optimizer"])
        self.gen.set_state(s["gen"])
        if self.np_rng is not None:
            self.np_rng.bit_generator.state = s["np_rng"]
        self.hist = History(**s["history"])
        self.ema = None if s["ema"] is None else s["ema"].to(device)
        best = s["best"]
        self.best = None if best is None else best.numpy() if self.on_host else best.to(device)
        self.best_it, self.best_psnr, self.best_hole = s["best_it"], s["best_psnr"], s["best_hole"]
        self.snap = {int(k): v.numpy() for k, v in s["snapshots"].items()}
        self.restores = s["restores"]
        if s["good_params"] is not None:
            self.good.saved_params = [t.to(device) for t in s["good_params"]]
        self.good.saved_state = [
            {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in d.items()} for d in s["good_state"]
        ]
        self.good_obs = s["good_obs"]
        self.good_ema = None if s["good_ema"] is None else s["good_ema"].to(device)
        self.good_hooks = s["good_hooks"]
        self.it = s["it"]
        self.t0 = time.perf_counter() - s["elapsed"]
        for cb, cb_state in zip(self.callbacks, state["callbacks"]):
            cb.load_state_dict(cb_state)

    def noisy_input(self) -> torch.Tensor:
        """z + s * eps, eps ~ N(0, I) of z's shape (1, C_in, H, W) fresh from this problem's generator
        (torch's, or numpy's with noise_rng="numpy" on the CPU); param noise first, if on."""
        cfg, gen, device = self.cfg, self.gen, self.device
        if not self.perturb:
            return self.z
        if cfg.param_noise:
            with torch.no_grad():
                for p in self.conv_weights:
                    p.add_(torch.randn(p.shape, generator=gen, device=device) * (p.std() / 50))
        if cfg.reg_noise_std <= 0:
            return self.z
        if self.np_rng is not None:
            self.np_rng.standard_normal(out=self.eps_np, dtype=np.float32)
            # the sum takes z's memory format (channels_last included): one pass, no copy of eps
            return torch.add(self.z, self.eps, alpha=cfg.reg_noise_std)
        return self.z + cfg.reg_noise_std * torch.randn(self.z.shape, generator=gen, device=device)

    def loss(self, out: torch.Tensor) -> torch.Tensor:
        """mean((A(f(z)) - y)^2) over all entries, as the original (mse of the masked output)."""
        return (self.physics(out) - self.y).pow(2).mean()

    def _gt_psnrs(self, est_np: np.ndarray) -> tuple[float | None, float | None]:
        """(whole-image PSNR, hole PSNR) of a host output against the ground truth."""
        if self.gt is None:
            return None, None
        return psnr(self.gt, est_np), hole_psnr(self.gt, est_np, self.m_np)

    def _metrics(self, o: torch.Tensor, loss: torch.Tensor, clean: torch.Tensor | None) -> dict[str, Any]:
        """Loss, PSNR of the iterate on observed pixels and against the ground truth, and the clean
        output's PSNRs (whole image and hole); host copies of the outputs on the CPU."""
        if self.on_host:
            out_np = _to_numpy(o)
            clean_np = None if clean is None else _to_numpy(clean)
            p_gt = psnr(self.gt, out_np) if self.gt is not None else None
            p_clean, p_hole = self._gt_psnrs(clean_np) if clean_np is not None else (None, None)
            return {
                "loss": float(loss.detach()),
                "obs": masked_psnr(self.y_np, out_np, self.m_np),
                "gt": p_gt,
                "clean": p_clean,
                "hole": p_hole,
                "out_np": out_np,
                "clean_np": clean_np,
            }
        est = o.to(self._y.dtype).clamp(0, 1)
        mse_obs = ((self._y - est) ** 2 * self._w).sum() / self._n_obs if self._n_obs else est.new_zeros(())
        vals = [loss.detach().to(est.dtype).reshape(()), 10 * torch.log10(1 / mse_obs)]
        if self._gt is not None:
            vals.append(10 * torch.log10(1 / ((self._gt - est) ** 2).mean()))
            if clean is not None:
                c = clean.to(self._y.dtype).clamp(0, 1)
                err = (self._gt - c) ** 2
                vals.append(10 * torch.log10(1 / err.mean()))
                vals.append(
                    10 * torch.log10(self._n_hole / (err * self._hole).sum()) if self._n_hole else err.new_zeros(())
                )
        got = torch.stack(vals).tolist()
        got += [None] * (5 - len(got))
        hole = got[4] if self._n_hole else None
        return {
            "loss": got[0],
            "obs": got[1],
            "gt": got[2],
            "clean": got[3],
            "hole": hole,
            "out_np": None,
            "clean_np": None,
        }

    def is_check(self, it: int) -> bool:
        return it % self.cfg.log_every == 0 or it == self.cfg.iterations - 1

    def after_forward(
        self,
        it: int,
        out: torch.Tensor,
        loss: torch.Tensor,
        optimizer: torch.optim.Optimizer | None,
        fresh: bool = True,
        clean: torch.Tensor | None = None,
    ) -> bool:
        """Bookkeeping for one evaluated iterate; False when the guard restored the weights (then the
        optimiser must not step). ``fresh`` False: ``out`` is a buffer reused next iteration, so
        callbacks get a copy. ``clean``: f_theta(z) for the same weights, given at checks."""
        self.track(it, out, fresh)
        if not self.is_check(it):
            return True
        m = self.measure(out, loss, clean)
        restored = self.guard(it, m, optimizer)
        self.record(it, m, restored, clean)
        self.notify(it, m, restored, out, clean, fresh)
        return not restored

    def track(self, it: int, out: torch.Tensor, fresh: bool) -> None:
        """Every iteration: the EMA of the iterates, snapshots, per-iteration callbacks.

        Nothing here reads the device, so a non-finite iterate is fed on like any other and caught
        at the next check: once fed, it leaves the EMA non-finite for good, so one read of the EMA's
        finiteness there covers every iterate since the last check (``measure``). What such
        iterates fed is then undone, not filtered: when the guard restores the weights it also puts
        the EMA and the per-iteration callbacks (ES-WMV) back to their state at the last good check
        and drops the snapshots taken since (``_roll_back``). That also keeps out the finite
        iterates of a blow-up the guard undid, which ES-WMV would otherwise count in its windows
        and could choose; skipping non-finite outputs on the device instead (``torch.where``) would
        let those through, and would need every per-iteration callback to skip them too. The cost:
        one copy of the EMA and of those callbacks' states (ES-WMV: its window) per good check."""
        cfg, o = self.cfg, out.detach()
        self.ema = o.clone() if self.ema is None else self.ema.mul_(cfg.ema_decay).add_(o, alpha=1 - cfg.ema_decay)
        if it in cfg.snapshots:
            snap = _to_numpy(o)  # the snapshot is read anyway: keeping out a non-finite one costs no sync
            if np.isfinite(snap).all():
                self.snap[it] = snap
        for cb in self.iter_hooks:
            if cb.on_iteration(it, o if fresh else o.clone()):
                self.stop = it

    def measure(self, out: torch.Tensor, loss: torch.Tensor, clean: torch.Tensor | None) -> dict[str, Any]:
        """The check's numbers, and whether the EMA is still finite (``ema_ok``: see ``track``)."""
        m = self._metrics(out.detach(), loss, clean)
        m["ema_ok"] = self.ema is None or bool(torch.isfinite(self.ema).all())
        return m

    def guard(self, it: int, m: dict[str, Any], optimizer: torch.optim.Optimizer | None) -> bool:
        """The destabilisation guard: restore the last good weights (and roll back what the iterates
        since fed: ``_roll_back``) when PSNR on the observed pixels fell more than guard_drop_db since
        the last check or anything went non-finite (``_diverged``); True when it restored. A
        non-finite fit with nothing to restore is a FitDiverged."""
        cfg, p_obs = self.cfg, m["obs"]
        bad = _diverged(m)
        dropped = bad or (self.good_obs is not None and p_obs < self.good_obs - cfg.guard_drop_db)
        if cfg.guard and optimizer is not None and self.good_obs is not None and dropped:
            self.good.restore(optimizer)
            self._roll_back()
            self.restores += 1
            log.info(
                "iteration %d: PSNR on observed pixels fell %.1f dB; restored the last good weights",
                it,
                self.good_obs - p_obs,
            )
            return True
        if bad:
            raise FitDiverged(f"the fit diverged at iteration {it} (loss {m['loss']}); try a smaller --lr")
        if cfg.guard and optimizer is not None:
            self.good.save(optimizer)
            self.good_obs = p_obs
            self._save_good()
        return False

    def _save_good(self) -> None:
        """Keep the EMA (in place, on the device) and the per-iteration callbacks' states of this good check."""
        if self.good_ema is None:
            self.good_ema = self.ema.clone()
        else:
            self.good_ema.copy_(self.ema)
        self.good_hooks = [_copy_state(cb.state_dict()) for cb in self._undoable()]

    def _roll_back(self) -> None:
        """Undo what the iterates since the last good check fed: the EMA and the callbacks' states
        go back to that check's, the snapshots since are dropped (the guard restores only after a
        good check, so its copies exist)."""
        good_it = max((i for i, r in zip(self.hist.iteration, self.hist.restored) if not r), default=-1)
        self.snap = {k: v for k, v in self.snap.items() if k <= good_it}
        if self.good_hooks is not None:
            for cb, saved in zip(self._undoable(), self.good_hooks):
                cb.load_state_dict(_copy_state(saved))  # a copy: a later restore may need it again
        self.ema.copy_(self.good_ema)

    def _undoable(self) -> list[Any]:
        """The per-iteration callbacks whose state can be saved and put back."""
        return [cb for cb in self.iter_hooks if _saves_state(cb)]

    def record(self, it: int, m: dict[str, Any], restored: bool, clean: torch.Tensor | None) -> None:
        """The check's row in the history, and the best clean output so far. A restored check's
        iterate was discarded: its non-finite numbers are recorded as None, never as NaN."""
        if not restored:
            self._consider_best(it, m["clean"], m["hole"], m["clean_np"] if m["clean_np"] is not None else clean)
            self._record(it, m["loss"], m["gt"], m["obs"], restored, m["clean"], m["hole"])
            return
        loss, p_gt, p_obs, p_clean, p_hole = (_finite(m[k]) for k in ("loss", "gt", "obs", "clean", "hole"))
        self._record(it, loss, p_gt, p_obs, restored, p_clean, p_hole)

    def notify(
        self, it: int, m: dict[str, Any], restored: bool, out: torch.Tensor, clean: torch.Tensor | None, fresh: bool
    ) -> None:
        """Check callbacks (any may stop this problem) and the progress bar."""
        if self.hooks:
            o = out.detach()
            check = CheckState(
                it,
                m["loss"],
                m["gt"],
                m["obs"],
                time.perf_counter() - self.t0,
                o if fresh else o.clone(),
                restored,
                m["clean"],
                m["hole"],
                clean,
            )
            for on_check in self.hooks:
                if on_check(check):
                    self.stop = it
        if self.bar is not None:
            shown = m["clean"] if m["clean"] is not None else m["gt"]
            self.bar.set_postfix(
                loss=f"{m['loss']:.2e}", psnr=f"{shown:.2f}" if shown is not None else "-", obs=f"{m['obs']:.2f}"
            )

    def _consider_best(self, it: int, p_clean: float | None, p_hole: float | None, output) -> None:
        # a NaN PSNR compares False with any best, but the first check has none to compare with
        if p_clean is None or math.isnan(p_clean) or output is None:
            return
        if self.best_psnr is None or p_clean > self.best_psnr:
            self.best = output.clone() if isinstance(output, torch.Tensor) else output
            self.best_it, self.best_psnr, self.best_hole = it, p_clean, p_hole

    def _record(
        self,
        it: int,
        loss: float | None,
        p_gt: float | None,
        p_obs: float,
        restored: bool,
        p_clean: float | None,
        p_hole: float | None,
    ) -> None:
        hist = self.hist
        hist.iteration.append(it)
        hist.loss.append(loss)
        hist.psnr.append(p_gt)
        hist.psnr_observed.append(p_obs)
        hist.elapsed.append(time.perf_counter() - self.t0)
        hist.restored.append(restored)
        hist.psnr_clean.append(p_clean)
        hist.psnr_hole.append(p_hole)

    def final_check(self, final_t: torch.Tensor) -> np.ndarray:
        """The final clean output as the last check (iteration = iterations run); returns it on the host."""
        final = _to_numpy(final_t)
        if not np.isfinite(final).all():
            raise FitDiverged(
                f"the fit diverged: the final output is not finite after {self.it} iterations; try a smaller --lr"
            )
        p_clean, p_hole = self._gt_psnrs(final)
        loss = float(((final - self.y_np) * self.m_np).__pow__(2).mean())
        self._consider_best(self.it, p_clean, p_hole, final)
        self._record(self.it, loss, None, masked_psnr(self.y_np, final, self.m_np), False, p_clean, p_hole)
        return final

    def result(self, final_t: torch.Tensor, wall: float) -> FitResult:
        """The fit's outputs; FitDiverged if any of them (the final, EMA, best or a callback's
        ``best_output``, e.g. ES-WMV's) is not finite: a diverged fit is never returned."""
        gt = self.gt
        final = self.final_check(final_t)
        ema = _to_numpy(self.ema) if self.ema is not None else final
        best = _to_numpy(self.best) if isinstance(self.best, torch.Tensor) else self.best
        outputs = {"EMA": ema, "best output": best}
        outputs.update((f"{type(cb).__name__} output", getattr(cb, "best_output", None)) for cb in self.callbacks)
        for name, arr in outputs.items():
            if arr is not None and not np.isfinite(arr).all():
                raise FitDiverged(f"the fit diverged: its {name} is not finite after {self.it} iterations")
        return FitResult(
            history=self.hist,
            final=final,
            ema=ema,
            best=best,
            best_iteration=self.best_it,
            best_psnr=self.best_psnr,
            final_psnr=self.hist.psnr_clean[-1],
            final_ssim=ssim(gt, final) if gt is not None else None,
            ema_psnr=psnr(gt, ema) if gt is not None else None,
            best_hole_psnr=self.best_hole,
            final_hole_psnr=self.hist.psnr_hole[-1],
            snapshots=self.snap,
            guard_restores=self.restores,
            iterations_run=self.it,
            stopped_at=self.stop,
            wall_time=wall,
            device=str(self.device),
        )
