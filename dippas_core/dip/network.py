"""The Multi-Resolution U-Net generator of DIPPAS (method §4, paper §3.4 and Fig. 5).

Encoder and decoder stages are MultiRes blocks (Ibtehaz & Rahman 2020); U-Net skip connections are
replaced by residual paths; stride-2 3×3 convolutions go down, nearest-neighbour ×2 goes up; every
convolution but the last is followed by batch norm and LeakyReLU(0.2); a 1×1 convolution and a
sigmoid make the RGB output in [0, 1].

With the paper's defaults (512 input channels, U = 16, 32, 64, 128, 256, residual paths of 16, 32,
64, 128 channels) the network has 2,219,718 parameters (the paper: "about 2.2 M").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MultiResUNet",
    "MultiResBlock",
    "ResidualPath",
    "multires_split",
    "count_parameters",
]

#: Slope of the LeakyReLU that follows every convolution but the last (paper §3.4).
NEGATIVE_SLOPE = 0.2
#: MultiRes block width factor: W = ALPHA * U (Ibtehaz & Rahman; method §4).
ALPHA = 1.67
#: How the last 1×1 convolution ``h`` becomes the image: ``"sigmoid"`` (the paper) squashes it
#: into (0, 1); ``"linear"`` is the sigmoid's tangent at 0, ``0.5 + h / 4``, and the caller
#: clips.  A sigmoid unit driven far past 0 or 1 gets no gradient and stays there (stuck pixels,
#: issue 22); a linear one always does, and near mid-grey both learn at the same pace.
OUTPUTS = ("linear", "sigmoid")
#: How a scale's output is brought up to the scale above: ``"nearest"`` (the paper) repeats each
#: value 2×2, which the decoder must then smooth (blocky grids on flat skies, issue 22; into the
#: full-resolution scale, row-period stripes along bright soft edges); ``"bilinear"``
#: interpolates (and fits fine texture far slower); ``"bilinear-top"``: bilinear into the
#: full-resolution scale only, nearest below (docs/eval/2026-12-06-stripes.md).
UPSAMPLING = ("bilinear", "nearest", "bilinear-top")


def multires_split(units: int, alpha: float = ALPHA) -> tuple[int, int, int]:
    """Channels of the three chained 3×3 convolutions of a MultiRes block with ``U = units``.

    ``W = alpha * U`` is split into ``floor(0.167 W)``, ``floor(0.333 W)``, ``floor(0.5 W)``; the
    block outputs their concatenation, so its width is the sum.
    """
    w = alpha * units
    return math.floor(0.167 * w), math.floor(0.333 * w), math.floor(0.5 * w)


def _conv_bn_act(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Sequential:
    """Convolution (zero 'same' padding, with bias as in the authors' code) + BN + LeakyReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2),
        nn.BatchNorm2d(c_out),
        nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True),
    )


