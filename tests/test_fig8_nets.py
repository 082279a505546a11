"""Fig. 8's five networks for large-hole inpainting (library), as the original inpainting.ipynb builds
them: parameter counts, outputs at library's native 704x448 and at 256x256, recipes, FLOPs, run ids."""

from __future__ import annotations

from dataclasses import asdict, replace

import pytest
import torch
from torch import nn

from dip_lib.core.errors import DipError
from dip_lib.core.nets import ResNet, ResNetConfig, UNet, UNetConfig, build_net, conv_flops, count_params, min_size
from dip_lib.core.presets import get_preset, library_net
from dip_lib.report.runs import Run, spec

FIG8 = ("fig8-skip6", "fig8-skip4", "fig8-skip2", "fig8-unet", "fig8-resnet")

# the counts the original notebook prints for library (3 output channels, input depth 1)
ORIGINAL_COUNTS = {
    "fig8-skip6": 2_996_467,
    "fig8-skip4": 1_060_339,
    "fig8-skip2": 59_635,
    "fig8-unet": 1_616_315,
    "fig8-resnet": 158_979,
}


@pytest.mark.parametrize("name", FIG8)
def test_parameter_counts_equal_the_originals(name):
    p = get_preset(name)
    assert p.net.in_channels == 1
    assert p.param_count(3) == ORIGINAL_COUNTS[name]


def test_unet_and_resnet_counts_part_by_part():
    """The counts rebuilt by hand from models/unet.py and models/resnet.py (conv weights + biases)."""
    c = 32  # ResNet: head conv + act, 8 blocks of 2 bias-free convs and 2 affine BNs, conv + BN, out conv
    resnet = (9 * 1 * c + c) + 8 * (2 * 9 * c * c + 4 * c) + (9 * c * c + c + 2 * c) + (9 * c * 3 + 3)
    assert count_params(ResNet(ResNetConfig())) == resnet == 158_979

    def dconv(a, b):  # unetConv2: two 3x3 convs with bias (InstanceNorm without affine: no parameters)
        return 9 * a * b + b + 9 * b * b + b

    def up(a, b):  # unetUp, deconv: 4x4 transposed conv a -> b, then unetConv2(2b, b)
        return 16 * a * b + b + dconv(2 * b, b)

    w = (8, 16, 32, 64, 128, 128)
    unet = dconv(1, 8) + sum(dconv(w[i - 1], w[i]) + up(w[i], w[i - 1]) for i in range(1, 6)) + (8 * 3 + 3)
    assert UNetConfig().widths == w
    assert count_params(UNet(UNetConfig())) == unet == 1_616_315


@pytest.mark.parametrize("hw", [(448, 704), (256, 256)], ids=["library-704x448", "256x256"])
@pytest.mark.parametrize("name", FIG8)
def test_forward_at_native_and_square_sizes(name, hw):
    h, w = hw
    net, z, cfg = get_preset(name).setup((3, h, w), seed=0)
    assert z.shape == (1, 1, h, w) and float(z.min()) >= 0 and float(z.max()) < 0.1
    with torch.no_grad():
        y = net.train()(z)
    assert y.shape == (1, 3, h, w)
    assert torch.isfinite(y).all() and (y >= 0).all() and (y <= 1).all()


@pytest.mark.parametrize("name", FIG8)
def test_recipes_are_the_notebooks(name):
    p = get_preset(name)
    f = p.fit_config()
    assert (p.input_kind, f.iterations, f.optimizer, f.reg_noise_std, f.guard) == ("noise", 3001, "adam", 0.0, False)
    assert f.lr == (0.01 if "skip" in name else 0.001)
    assert f.param_noise is False  # a no-op in the original's loop for the skip nets, off for UNet/ResNet


def test_network_configs_are_pinned():
    """The full configurations (a changed default would change these networks silently)."""
    assert asdict(get_preset("fig8-unet").net) == dict(
        in_channels=1,
        out_channels=3,
        feature_scale=8,
        more_layers=1,
        upsample_mode="deconv",
        pad="zero",
        norm="instance",
        need_sigmoid=True,
    )
    assert asdict(get_preset("fig8-resnet").net) == dict(
        in_channels=1, out_channels=3, blocks=8, channels=32, act="LeakyReLU", pad="reflection"
    )
    for d in (6, 4, 2):
        net = get_preset(f"fig8-skip{d}").net
        assert net == library_net(d)
        assert net.channels_down == net.channels_up == (16, 32, 64, 128, 128, 128)[:d]
        assert (net.channels_skip, net.kernel_down, net.kernel_up, net.need_1x1_up) == ((0,) * d, 5, 3, False)
        assert (net.upsample_mode, net.pad, net.act) == ("nearest", "reflection", "LeakyReLU")


