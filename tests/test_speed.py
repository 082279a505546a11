"""Speed paths keep the results: fit_many equals separate fits (guard and stops per problem),
checkpointing changes nothing, the guard's in-place copies restore what load_state_dict did, the
analytic FLOP count matches the network, and the bench CLI writes its JSON."""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from skimage import data, transform

from dip_lib.cli import main
from dip_lib.core.batched import StackedNets, fit_many
from dip_lib.core.device import cpu_has_native_bf16
from dip_lib.core.masks import bernoulli_mask
from dip_lib.core.nets import Lanczos2Down, SkipConfig, SkipNet, conv_flops
from dip_lib.core.presets import get_preset
from dip_lib.core.solver import FitConfig, fast_config, fit
from dip_lib.core.tracking import _GoodCopy
from dip_lib.speed.bench import Variant, cpu_lever_variants, machine_ceiling, memory_in_subprocess

# Exact comparisons need the same arithmetic on both sides, and a tiny net fitted for 30
# iterations amplifies 1-ulp differences: nearest upsampling (CPU bilinear rounds differently with
# the channel count) and oneDNN off (with one thread torch sends small separate convs to its own
# kernels but grouped ones to oneDNN; without oneDNN a grouped conv is a loop over the groups).
SMALL = SkipConfig(
    in_channels=8,
    out_channels=3,
    channels_down=(8, 12, 16),
    channels_up=(8, 12, 16),
    channels_skip=(4, 4, 4),
    upsample_mode="nearest",
)
K, SIZE = 3, 32
TOL = 1e-5


@pytest.fixture(scope="module")
def problems():
    """K different 32x32 crops of the astronaut with their own Bernoulli masks and inputs."""
    base = transform.resize(data.astronaut(), (96, 96), anti_aliasing=True).astype(np.float32).transpose(2, 0, 1)
    truths = [np.ascontiguousarray(base[:, 32 * i : 32 * i + 32, 24:56]) for i in range(K)]
    masks = [bernoulli_mask((SIZE, SIZE), 0.5, seed=i) for i in range(K)]
    g = torch.Generator().manual_seed(0)
    inputs = [torch.rand(1, SMALL.in_channels, SIZE, SIZE, generator=g) * 0.1 for _ in range(K)]
    return truths, masks, inputs


@pytest.fixture(autouse=True)
def same_conv_kernels():
    saved = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    yield
    torch.backends.mkldnn.enabled = saved


def make_nets(cfg: SkipConfig = SMALL, k: int = K) -> list[SkipNet]:
    nets = []
    for i in range(k):
        torch.manual_seed(100 + i)
        nets.append(SkipNet(cfg))
    return nets


CFG = FitConfig(iterations=30, lr=0.01, reg_noise_std=0.03, log_every=5, progress=False, snapshots=(7,))
SEEDS = [3, 4, 5]


def separate(problems, cfg=CFG, callbacks=None, nets=None):
    truths, masks, inputs = problems
    nets = nets or make_nets()
    callbacks = callbacks or [[] for _ in range(K)]
    return [
        fit(n, z, t * m, m, replace(cfg, seed=s), t, cb)
        for n, z, t, m, s, cb in zip(nets, inputs, truths, masks, SEEDS, callbacks)
    ]


def together(problems, cfg=CFG, callbacks=None, nets=None):
    truths, masks, inputs = problems
    return fit_many(
        nets or make_nets(),
        inputs,
        [t * m for t, m in zip(truths, masks)],
        masks,
        cfg,
        ground_truths=truths,
        seeds=SEEDS,
        callbacks=callbacks,
    )


def assert_same(a, b, tol=TOL):
    for key in ("iteration", "restored"):
        assert getattr(a.history, key) == getattr(b.history, key)
    for key in ("loss", "psnr", "psnr_observed", "psnr_clean", "psnr_hole"):
        x, y = getattr(a.history, key), getattr(b.history, key)
        assert [v is None for v in x] == [v is None for v in y], key  # the final check has no iterate PSNR
        np.testing.assert_allclose([v for v in x if v is not None], [v for v in y if v is not None], rtol=tol, atol=tol)
    for x, y in ((a.final, b.final), (a.ema, b.ema), (a.best, b.best), (a.snapshots[7], b.snapshots[7])):
        np.testing.assert_allclose(x, y, rtol=tol, atol=tol)
    assert (a.best_iteration, a.guard_restores, a.iterations_run, a.stopped_at) == (
        b.best_iteration,
        b.guard_restores,
        b.iterations_run,
        b.stopped_at,
    )