class MultiResBlock(nn.Module):
    """Three chained 3×3 conv stages, concatenated and batch-normed, plus a 1×1 shortcut.

    ``out = BN(act(BN(cat(c1, c2, c3)) + shortcut(x)))`` where ``c2`` is computed from ``c1`` and
    ``c3`` from ``c2`` (a chain of 3×3 convolutions sees 3×3, 5×5 and 7×7 neighbourhoods).
    """

    def __init__(self, units: int, c_in: int, alpha: float = ALPHA) -> None:
        super().__init__()
        c1, c2, c3 = multires_split(units, alpha)
        if min(c1, c2, c3) < 1:
            raise ValueError(
                f"MultiRes block with U={units} has an empty branch ({c1}, {c2}, {c3})"
            )
        self.out_channels = c1 + c2 + c3
        self.shortcut = _conv_bn_act(c_in, self.out_channels, 1)
        self.conv1 = _conv_bn_act(c_in, c1, 3)
        self.conv2 = _conv_bn_act(c1, c2, 3)
        self.conv3 = _conv_bn_act(c2, c3, 3)
        self.bn_cat = nn.BatchNorm2d(self.out_channels)
        self.act = nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)
        self.bn_out = nn.BatchNorm2d(self.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv1(x)
        b = self.conv2(a)
        c = self.conv3(b)
        out = self.bn_cat(torch.cat([a, b, c], dim=1)) + self.shortcut(x)
        return self.bn_out(self.act(out))


class ResidualPath(nn.Module):
    """Residual path of length 1 replacing a U-Net skip: ``BN(act(conv3x3(E) + conv1x1(E)))``."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.out_channels = c_out
        self.conv3 = _conv_bn_act(c_in, c_out, 3)
        self.conv1 = _conv_bn_act(c_in, c_out, 1)
        self.act = nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.act(self.conv3(x) + self.conv1(x)))


class _Scale(nn.Module):
    """One scale below the top: down, encode, (deeper scales), up, concat the residual path, decode.

    ``x`` arrives from the scale above with ``c_in`` channels; the output has the width of the
    decoder MultiRes block of the scale above (``U = up_units``).
    """

    def __init__(
        self,
        c_in: int,
        widths: tuple[int, ...],
        skip_widths: tuple[int, ...],
        up_units: int,
        alpha: float,
        upsample: str = "nearest",
        inner_upsample: str | None = None,
    ) -> None:
        super().__init__()
        self.upsample = upsample
        inner_upsample = upsample if inner_upsample is None else inner_upsample
        self.down = _conv_bn_act(c_in, c_in, 3, stride=2)
        self.encode = MultiResBlock(widths[0], c_in, alpha)
        depth = self.encode.out_channels
        self.inner = (
            _Scale(depth, widths[1:], skip_widths[1:], widths[0], alpha, inner_upsample)
            if len(widths) > 1
            else None
        )
        if self.inner is not None:
            depth = self.inner.out_channels
        self.skip = ResidualPath(c_in, skip_widths[0]) if skip_widths[0] > 0 else None
        skip_channels = skip_widths[0] if self.skip is not None else 0
        self.decode = MultiResBlock(up_units, skip_channels + depth, alpha)
        self.out_channels = self.decode.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.encode(self.down(x))
        if self.inner is not None:
            y = self.inner(y)
        if self.upsample == "nearest":
            y = F.interpolate(y, scale_factor=2.0, mode="nearest")
        else:
            y = F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)
        if self.skip is not None:
            y = torch.cat([self.skip(x), y], dim=1)
        return self.decode(y)


class MultiResUNet(nn.Module):
    """Multi-Resolution U-Net: ``z`` (N×in_channels×H×W) → image (N×out_channels×H×W).

    Parameters
    ----------
    in_channels : int
        Channels of the input noise ``z`` (the paper: 512).
    out_channels : int
        3 for RGB.
    widths : sequence of int
        ``U`` of the MultiRes block at each scale, top to bottom; ``len(widths)`` scales, so
        ``len(widths) - 1`` stride-2 down-samplings.
    skip_widths : sequence of int, optional
        Residual-path channels at the ``len(widths) - 1`` upper scales (0 drops that path);
        default ``widths[:-1]``.
    alpha : float
        MultiRes width factor ``W = alpha * U``.
    output : {"linear", "sigmoid"}
        ``"sigmoid"``: the paper's output in (0, 1); ``"linear"``: the sigmoid's tangent at 0,
        ``0.5 + h / 4`` of the last convolution ``h``, unbounded (clip it to [0, 1] for an
        image; the loss sees it unclipped, so no output unit ever stops learning).
    upsample : {"nearest", "bilinear", "bilinear-top"}
        How each scale is brought up to the one above (:data:`UPSAMPLING`); ``"bilinear-top"``:
        bilinear into the full-resolution scale, nearest-neighbour below it.
    zero_head : bool
        Start the last 1×1 convolution at zero: the first output is flat mid-grey instead of
        the random texture of an untrained network (which the fit must first undo).

    Notes
    -----
    Any H×W is accepted: an input whose sides are not multiples of :attr:`multiple` is
    reflect-padded up to the next multiple and the output is cropped back. Callers that run many
    iterations on the same size save that copy by drawing ``z`` at :meth:`padded_size` directly and
    passing ``out_size``.
    """

    def __init__(
        self,
        in_channels: int = 512,
        out_channels: int = 3,
        widths: tuple[int, ...] | list[int] = (16, 32, 64, 128, 256),
        skip_widths: tuple[int, ...] | list[int] | None = None,
        alpha: float = ALPHA,
        output: str = "sigmoid",
        upsample: str = "nearest",
        zero_head: bool = False,
    ) -> None:
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        if upsample not in UPSAMPLING:
            raise ValueError(f"upsample must be one of {UPSAMPLING}, got {upsample!r}")
        self.output = output
        widths = tuple(int(w) for w in widths)
        skip_widths = tuple(int(s) for s in (widths[:-1] if skip_widths is None else skip_widths))
        if not widths:
            raise ValueError("widths must name at least one scale")
        if len(skip_widths) != len(widths) - 1:
            raise ValueError(
                f"{len(widths)} scales need {len(widths) - 1} skip widths, got {len(skip_widths)}"
            )
        self.in_channels = int(in_channels)
        self.widths = widths
        self.skip_widths = skip_widths
        self.stem = MultiResBlock(widths[0], self.in_channels, alpha)
        into_top, deeper = {"bilinear-top": ("bilinear", "nearest")}.get(upsample,
                                                                          (upsample, upsample))
        self.inner = (
            _Scale(self.stem.out_channels, widths[1:], skip_widths, widths[0], alpha, into_top,
                   deeper)
            if len(widths) > 1
            else None
        )
        top = self.inner.out_channels if self.inner is not None else self.stem.out_channels
        self.head = nn.Conv2d(top, out_channels, 1)
        if zero_head:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    @property
    def multiple(self) -> int:
        """Input sides are padded to multiples of this: ``2 ** (scales - 1)``."""
        return 2 ** (len(self.widths) - 1)

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        """The smallest size ``>= (height, width)`` the network takes without padding.

        A multiple of :attr:`multiple`, and at least twice it, so the coarsest scale has at least
        2×2 pixels (batch norm needs more than one value per channel).
        """
        m = self.multiple
        return max(-(-height // m) * m, 2 * m), max(-(-width // m) * m, 2 * m)

    def forward(self, z: torch.Tensor, out_size: tuple[int, int] | None = None) -> torch.Tensor:
        """Generate the image; crop it to ``out_size`` (default: the input's own H×W)."""
        h, w = z.shape[-2:]
        ph, pw = self.padded_size(h, w)
        if (ph, pw) != (h, w):
            pad = (0, pw - w, 0, ph - h)
            # reflect needs the pad to be smaller than the side; tiny inputs fall back to replicate
            mode = "reflect" if (pw - w) < w and (ph - h) < h else "replicate"
            z = F.pad(z, pad, mode=mode)
        x = self.stem(z)
        if self.inner is not None:
            x = self.inner(x)
        out = self.head(x)
        out = torch.sigmoid(out) if self.output == "sigmoid" else 0.5 + 0.25 * out
        oh, ow = out_size if out_size is not None else (h, w)
        if out.shape[-2:] != (oh, ow):
            out = out[..., :oh, :ow]
        return out


def count_parameters(module: nn.Module) -> int:
    """Number of trainable scalars in ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
