"""ES-WMV: agrees with a direct (numpy) implementation of the rule, triggers on patience, scales, fits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_fit import BlowUp  # multiplies the conv weights by 100 at one iteration

from dip_lib.core.nets import SkipConfig, SkipNet
from dip_lib.core.solver import FitConfig, fit
from dip_lib.core.stopping import ESWMV


def _sequence(n: int = 400, amp_min_at: int = 200, seed: int = 0) -> list[np.ndarray]:
    """Outputs (1, 1, 8, 8) that jitter around a fixed image with an amplitude smallest at ``amp_min_at``."""
    rng = np.random.default_rng(seed)
    base = rng.random((1, 1, 8, 8))
    amp = 0.01 + 0.2 * (np.arange(n) - amp_min_at) ** 2 / n**2
    return [(base + a * rng.standard_normal(base.shape)).astype(np.float32) for a in amp]


def _reference(outputs: list[np.ndarray], window: int, patience: int) -> tuple[list[float], int, int | None]:
    """The rule written out directly: VAR over each full window, first minimum, stop after P misses."""
    flat = [o.reshape(-1).astype(np.float64) for o in outputs]
    variances, best_var, best_it, stop_it = [], np.inf, None, None
    for t in range(window - 1, len(flat)):
        win = np.stack(flat[t - window + 1 : t + 1])
        var = float(((win - win.mean(0)) ** 2).sum(1).mean() / win.shape[1])
        variances.append(var)
        if stop_it is not None:
            continue
        if var < best_var:
            best_var, best_it = var, t
        elif t - best_it >= patience:
            stop_it = t
    return variances, best_it, stop_it


def _drive(rule: ESWMV, outputs: list[np.ndarray]) -> int | None:
    for it, o in enumerate(outputs):
        if rule.on_iteration(it, torch.from_numpy(o)):
            return it
    return None


def test_matches_direct_implementation():
    outputs = _sequence()
    rule = ESWMV(window=20, patience=60)
    returned = _drive(rule, outputs)
    ref_vars, ref_best, ref_stop = _reference(outputs, 20, 60)
    assert ref_stop is not None and 150 < ref_best < 300
    assert returned == rule.stop_iteration == ref_stop
    assert rule.best_iteration == ref_best
    np.testing.assert_array_equal(rule.best_output, outputs[ref_best][0])
    its, vals = zip(*rule.variances)
    assert list(its) == list(range(19, ref_stop + 1))
    np.testing.assert_allclose(vals, ref_vars[: len(vals)], rtol=1e-9, atol=1e-12)


def test_no_stop_before_window_or_patience():
    outputs = _sequence(n=100, amp_min_at=99)  # the amplitude falls all the way: never a stop
    rule = ESWMV(window=10, patience=30)
    assert _drive(rule, outputs[:9]) is None and rule.best_output is None and rule.variances == []
    assert _drive(rule, outputs[9:]) is None
    assert rule.stop_iteration is None and rule.best_output is not None


def test_patience_triggers_and_stop_false_keeps_running():
    outputs = _sequence(n=300, amp_min_at=100) + _sequence(n=100, amp_min_at=400, seed=1)[::-1]
    stopping = ESWMV(window=10, patience=40)
    stopped_at = _drive(stopping, outputs)
    _, ref_best, ref_stop = _reference(outputs, 10, 40)
    assert stopped_at == ref_stop == ref_best + 40

    recording = ESWMV(window=10, patience=40, stop=False)
    assert _drive(recording, outputs) is None  # never asks to stop
    assert recording.stop_iteration == ref_stop
    assert recording.best_iteration == ref_best  # frozen at the trigger, not moved by later minima
    assert len(recording.variances) == len(outputs) - 9


def test_for_iterations_scaling():
    short, mid, long = ESWMV.for_iterations(300), ESWMV.for_iterations(6001), ESWMV.for_iterations(100000)
    assert (short.window, short.patience) == (5, 50)
    assert (mid.window, mid.patience) == (100, 1000)
    assert (long.window, long.patience) == (100, 1000)
    tiny = ESWMV.for_iterations(40, stop=False)
    assert (tiny.window, tiny.patience, tiny.stop) == (5, 15, False)
    with pytest.raises(ValueError):
        ESWMV(window=1)


def _tiny_problem():
    """A 2-level 8-filter net, its input and a 16 px random image with half its pixels masked."""
    torch.manual_seed(0)
    cfg = SkipConfig(in_channels=4, out_channels=1, channels_down=(8, 8), channels_up=(8, 8), channels_skip=(2, 2))
    z = torch.rand(1, 4, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.1
    img = np.random.default_rng(0).random((1, 16, 16)).astype(np.float32)
    mask = (np.random.default_rng(1).random((1, 16, 16)) > 0.5).astype(np.float32)
    return SkipNet(cfg), z, img, mask


def test_inside_a_real_fit():
    net, z, img, mask = _tiny_problem()
    rule = ESWMV(window=5, patience=15)
    n = 120
    result = fit(
        net,
        z,
        img * mask,
        mask,
        FitConfig(iterations=n, lr=0.05, log_every=10, snapshots=tuple(range(n)), device="cpu", progress=False),
        ground_truth=img,
        callbacks=[rule],
    )
    assert rule.stop_iteration is not None and result.stopped_at == rule.stop_iteration
    assert result.iterations_run == rule.stop_iteration + 1
    assert rule.stop_iteration - rule.best_iteration == 15
    out = rule.best_output
    assert out.shape == (1, 16, 16) and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    np.testing.assert_array_equal(out, result.snapshots[rule.best_iteration])
    assert [i for i, _ in rule.variances] == list(range(4, rule.stop_iteration + 1))


def test_a_guard_restore_rolls_eswmv_back_to_the_last_good_check():
    """The iterates between the last good check (30) and the restoring one (40) are discarded: ES-WMV
    neither chooses one of them nor keeps their VAR values."""
    net, z, img, mask = _tiny_problem()
    rule = ESWMV(window=3, patience=100, stop=False)
    result = fit(
        net,
        z,
        img * mask,
        mask,
        FitConfig(iterations=60, lr=0.05, log_every=10, device="cpu", progress=False),
        ground_truth=img,
        callbacks=[BlowUp(net, 33), rule],
    )
    h = result.history
    assert [it for it, r in zip(h.iteration, h.restored) if r] == [40]
    discarded = set(range(31, 41))
    assert rule.best_iteration not in discarded
    assert not discarded & {it for it, _ in rule.variances}


def test_interval_drops_counts_every_fall_between_consecutive_checks():
    from dip_lib.report.scores import interval_drops

    its = list(range(0, 100, 10))
    psnr = [20, 25, 23, 27, 26.5, 20, 15, None, 30, 28.5]  # falls of 2, 0.5, 6.5, 5, (None skipped), 1.5
    assert interval_drops(its, psnr) == [(10, 20, 2), (40, 50, 6.5), (50, 60, 5), (80, 90, 1.5)]
    # more drops than the recorder keeps images of: the count is not capped at 3
    saw = [30, 20] * 10
    assert len(interval_drops(list(range(20)), saw)) == 10
