"""The Multi-Resolution U-Net against method §4, and DIPConfig (no torch needed for the latter)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from dippas_core.config import DIPConfig
from dippas_core.errors import InputError

torch = pytest.importorskip("torch")

from dippas_core.dip.network import MultiResUNet, count_parameters  # noqa: E402

torch.set_num_threads(1)


# --- an independent count from method §4's layer list --------------------------------------------
def _conv(c_in: int, c_out: int, k: int) -> int:
    """Weights + bias of a k×k convolution."""
    return k * k * c_in * c_out + c_out


def _bn(c: int) -> int:
    return 2 * c


def _conv_bn(c_in: int, c_out: int, k: int) -> int:
    return _conv(c_in, c_out, k) + _bn(c_out)


def _block_widths(u: int) -> tuple[int, int, int]:
    w = 1.67 * u
    return int(0.167 * w), int(0.333 * w), int(0.5 * w)


def _multires(u: int, c_in: int) -> tuple[int, int]:
    """(parameters, output channels) of a MultiRes block: 3 chained 3×3, BN on the concat,
    a 1×1 shortcut, BN after the sum."""
    a, b, c = _block_widths(u)
    out = a + b + c
    params = (
        _conv_bn(c_in, a, 3) + _conv_bn(a, b, 3) + _conv_bn(b, c, 3)
        + _conv_bn(c_in, out, 1) + _bn(out) + _bn(out)
    )
    return params, out


def _respath(c_in: int, c_out: int) -> int:
    """Residual path of length 1: 3×3 and 1×1 conv (each + BN) summed, then BN."""
    return _conv_bn(c_in, c_out, 3) + _conv_bn(c_in, c_out, 1) + _bn(c_out)


def _spec_count(in_channels: int, widths: list[int], skips: list[int], out_channels: int = 3):
    total, depth = _multires(widths[0], in_channels)
    enc_depths = [depth]
    for u in widths[1:]:
        total += _conv_bn(depth, depth, 3)  # stride-2 3×3 conv down
        p, depth = _multires(u, depth)
        total += p
        enc_depths.append(depth)
    # decoder: scale i-1 takes residual path (skips[i-1]) + the up-sampled scale below
    below = enc_depths[-1]
    for i in range(len(widths) - 1, 0, -1):
        total += _respath(enc_depths[i - 1], skips[i - 1])
        p, below = _multires(widths[i - 1], skips[i - 1] + below)
        total += p
    return total + _conv(below, out_channels, 1)


@pytest.mark.parametrize(
    "u, total", [(4, 6), (16, 25), (32, 51), (64, 105), (128, 212), (256, 426)]
)
def test_block_split_is_floor_of_fractions(u, total):
    # method §4: W = 1.67 U split into floor(0.167W), floor(0.333W), floor(0.5W); the totals are
    # those listed in docs/dip.md, worked out by hand
    w = 1.67 * u
    expected = (math.floor(0.167 * w), math.floor(0.333 * w), math.floor(0.5 * w))
    assert sum(expected) == total
    net = MultiResUNet(in_channels=4, widths=(u,))
    # the stem's 3×3 convolutions, in the order they are chained (the 1×1 is the shortcut)
    chain = [m for m in net.stem.modules()
             if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert tuple(m.out_channels for m in chain) == expected
    assert [m.in_channels for m in chain] == [4, expected[0], expected[1]]
    with torch.no_grad():
        assert net.stem.eval()(torch.randn(1, 4, 8, 8)).shape == (1, total, 8, 8)


def test_default_parameter_count_matches_spec_and_paper():
    net = MultiResUNet()  # 512 input channels, U = 16..256, residual paths 16..128
    n = count_parameters(net)
    assert n == sum(p.numel() for p in net.parameters() if p.requires_grad)
    assert n == _spec_count(512, [16, 32, 64, 128, 256], [16, 32, 64, 128])
    assert 2.1e6 < n < 2.3e6  # the paper: "about 2.2 M parameters"


@pytest.mark.parametrize(
    "in_ch, widths, skips",
    [(8, (4, 8, 8, 16, 16), None), (3, (16, 32, 64), (0, 8)), (5, (8,), None)],
)
def test_configurable_sizes_match_formula(in_ch, widths, skips):
    net = MultiResUNet(in_channels=in_ch, widths=widths, skip_widths=skips)
    skip_list = list(widths[:-1] if skips is None else skips)
    # a zero-width residual path is dropped: its parameters are zero, not a 0-channel conv
    expected = _spec_count(in_ch, list(widths), skip_list)
    expected -= sum(_respath(0, 0) for s in skip_list if s == 0)
    assert count_parameters(net) == expected


def test_layers_follow_spec():
    net = MultiResUNet(in_channels=8, widths=(4, 8, 8, 16, 16))
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    down = [m for m in convs if m.stride == (2, 2)]
    assert len(down) == 4 and all(m.kernel_size == (3, 3) for m in down)
    relus = [m for m in net.modules() if isinstance(m, torch.nn.LeakyReLU)]
    assert relus and all(m.negative_slope == 0.2 for m in relus)
    assert net.head.kernel_size == (1, 1) and net.head.out_channels == 3
    # every conv but the last is followed by batch norm: one BN per conv, plus two per block
    # (concat, output) and one per residual path
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    n_blocks, n_paths = 2 * 5 - 1, 4
    assert n_bn == (len(convs) - 1) + 2 * n_blocks + n_paths


@pytest.mark.parametrize("size", [(37, 45), (17, 64), (64, 33), (16, 16), (5, 7)])
def test_odd_sizes_pad_and_crop(size):
    torch.manual_seed(0)
    net = MultiResUNet(in_channels=4, widths=(4, 8, 8, 16, 16))
    z = torch.randn(1, 4, *size)
    out = net(z)
    assert out.shape == (1, 3, *size)
    assert torch.all((out > 0) & (out < 1))  # sigmoid
    # the same as padding by hand (reflect at the bottom/right) and cropping the top-left
    ph, pw = net.padded_size(*size)
    assert ph % 16 == 0 and pw % 16 == 0 and ph >= 32 and pw >= 32
    if ph - size[0] < size[0] and pw - size[1] < size[1]:
        padded = torch.nn.functional.pad(z, (0, pw - size[1], 0, ph - size[0]), mode="reflect")
        torch.testing.assert_close(net(padded)[..., : size[0], : size[1]], out)


def test_every_parameter_gets_a_gradient():
    net = MultiResUNet(in_channels=4, widths=(4, 8, 8))
    net(torch.randn(1, 4, 24, 20)).mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing


def test_bad_widths_are_rejected():
    with pytest.raises(ValueError, match="skip"):
        MultiResUNet(widths=(16, 32), skip_widths=(8, 8))
    with pytest.raises(ValueError, match="empty branch"):
        MultiResUNet(widths=(1, 8))


# --- DIPConfig ------------------------------------------------------------------------------
def test_config_json_round_trip_and_presets():
    for name in ("paper", "cpu", "tiny"):
        cfg = DIPConfig.preset(name)
        again = DIPConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
        assert again == cfg
    assert DIPConfig.preset("paper") == DIPConfig()
    assert DIPConfig().z_channels == 512 and DIPConfig().widths == (16, 32, 64, 128, 256)
    assert DIPConfig().residual_widths == (16, 32, 64, 128)
    assert DIPConfig.preset("tiny", seed=7).seed == 7


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"widths": ()}, "widths"),
        ({"skip_widths": (1, 2)}, "skip_widths"),
        ({"max_iter": 0}, "max_iter"),
        ({"lr": -1.0}, "lr"),
        ({"amp": "fp8"}, "amp"),
        ({"channels_last": "maybe"}, "channels_last"),
        ({"torch_threads": 0}, "torch_threads"),
    ],
)
def test_config_rejects_bad_values(bad, match):
    with pytest.raises(InputError, match=match):
        DIPConfig(**bad)


def test_config_rejects_unknown_keys_and_presets():
    with pytest.raises(InputError, match="unknown DIPConfig field"):
        DIPConfig.from_dict({"sed": 1})
    with pytest.raises(InputError, match="tiny"):
        DIPConfig.preset("huge")


def test_import_does_not_pull_in_torch():
    code = (
        "import sys, dippas_core, dippas_core.dip; from dippas_core.config import DIPConfig;"
        "DIPConfig.preset('cpu').to_dict(); assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_public_names():
    import dippas_core
    import dippas_core.config
    import dippas_core.dip as dip
    from dippas_core.dip import inversion, network

    # the lazy names are the objects their modules define, listed by dir() and __all__
    assert dip.invert is inversion.invert and dip.run_to_end is inversion.run_to_end
    assert dip.Step is inversion.Step and dip.InversionResult is inversion.InversionResult
    assert dip.MultiResUNet is MultiResUNet is network.MultiResUNet
    assert DIPConfig is dippas_core.DIPConfig is dippas_core.config.DIPConfig
    assert dippas_core.invert is inversion.invert
    assert {"invert", "Step", "MultiResUNet"} <= set(dir(dip)) & set(dip.__all__)
    with pytest.raises(AttributeError, match="no_such_name"):
        dip.no_such_name  # noqa: B018


def _fit_saturated_head(output: str, steps: int = 60) -> torch.Tensor:
    """Fit a small generator whose blue output unit starts far past the sigmoid's knee (the
    stuck blue pixels of issue 22's demo) to a mid-grey target; return its final output."""
    torch.manual_seed(0)
    net = MultiResUNet(in_channels=4, widths=(4, 8), output=output)
    with torch.no_grad():
        net.head.bias[2] = 12.0 if output == "sigmoid" else 2.0  # both: blue at the top
    z = torch.randn(1, 4, 16, 16)
    target = torch.full((1, 3, 16, 16), 0.4)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, amsgrad=True)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(z), target).backward()
        opt.step()
    with torch.no_grad():
        return net(z).clamp(0, 1)


