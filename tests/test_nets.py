"""The skip network: parameter counts of the original networks, output sizes, checkpointing."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from dip_lib.core.nets import (
    ACTIVATIONS,
    DOWNSAMPLE_MODES,
    PADS,
    UPSAMPLE_MODES,
    SkipConfig,
    SkipNet,
    count_params,
    min_size,
)
from dip_lib.core.presets import get_preset, sweep_net

TEXT = SkipConfig(
    in_channels=32,
    out_channels=3,
    channels_down=(128,) * 5,
    channels_up=(128,) * 5,
    channels_skip=(128,) * 5,
    kernel_down=3,
    kernel_up=3,
    kernel_skip=1,
    upsample_mode="nearest",
    need_1x1_up=True,
)


def params(cfg: SkipConfig, out_channels: int = 3) -> int:
    return count_params(SkipNet(replace(cfg, out_channels=out_channels)))


def tiny(**kw) -> SkipConfig:
    base = dict(in_channels=4, out_channels=2, channels_down=(8,) * 3, channels_up=(8,) * 3, channels_skip=(4,) * 3)
    base.update(kw)
    return SkipConfig(**base)


# ---- parameter counts (the numbers the original notebooks print) ----


def test_text_network_counts_built_directly():
    assert params(TEXT, 3) == 3_002_627
    assert params(TEXT, 1) == 3_002_369


def test_table1_paper_network_count_built_directly():
    cfg = replace(TEXT, channels_skip=(4,) * 5, upsample_mode="bilinear")
    assert params(cfg, 1) == 2_217_573


@pytest.mark.parametrize(
    "name, out_channels, expected",
    [
        ("text", 3, 3_002_627),
        ("text", 1, 3_002_369),
        ("table1-paper", 1, 2_217_573),
        ("vase", 3, 2_157_955),
        ("library-depth6", 3, 2_996_467),
    ],
)
def test_preset_param_counts(name, out_channels, expected):
    assert get_preset(name).param_count(out_channels) == expected


def test_preset_networks_have_the_original_inputs():
    assert get_preset("vase").net.in_channels == 2
    assert get_preset("vase").net.channels_skip == (0,) * 5
    lib = get_preset("library-depth6").net
    assert (lib.in_channels, lib.kernel_down, lib.kernel_up, lib.need_1x1_up) == (1, 5, 3, False)
    assert lib.channels_down == lib.channels_up == (16, 32, 64, 128, 128, 128)


@pytest.mark.parametrize(
    "filters, expected", [(4, 4_555), (16, 52_771), (32, 197_699), (64, 764_035), (128, 3_002_627)]
)
def test_filter_sweep_counts(filters, expected):
    assert params(sweep_net(filters, 5, True), 3) == expected


@pytest.mark.parametrize("depth", range(1, 9))
def test_depth_sweep_counts(depth):
    assert params(sweep_net(128, depth, True), 3) == 502_531 + 625_024 * (depth - 1)
    assert params(sweep_net(128, depth, False), 3) == 350_339 + 460_544 * (depth - 1)


# ---- output size equals input size ----


@pytest.mark.parametrize("skip", [4, 0])
@pytest.mark.parametrize("upsample_mode", UPSAMPLE_MODES)
@pytest.mark.parametrize("downsample_mode", DOWNSAMPLE_MODES)
def test_output_size_equals_input_size_for_resamplers(downsample_mode, upsample_mode, skip):
    torch.manual_seed(0)
    net = SkipNet(tiny(downsample_mode=downsample_mode, upsample_mode=upsample_mode, channels_skip=(skip,) * 3))
    for h, w in [(67, 45), (64, 64), (33, 17)]:
        y = net(torch.rand(1, 4, h, w))
        assert y.shape == (1, 2, h, w)
        assert torch.isfinite(y).all() and (y >= 0).all() and (y <= 1).all()


@pytest.mark.parametrize("skip", [4, 0])
@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("pad", PADS)
def test_output_size_equals_input_size_for_pads_and_activations(pad, act, skip):
    torch.manual_seed(0)
    net = SkipNet(tiny(pad=pad, act=act, channels_skip=(skip,) * 3))
    for h, w in [(67, 45), (40, 56)]:
        assert net(torch.rand(1, 4, h, w)).shape == (1, 2, h, w)


@pytest.mark.parametrize(
    "cfg",
    [
        tiny(),
        tiny(pad="zero"),
        tiny(channels_skip=(0,) * 3, downsample_mode="avg"),
        tiny(kernel_down=5, kernel_up=5),
        tiny(channels_down=(4,) * 5, channels_up=(4,) * 5, channels_skip=(2,) * 5),
    ],
    ids=["k3", "zero-pad", "noskip-avg", "k5", "depth5"],
)
def test_min_size_is_the_smallest_accepted_side(cfg):
    torch.manual_seed(0)
    net = SkipNet(cfg)
    s = min_size(cfg)
    assert s > 2**cfg.depth
    assert net(torch.rand(1, cfg.in_channels, s, s)).shape[-2:] == (s, s)
    with pytest.raises((ValueError, RuntimeError)):
        net(torch.rand(1, cfg.in_channels, s - 1, s - 1))


def test_invalid_configs_are_rejected():
    with pytest.raises(ValueError):
        tiny(channels_up=(8,) * 2)
    with pytest.raises(ValueError):
        tiny(upsample_mode="cubic")
    with pytest.raises(ValueError):
        tiny(kernel_down=4)


# ---- gradient checkpointing ----


def test_checkpointing_gives_identical_outputs_and_gradients():
    torch.manual_seed(0)
    plain = SkipNet(tiny(channels_skip=(4, 0, 4)))
    ckpt = copy.deepcopy(plain).set_checkpointing(True)
    calls = {"plain": 0, "ckpt": 0}
    plain.body.down[0].register_forward_hook(lambda *a: calls.__setitem__("plain", calls["plain"] + 1))
    ckpt.body.down[0].register_forward_hook(lambda *a: calls.__setitem__("ckpt", calls["ckpt"] + 1))
    z = torch.rand(1, 4, 37, 29)
    outs = []
    for net in (plain, ckpt):
        y = net(z)
        (y * torch.linspace(0, 1, y.numel()).view_as(y)).sum().backward()
        outs.append(y.detach())
    assert torch.equal(outs[0], outs[1])
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        assert p.grad is not None and torch.equal(p.grad, q.grad), name
    # the checkpointed branch really was recomputed in the backward pass
    assert calls == {"plain": 1, "ckpt": 2}