def test_fit_many_equals_separate_fits(problems):
    nets_a, nets_b = make_nets(), make_nets()
    for a, b in zip(separate(problems, nets=nets_a), together(problems, nets=nets_b)):
        assert_same(a, b)
    # the trained weights and BatchNorm statistics land in each network
    for na, nb in zip(nets_a, nets_b):
        for (name, x), y in zip(na.state_dict().items(), nb.state_dict().values()):
            torch.testing.assert_close(x, y, rtol=TOL, atol=TOL, msg=name)


def test_stacked_forward_and_gradients_match_bilinear():
    """One pass of the stacked network equals K separate passes (bilinear, zero-bias BN inputs aside)."""
    cfg = replace(SMALL, upsample_mode="bilinear")
    nets = make_nets(cfg)
    z = torch.rand(K, cfg.in_channels, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    out = StackedNets(nets)(z)
    grads = torch.autograd.grad(out.square().sum(), [p for n in nets for p in n.parameters()])
    ref_nets = make_nets(cfg)
    ref = torch.cat([n(z[i : i + 1]) for i, n in enumerate(ref_nets)])
    ref_grads = torch.autograd.grad(ref.square().sum(), [p for n in ref_nets for p in n.parameters()])
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    # conv biases before BatchNorm have zero true gradient (pure rounding noise): compare every
    # gradient on the scale of the largest one
    scale = max(float(r.abs().max()) for r in ref_grads)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=0, atol=1e-6 * scale)


class Sabotage:
    """Adds large noise to the head conv of one network after the forward pass of iteration ``at``."""

    def __init__(self, net: SkipNet, at: int) -> None:
        self.net, self.at = net, at

    def on_iteration(self, it: int, out: torch.Tensor) -> None:
        if it == self.at:
            g = torch.Generator().manual_seed(7)
            with torch.no_grad():
                w = self.net.head.weight
                w.add_(torch.randn(w.shape, generator=g).to(w) * 20)


def test_guard_in_fit_many_restores_only_the_problem_that_blew_up(problems):
    cfg = replace(CFG, guard=True)
    nets_a, nets_b = make_nets(), make_nets()
    cb_a = [[], [Sabotage(nets_a[1], 12)], []]
    cb_b = [[], [Sabotage(nets_b[1], 12)], []]
    sep = separate(problems, cfg, cb_a, nets_a)
    bat = together(problems, cfg, cb_b, nets_b)
    assert [r.guard_restores for r in bat] == [0, 1, 0]
    assert bat[1].history.restored == [False, False, False, True, False, False, False, False]  # + the final check
    obs = bat[1].history.psnr_observed  # checks at 0, 5, ..., 30: sabotaged at 12, restored at 15
    assert obs[3] < obs[2] - 5 and obs[4] > obs[2] - 1
    for a, b in zip(sep, bat):
        assert_same(a, b)


class StopAt:
    def __init__(self, at: int) -> None:
        self.at = at

    def on_check(self, state) -> bool:
        return state.iteration >= self.at


def test_fit_many_stops_one_problem_and_runs_the_others(problems):
    cbs = lambda: [[], [StopAt(10)], []]
    sep, bat = separate(problems, callbacks=cbs()), together(problems, callbacks=cbs())
    assert [r.iterations_run for r in bat] == [30, 11, 30]
    assert bat[1].stopped_at == 10
    for a, b in zip(sep, bat):
        assert_same(a, b)