def test_library_depth6_is_fig8_skip6_with_param_noise():
    a, b = get_preset("library-depth6"), get_preset("fig8-skip6")
    assert a.net == b.net
    assert replace(a.fit_config(), param_noise=False) == b.fit_config()


def test_unet_needs_sides_that_are_multiples_of_32():
    net = UNet(UNetConfig())
    assert min_size(UNetConfig()) == 64
    assert net(torch.rand(1, 1, 64, 96)).shape == (1, 3, 64, 96)
    with pytest.raises(ValueError, match="multiples of 32"):
        net(torch.rand(1, 1, 64, 80))
    with pytest.raises(DipError, match="multiples of 32"):
        get_preset("fig8-unet").setup((3, 257, 257))
    with pytest.raises(DipError, match="at least 64x64"):
        get_preset("fig8-unet").setup((3, 32, 32))


def test_other_unet_and_resnet_options_build_and_keep_the_size():
    for cfg in (
        UNetConfig(upsample_mode="nearest", norm="batch", pad="reflection", more_layers=0, feature_scale=16),
        UNetConfig(upsample_mode="bilinear", norm="none", need_sigmoid=False, in_channels=2),
    ):
        y = build_net(cfg)(torch.rand(1, cfg.in_channels, 64, 32 * 3))
        assert y.shape == (1, 3, 64, 96)
    y = build_net(ResNetConfig(blocks=2, channels=8, pad="zero", act="ELU", in_channels=3))(torch.rand(1, 3, 5, 7))
    assert y.shape == (1, 3, 5, 7) and (y >= 0).all() and (y <= 1).all()
    with pytest.raises(ValueError):
        UNetConfig(norm="group")
    with pytest.raises(ValueError):
        UNetConfig(feature_scale=5)


@pytest.mark.parametrize(
    "cfg",
    [UNetConfig(), UNetConfig(upsample_mode="nearest", more_layers=0), ResNetConfig(blocks=3)],
    ids=["unet", "unet-nearest", "resnet"],
)
def test_conv_flops_equal_the_modules(cfg):
    """The analytic forward FLOPs equal 2 x the multiply-adds of every conv module, counted by hooks."""
    net, h, w = build_net(cfg), 64, 96
    total = 0.0

    def hook(m, inp, out):
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1]
        if isinstance(m, nn.ConvTranspose2d):  # k^2 C_in C_out per input pixel
            total += 2.0 * k * m.in_channels * m.out_channels * inp[0].shape[-2] * inp[0].shape[-1]
        else:
            total += 2.0 * k * m.in_channels * m.out_channels * out.shape[-2] * out.shape[-1]

    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            m.register_forward_hook(hook)
    with torch.no_grad():
        net(torch.rand(1, cfg.in_channels, h, w))
    f = conv_flops(cfg, h, w)
    assert f["forward"] == total
    assert f["forward"] * 2 < f["total"] < f["forward"] * 3  # backward: 2x, less the input convs' input grad


def test_run_ids_of_the_five_are_distinct_and_name_the_network():
    runs = [Run(experiment="fig8", profile="paper", image="library", source="dip", mask="file", preset=n) for n in FIG8]
    assert len({r.run_id for r in runs}) == 5
    for r in runs:
        s = spec(r)
        assert s["preset"] == r.preset and s["input"] == "noise" and s["net"]["in_channels"] == 1
        assert s["fit"]["iterations"] == 3001 and s["fit"]["reg_noise_std"] == 0.0


def test_presets_command_lists_the_five_with_their_counts(capsys):
    from dip_lib.cli import cmd_presets

    assert cmd_presets(None) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    for name, count in ORIGINAL_COUNTS.items():
        assert f"{count:,}" in rows[name] and "noise x1" in rows[name] and " 3001 " in rows[name]
    assert "unet d5" in rows["fig8-unet"] and "resnet 8x32" in rows["fig8-resnet"]
    assert "skip d2 w16-32 no-skip" in rows["fig8-skip2"]