def test_a_saturated_output_unit_stays_stuck_with_the_sigmoid_not_with_the_linear_output():
    stuck = _fit_saturated_head("sigmoid")
    assert stuck[0, 2].min() > 0.99  # no gradient through a saturated sigmoid: still white
    assert (stuck[0, :2] - 0.4).abs().max() < 0.1  # the other channels did learn
    free = _fit_saturated_head("linear")
    assert (free - 0.4).abs().max() < 0.1  # the blue channel came back to the target


def test_zero_head_starts_flat_and_the_upsampling_options_build():
    z = torch.randn(1, 3, 32, 32)
    flat = MultiResUNet(in_channels=3, widths=(4, 8, 8), output="linear", zero_head=True)
    assert torch.equal(flat(z), torch.full((1, 3, 32, 32), 0.5))
    modes = {}
    for up in ("nearest", "bilinear", "bilinear-top"):
        net = MultiResUNet(in_channels=3, widths=(4, 8, 8, 8), upsample=up)
        assert net(z).shape == (1, 3, 32, 32)
        modes[up] = [net.inner.upsample, net.inner.inner.upsample, net.inner.inner.inner.upsample]
    # top first: only the way into the full-resolution scale is bilinear in "bilinear-top"
    assert modes == {"nearest": ["nearest"] * 3, "bilinear": ["bilinear"] * 3,
                     "bilinear-top": ["bilinear", "nearest", "nearest"]}
    from dippas_core.config import dip as dip_config
    from dippas_core.dip import network

    assert dip_config.UPSAMPLING == network.UPSAMPLING  # the config's copy, without torch
    with pytest.raises(ValueError, match="upsample"):
        MultiResUNet(widths=(4, 8), upsample="cubic")
    with pytest.raises(ValueError, match="output"):
        MultiResUNet(widths=(4, 8), output="tanh")