def test_fit_many_rejects_mixed_problems(problems):
    truths, masks, inputs = problems
    with pytest.raises(ValueError, match="one architecture"):
        fit_many(
            [SkipNet(SMALL), SkipNet(replace(SMALL, channels_up=(8, 12, 8)))],
            inputs[:2],
            [t * m for t, m in zip(truths[:2], masks[:2])],
            masks[:2],
            CFG,
        )
    with pytest.raises(ValueError, match="one shape"):
        fit_many(
            make_nets(k=2),
            [inputs[0], inputs[1][..., :16]],
            [truths[0], truths[1][..., :16]],
            [masks[0], masks[1][..., :16]],
            CFG,
        )
    with pytest.raises(ValueError, match="per net"):
        fit_many(make_nets(k=2), inputs[:1], truths[:2], masks[:2], CFG)


def test_checkpointing_gives_the_same_gradients_and_history(problems):
    truths, masks, inputs = problems
    a, b = make_nets(k=1)[0], make_nets(k=1)[0].set_checkpointing(True)
    z = inputs[0].requires_grad_(False)
    ga = torch.autograd.grad(a(z).square().sum(), list(a.parameters()))
    gb = torch.autograd.grad(b(z).square().sum(), list(b.parameters()))
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-7)
    net = make_nets(k=1)[0]
    plain = fit(make_nets(k=1)[0], z, truths[0] * masks[0], masks[0], CFG, truths[0])
    ckpt = fit(net, z, truths[0] * masks[0], masks[0], replace(CFG, checkpointing=True), truths[0])
    assert_same(plain, ckpt, tol=1e-6)
    assert not net.body.checkpoint  # switched back off after the fit
    for a, b in zip(together(problems), together(problems, replace(CFG, checkpointing=True))):
        assert_same(a, b, tol=1e-6)


def test_guard_copy_restores_what_load_state_dict_did():
    """Save, step on, save again (in place), step on, restore: parameters and Adam state equal the
    old ``p.copy_(saved); optimizer.load_state_dict(deepcopy(saved_state))`` at every later step."""
    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(4))]
    b = [torch.nn.Parameter(x.detach().clone()) for x in a]
    opt_a, opt_b = torch.optim.Adam(a, lr=0.1), torch.optim.Adam(b, lr=0.1)

    def step(ps, opt):
        opt.zero_grad()
        sum((p**3).sum() for p in ps).backward()
        opt.step()

    def both(n):
        for _ in range(n):
            step(a, opt_a)
            step(b, opt_b)

    def restore_b(saved):
        with torch.no_grad():
            for p, s in zip(b, saved[0]):
                p.copy_(s)
        opt_b.load_state_dict(copy.deepcopy(saved[1]))

    good = _GoodCopy(a)
    good.save(opt_a)  # before the first step: no Adam state yet
    saved = ([p.detach().clone() for p in b], copy.deepcopy(opt_b.state_dict()))
    both(2)
    good.restore(opt_a)
    restore_b(saved)
    assert len(opt_a.state) == len(opt_b.state) == 0
    both(3)
    good.save(opt_a)
    saved = ([p.detach().clone() for p in b], copy.deepcopy(opt_b.state_dict()))
    both(4)
    good.save(opt_a)  # in place into the same buffers
    saved = ([p.detach().clone() for p in b], copy.deepcopy(opt_b.state_dict()))
    both(2)
    good.restore(opt_a)
    restore_b(saved)
    both(3)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt_a.state[x][key], opt_b.state[y][key])


def test_conv_flops_match_the_network_and_the_paper():
    def hooked(cfg: SkipConfig, h: int, w: int) -> float:
        total = 0.0

        def hook(m, inp, out):
            nonlocal total
            if isinstance(m, Lanczos2Down):  # a fixed depthwise 8x8 filter
                total += 2.0 * m.weight[0].numel() * m.channels * out.shape[-2] * out.shape[-1]
                return
            kh, kw = m.kernel_size
            if isinstance(m, torch.nn.ConvTranspose2d):
                total += (
                    2.0 * kh * kw * m.in_channels * (m.out_channels // m.groups) * inp[0].shape[-2] * inp[0].shape[-1]
                )
            else:
                total += 2.0 * kh * kw * (m.in_channels // m.groups) * m.out_channels * out.shape[-2] * out.shape[-1]

        net = SkipNet(cfg)
        for m in net.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, Lanczos2Down)):
                m.register_forward_hook(hook)
        with torch.no_grad():
            net(torch.zeros(1, cfg.in_channels, h, w))
        return total

    for cfg, (h, w) in [
        (SMALL, (32, 32)),
        (replace(SMALL, channels_skip=(0, 4, 0), need_1x1_up=False), (37, 45)),
        (replace(SMALL, upsample_mode="deconv", kernel_down=5), (40, 40)),
        (replace(SMALL, downsample_mode="lanczos2"), (48, 48)),
    ]:
        assert conv_flops(cfg, h, w)["forward"] == pytest.approx(hooked(cfg, h, w), rel=1e-12)
    # the numbers: table1-paper ~155 + ~305 GFLOP, text ~259 + ~512 GFLOP at 512x512
    t1 = conv_flops(replace(get_preset("table1-paper").net, out_channels=3), 512, 512)
    tx = conv_flops(replace(get_preset("text").net, out_channels=3), 512, 512)
    assert (round(t1["forward"] / 1e9), round(t1["backward"] / 1e9)) == (155, 305)
    assert (round(tx["forward"] / 1e9), round(tx["backward"] / 1e9)) == (260, 512)


def test_fast_config_on_cpu(problems):
    cfg = fast_config(CFG, "cpu")
    assert cfg.adam_impl == "fused" and not cfg.cuda_graphs and cfg.noise_rng == "torch"
    assert cfg.precision == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert cfg.channels_last == (cfg.precision == "bf16")  # channels_last goes with bf16 only
    assert cfg.threads is None or 1 <= cfg.threads < torch.get_num_threads()  # the idle cores, if fewer
    plain_levers = {"precision": "fp32", "channels_last": False, "adam_impl": "auto", "threads": None}
    assert replace(cfg, **plain_levers) == CFG  # nothing else changes
    truths, masks, inputs = problems
    cfg = replace(cfg, precision="fp32", channels_last=False)
    fast, plain = (fit(make_nets(k=1)[0], inputs[0], truths[0] * masks[0], masks[0], c, truths[0]) for c in (cfg, CFG))
    # fused Adam rounds differently; the first checks agree closely, the end within a fraction of a dB
    np.testing.assert_allclose(fast.history.psnr_clean[:2], plain.history.psnr_clean[:2], atol=1e-3)
    assert abs(fast.final_psnr - plain.final_psnr) < 0.5


def test_cpu_lever_ladder_has_a_row_per_lever():
    rows = {v.name: v.overrides for v in cpu_lever_variants(2)}
    assert rows["+numpy noise"] == {**rows["+bf16 autocast"], "noise_rng": "numpy"}  # cumulative
    assert rows["bf16 NCHW + numpy noise"] == {**rows["bf16 NCHW"], "noise_rng": "numpy"}
    assert "original" in rows and "fast_config" in rows


def test_bench_cli_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert (
        main(
            [
                "bench",
                "--presets",
                "table1-paper",
                "--sizes",
                "40",
                "--iterations",
                "2",
                "--rounds",
                "1",
                "--no-memory",
                "--threads",
                "1",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    payload = json.loads(out.read_text())
    assert payload["machine"]["cpu"] and payload["machine"]["torch"] == torch.__version__
    rows = {(r["mode"], r["threads"]): r for r in payload["results"]}
    assert set(rows) == {(m, t) for m in ("original", "reference", "fast", "batched") for t in (1, 2)}
    assert rows[("batched", 1)]["batch"] == 2
    for (_, t), r in rows.items():
        assert r["config"]["threads"] == t  # every row at the thread count it names
        assert r["ms_per_iteration"] > 0 and r["gflop_per_iteration"] > 0 and r["gflops_achieved"] > 0
        # ratios against the original loop and the reference of the same thread count
        for base in ("original", "reference"):
            assert r[f"speedup_vs_{base}"] == pytest.approx(
                rows[(base, t)]["ms_per_iteration"] / r["ms_per_iteration"], rel=1e-2
            )
        ceiling = payload["ceiling"]["per_threads"][str(t)][f"{r['config']['precision']}_ceiling_gflops"]
        assert r["ceiling_gflops"] == ceiling and r["ceiling_fraction"] == pytest.approx(
            r["gflops_achieved"] / ceiling, abs=1e-3
        )
    assert rows[("reference", 1)]["config"]["log_every"] == 1 and rows[("fast", 1)]["config"]["adam_impl"] == "fused"
    printed = capsys.readouterr().out
    assert "wrote" in printed and "ceiling at 1 thread(s)" in printed and "vs original" in printed


def test_machine_ceiling_reports_both_precisions():
    c = machine_ceiling(1, reps=1)
    assert c["threads"] == 1
    for prec in ("fp32", "bf16"):
        assert c[f"{prec}_ceiling_gflops"] == max(c[f"{prec}_matmul_gflops"], c[f"{prec}_conv_gflops"]) > 0


def test_original_loop_runs_and_learns():
    from dip_lib.speed.original import original_loop

    preset = get_preset("table1-paper")
    net, z, _ = preset.setup((1, 40, 40), seed=0, net=dict(channels_down=(8,) * 5, channels_up=(8,) * 5))
    truth = np.random.default_rng(0).random((1, 40, 40), dtype=np.float32)
    mask = bernoulli_mask((40, 40), 0.5, seed=0)
    first = original_loop(net, z, truth, mask, 1, lr=0.01)
    t = original_loop(net, z, truth, mask, 8, lr=0.01)
    assert len(t.elapsed) == 8 and t.elapsed == sorted(t.elapsed)
    assert t.loss < first.loss


def test_bench_rejects_bad_input(capsys):
    assert main(["bench", "--presets", "nope", "--no-memory"]) == 2
    assert "unknown preset" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--sizes", "0"])


def test_cpu_memory_probe_reports_growth():
    mb = memory_in_subprocess(Variant("fast", "", fast=True), get_preset("table1-paper"), 40)
    assert mb is not None and mb > 1


def test_deadline_stops_all_problems_of_a_chunk_at_one_iteration():
    from types import SimpleNamespace

    from dip_lib.speed.bench import Deadline

    d = Deadline(1.0)
    state = lambda it, t: SimpleNamespace(iteration=it, elapsed=t)
    assert not d.on_check(state(0, 5.0)) and not d.on_check(state(0, 5.0))
    assert not d.on_check(state(1, 5.9))
    assert d.on_check(state(2, 6.1))  # the first problem's check ends the chunk here ...
    assert d.on_check(state(2, 6.0))  # ... and the others' checks at the same iteration too


def test_bench_checks_its_arguments_before_any_timing(tmp_path, capsys, monkeypatch):
    from dip_lib.core import estimate as est
    from dip_lib.speed import bench

    monkeypatch.setattr(bench, "bench", lambda *a, **k: pytest.fail("benchmarked before the checks"))
    monkeypatch.setattr(bench, "machine_info", lambda *a, **k: pytest.fail("benchmarked before the checks"))
    (tmp_path / "afile").write_text("")
    for argv, why in (
        (["--out", str(tmp_path / "afile" / "b.json")], "is not a folder"),
        (["--chunk-budget", "nan"], "--chunk-budget must be a finite number"),
        (["--chunk-budget", "-1"], "--chunk-budget must be a finite number"),
        (["--sizes", "30000"], "out of range"),
    ):
        assert main(["bench", "--device", "cpu", *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and why in err, err
    monkeypatch.setattr(est, "available_memory_bytes", lambda: 2**30)
    assert main(["bench", "--device", "cpu", "--sizes", "4096"]) == 2
    assert "of memory but" in capsys.readouterr().err


def test_bench_json_is_strict():
    from dip_lib.speed.bench import finite_json

    text = json.dumps(finite_json({"a": [1.0, float("nan"), np.float32("inf")], "b": "x"}), allow_nan=False)
    assert json.loads(text) == {"a": [1.0, None, None], "b": "x"}
