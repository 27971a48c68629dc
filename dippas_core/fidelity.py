"""Does the anonymized image still look the same? Fidelity measures beside PSNR (method §3).

PSNR averages the error over the whole image, so it cannot see a few stuck pixels, a tint that
changes from block to block, or a checkerboard.  :func:`fidelity` measures each of those on the
difference ``Δ = output − photo`` (0..255 scale):

- ``ssim``: scikit-image's structural similarity (7×7 windows, data range 255, colour channels
  averaged);
- ``max_abs``: the largest ``|Δ|`` of any pixel and channel;
- ``share_off``: the share of pixels with some channel off by more than 20 levels;
- ``colour_shift``: the largest ``|mean Δ|`` of one channel over any 16×16 window (a local tint);
- ``seam_ratio``: the mean jump of ``Δ`` between neighbouring pixels across the assembly's block
  and tile edges, over the same jump across the other lines of the same phase of the 16-pixel
  JPEG grid (1 when the edges are invisible);
- ``checkerboard``: how concentrated ``Δ``'s energy is near the Nyquist frequencies, against a
  flat spectrum, in the worst 64×64 window of a grid half a window apart (about 1 for noise;
  well above: a pixel-period pattern such as a checkerboard) — and where the photo's own fine
  detail is itself concentrated there (fine regular texture, a lattice), against that: a change
  that follows the photo's own spectrum is not a pattern the anonymizer added.

:data:`BARS` are the limits an output of the default preset must stay within
(docs/method.md#fidelity); :meth:`Fidelity.failures` names the ones it breaks.  :func:`describe`
says a report's fidelity section in one line (the CLI, the batch, the viewer).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._validation import as_image
from .config import MAX_DEVIATION
from .errors import InputError, ShapeMismatchError

__all__ = [
    "BARS",
    "CHECKER_WINDOW",
    "FIT_MARGIN",
    "COLUMNS",
    "MEASURES",
    "OFF_LEVELS",
    "SHIFT_WINDOW",
    "Fidelity",
    "bar_names",
    "bars_for",
    "checker_reference",
    "checker_windows",
    "checkerboard_energy",
    "colour_shift",
    "describe",
    "fidelity",
    "grid_lines",
    "nyquist_band",
    "seam_ratio",
    "share_off",
    "ssim",
    "window_starts",
]

#: Levels (0..255) beyond which a pixel counts as visibly off (``share_off``).
OFF_LEVELS = 20.0
#: Side of the windows whose mean colour must not move (``colour_shift``).
SHIFT_WINDOW = 16
#: Side of the windows ``checkerboard`` compares spectra in.
CHECKER_WINDOW = 64
#: The photo's own fine detail that ``checkerboard`` holds a change against: the photo less its
#: Gaussian low band of this σ (pixels) ...
CHECKER_REFERENCE_SIGMA = 1.0
#: ... counted where its Nyquist share is more than this many times white noise's: a 64×64
#: window of pure noise reads up to about 1.3, so a sky keeps the flat-spectrum measure.
CHECKER_REFERENCE_MARGIN = 1.5
#: RMS amplitude (levels) from which a pixel-period pattern counts in full: a fainter one counts
#: in proportion to its energy.  What a fit at 46 dB leaves on a sky (about ±0.5 level, one
#: 8-bit step) does not show, but as a share of so small a change it read 10; the patterns
#: judged visible (the bar of 4) were several levels strong.
CHECKER_MIN_AMPLITUDE = 2.0
#: Share of each bar the inversion itself keeps to (``require_fidelity``): the stitch mixes two
#: tiles' changes in their overlap, which can move a window's colour or spectrum a little past
#: what either tile had (a whole photo: shift 1.96 in a tile, 2.03 stitched).
FIT_MARGIN = 0.9
#: Period of a JPEG photo's own jumps (``seam_ratio``): its 8×8 blocks, and with 4:2:0 chroma (as
#: most cameras write) the 16×16 macroblocks, whose edges jump more than the other block edges.
JPEG_BLOCK = 16
#: Rows of a strip in which SSIM is computed (bounded memory on whole photos).
_SSIM_STRIP = 512
#: Half of skimage's default 7×7 SSIM window: the border its mean leaves out.
_SSIM_PAD = 3

#: The limits every output of the default preset must meet (issue 22): each key is a field of
#: :class:`Fidelity` and its bound (``psnr``: at least; every other: at most).
BARS: dict[str, float] = {
    "psnr": 38.0,
    "max_abs": MAX_DEVIATION,
    "share_off": 0.0005,
    "colour_shift": 2.0,
    "seam_ratio": 1.25,
    # judged by eye on whole photos and crops (docs/eval/2026-12-05-whole-photos.md): lines or
    # a grid at the pixel period show at 100 % from about 4 on; noise-like changes stay near 1
    "checkerboard": 4.0,
}
_AT_LEAST = ("psnr", "ssim")


def bars_for(tau: float | None) -> dict[str, float]:
    """:data:`BARS` for a run assembled at ``tau`` dB: a preset whose own threshold is below
    38 dB (``tiny``) is held to its threshold, every other bar stays (issue 22)."""
    if tau is None or not math.isfinite(float(tau)):
        return dict(BARS)
    return {**BARS, "psnr": min(BARS["psnr"], float(tau))}


@dataclass(frozen=True)
class Fidelity:
    """The fidelity measures of one output against its photo (module docstring).

    ``seam_ratio`` is ``None`` when the image has no block or tile edge inside it.
    """

    psnr: float
    ssim: float
    max_abs: float
    share_off: float
    colour_shift: float
    seam_ratio: float | None
    checkerboard: float

    def to_dict(self) -> dict[str, Any]:
        """Plain floats (``inf`` PSNR of an unchanged image kept as ``None``: JSON has no inf)."""
        out = dataclasses.asdict(self)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in out.items()}

    def failures(self, bars: dict[str, float] | None = None) -> list[str]:
        """The bars this output breaks, each as ``"name value (bar)"``; empty when it meets all."""
        out = []
        for name, bound in (BARS if bars is None else bars).items():
            value = getattr(self, name)
            if value is None:
                continue
            ok = value >= bound if name in _AT_LEAST else value <= bound
            if not ok:
                sign = "<" if name in _AT_LEAST else ">"
                out.append(f"{name} {value:.4g} {sign} {bound:g}")
        return out


#: The measures beside PSNR, in the order reports and tables show them.
MEASURES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Fidelity) if f.name != "psnr")
#: The columns a table gives an output's fidelity beside its PSNR: the measures and the bars it
#: breaks (:meth:`Fidelity.failures`).
COLUMNS: tuple[str, ...] = (*MEASURES, "bars_failed")


def bar_names(failures: Iterable[str]) -> str:
    """The names of the bars in :meth:`Fidelity.failures`' list, comma-separated (a short cell)."""
    return ",".join(str(f).split()[0] for f in failures)


def _pair(photo: Any, output: Any) -> tuple[np.ndarray, np.ndarray]:
    a = as_image(photo, "photo")
    b = as_image(output, "output")
    if a.shape != b.shape:
        raise ShapeMismatchError(
            f"output has shape {b.shape} but the photo has {a.shape}: fidelity compares an "
            "output with the photo it was made from"
        )
    return a, b


def _delta(photo: np.ndarray, output: np.ndarray) -> np.ndarray:
    d = output.astype(np.float32) - photo.astype(np.float32)
    return d if d.ndim == 3 else d[..., None]


def share_off(delta: np.ndarray, levels: float = OFF_LEVELS) -> float:
    """Share of pixels with some channel of ``delta`` (H×W×C) beyond ``levels`` in magnitude."""
    off = (np.abs(delta) > levels).any(axis=-1)
    return float(off.mean())


def colour_shift(delta: np.ndarray, window: int = SHIFT_WINDOW) -> float:
    """Largest ``|mean of one channel of delta|`` over every ``window``×``window`` window.

    Every window position fully inside the image counts (a sliding window); an image smaller
    than the window is one window.  Sums in float64 from an integral image: exact to rounding.
    """
    h, w = delta.shape[:2]
    wy, wx = min(window, h), min(window, w)
    worst = 0.0
    s = np.zeros((h + 1, w + 1), np.float64)
    for c in range(delta.shape[2]):  # one channel at a time: a whole photo stays cheap
        np.cumsum(np.cumsum(delta[..., c], axis=0, dtype=np.float64), axis=1, out=s[1:, 1:])
        box = s[wy:, wx:] - s[:-wy, wx:] - s[wy:, :-wx] + s[:-wy, :-wx]
        worst = max(worst, float(np.abs(box).max()))
    return worst / (wy * wx)


def grid_lines(
    shape: Sequence[int],
    block: int | None,
    tiles: Iterable[tuple[int, int, int, int]] | None = None,
) -> tuple[list[int], list[int]]:
    """Rows and columns of the edges an assembly may show: block edges and tile edges.

    ``tiles``: each tile's ``(y, x, h, w)`` (default: the whole image as one tile); the block
    grid of side ``block`` starts at each tile's corner.  A line at ``r`` lies between rows
    ``r − 1`` and ``r``; the image's own border is no line.
    """
    h, w = int(shape[0]), int(shape[1])
    boxes = [(0, 0, h, w)] if tiles is None else [tuple(int(v) for v in t) for t in tiles]
    rows: set[int] = set()
    cols: set[int] = set()
    for y, x, th, tw in boxes:
        rows.update((y, y + th))
        cols.update((x, x + tw))
        if block:
            rows.update(range(y + block, y + th, block))
            cols.update(range(x + block, x + tw, block))
    return sorted(r for r in rows if 0 < r < h), sorted(c for c in cols if 0 < c < w)


def _line_jumps(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``|x|`` jump across each column line 1..w−1 and each row line 1..h−1 (over the
    line's length and the channels) of an H×W or H×W×C image of any real type."""
    x = np.asarray(x, np.float32)  # an unsigned image's differences would wrap around
    x = x if x.ndim == 3 else x[..., None]
    h, w, channels = x.shape
    jumps = (np.zeros(w - 1), np.zeros(h - 1))
    for c in range(channels):
        jumps[0][:] += np.abs(np.diff(x[..., c], axis=1)).mean(axis=0, dtype=np.float64)
        jumps[1][:] += np.abs(np.diff(x[..., c], axis=0)).mean(axis=1, dtype=np.float64)
    return jumps[0] / channels, jumps[1] / channels


def seam_ratio(
    delta: np.ndarray, rows: Sequence[int], cols: Sequence[int], period: int = JPEG_BLOCK,
    photo: np.ndarray | None = None,
) -> float | None:
    """Mean ``|Δ|`` jump across the given lines over the mean jump across the other lines of the
    same phase.

    The jump across the line at column ``c`` is ``mean |Δ[:, c] − Δ[:, c − 1]|`` over rows and
    channels (likewise for rows); both directions are pooled, each line weighted by its length.
    A JPEG photo has jumps of its own on its block grid (8×8 blocks, 16×16 macroblocks with
    4:2:0 chroma), on which the assembly's block and tile edges fall: so each seam line is
    compared with the other lines at the same position modulo ``period`` (16; ``period=1``: with
    every other line).  With ``photo``, a seam line along which the photo itself jumps ``p``
    times as much as across those other lines (an edge of the picture lying on the line) has its
    jump divided by ``max(1, p)``: an output that follows that edge a little softer changes most
    there without any seam.
    ``None`` when no line lies inside the image (one block, one tile) or none to compare with.
    """
    jumps = _line_jumps(delta)
    own = _line_jumps(photo) if photo is not None else None
    seam_sum = seam_len = off_sum = off_len = 0.0
    for axis, (jump, lines, length) in enumerate(((jumps[0], cols, delta.shape[0]),
                                                  (jumps[1], rows, delta.shape[1]))):
        pos = np.arange(1, jump.size + 1)
        on = np.isin(pos, [v for v in lines if 0 < v < jump.size + 1])
        phases = np.unique(pos[on] % period)
        same = np.isin(pos % period, phases) & ~on
        if own is not None and same.any() and own[axis][same].mean() > 0:
            edge = own[axis][on] / own[axis][same].mean()
            jump = jump.copy()
            jump[on] /= np.maximum(1.0, edge)
        seam_sum += jump[on].sum() * length
        seam_len += on.sum() * length
        off_sum += jump[same].sum() * length
        off_len += same.sum() * length
    if seam_len == 0 or off_len == 0:
        return None
    seam, off = seam_sum / seam_len, off_sum / off_len
    if off == 0:
        return math.inf if seam > 0 else 1.0
    return float(seam / off)


def nyquist_band(n: int, m: int, radius: int) -> np.ndarray:
    """The n×m FFT bins (bool) within ``radius`` bins of the Nyquist points (½, ½), (½, 0) and
    (0, ½) cycles/pixel: where ``checkerboard`` looks for a pixel-period pattern."""
    fy = np.abs(np.fft.fftfreq(n) * n)  # distance in bins from 0 along each axis
    fx = np.abs(np.fft.fftfreq(m) * m)
    ny_y, ny_x = np.abs(fy - n / 2) <= radius, np.abs(fx - m / 2) <= radius
    zero_y, zero_x = fy <= radius, fx <= radius
    return (
        (ny_y[:, None] & ny_x[None, :])
        | (ny_y[:, None] & zero_x[None, :])
        | (zero_y[:, None] & ny_x[None, :])
    )


def _nyquist_share(x: np.ndarray, radius: int) -> float:
    """How much more of ``x``'s energy (n×m×C, Hann-tapered, mean removed) lies within
    ``radius`` bins of the three Nyquist points than a flat (white) spectrum would put there."""
    return _nyquist_stats(x, radius)[0]


def _nyquist_stats(x: np.ndarray, radius: int) -> tuple[float, float]:
    """:func:`_nyquist_share` of ``x`` and the mean square (levels², per pixel and channel) of
    its part within the band, as if untapered (Parseval, over the taper's mean square)."""
    n, m = x.shape[:2]
    taper = np.outer(np.hanning(n), np.hanning(m))
    spec = np.abs(np.fft.fft2((x - x.mean(axis=(0, 1))) * taper[..., None], axes=(0, 1))) ** 2
    total = spec.sum()
    if total == 0:
        return 0.0, 0.0
    band = nyquist_band(n, m, radius)
    in_band = spec[band].sum()
    channels = x.shape[2] if x.ndim == 3 else 1
    mean_square = in_band / ((n * m) ** 2 * channels * float(np.mean(taper**2)))
    return float(in_band / total / band.mean()), float(mean_square)


def _visible(share: float, band_mean_square: float, reference: float = 1.0) -> float:
    """A window's checkerboard: its Nyquist ``share`` over the photo's own ``reference``, the
    part above 1 counted in full only where the pattern beyond a flat spectrum's share has an
    amplitude of :data:`CHECKER_MIN_AMPLITUDE` or more (in proportion to its energy below)."""
    value = share / reference
    if value <= 1.0 or share <= 1.0:
        return value
    excess = band_mean_square * (1.0 - 1.0 / share)  # what lies there beyond a flat spectrum
    return 1.0 + (value - 1.0) * min(1.0, excess / CHECKER_MIN_AMPLITUDE**2)


def window_starts(size: int, window: int) -> list[int]:
    """Starts of the ``checkerboard`` windows along an axis of ``size`` pixels: every half
    window, the last one shifted to end at the border (one window when ``size <= window``).

    Half a window apart, a patch up to half a window wide lies whole inside some window
    wherever it falls: the measure does not depend on where a tile or a crop begins.
    """
    window = min(window, size)
    step = max(1, window // 2)
    return sorted({min(y, size - window) for y in range(0, max(1, size - window + step), step)})


def checker_windows(
    shape: tuple[int, ...], window: int = CHECKER_WINDOW
) -> tuple[list[tuple[int, int]], int, int, int]:
    """The ``checkerboard`` windows of an image of ``shape`` (H, W, …): their corners (rows of
    windows, then columns), their height and width, and the Nyquist band's radius in bins.  One
    definition for the report's measure, the photo's reference and the fit's device measure, so
    that a reference lines up with its window."""
    h, w = shape[:2]
    wy, wx = min(window, h), min(window, w)
    corners = [(y, x) for y in window_starts(h, wy) for x in window_starts(w, wx)]
    return corners, wy, wx, max(1, min(wy, wx) // 32)


def _white_share(n: int, m: int, radius: int, sigma: float) -> float:
    """The Nyquist share white noise has after the high-pass ``1 − G_σ`` (the Gaussian's transfer
    function on the n×m grid): what a photo's own share is measured against."""
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.fftfreq(m)[None, :]
    power = (1.0 - np.exp(-2.0 * np.pi**2 * sigma**2 * (fy**2 + fx**2))) ** 2
    band = nyquist_band(n, m, radius)
    return float(power[band].sum() / power.sum() / band.mean())


def checker_reference(photo: np.ndarray, window: int = CHECKER_WINDOW) -> np.ndarray:
    """Per ``checkerboard`` window (in :func:`checkerboard_energy`'s order), how concentrated the
    photo's own fine detail is near the Nyquist frequencies: ``max(1, r / 1.5)``.

    ``r``: the Nyquist share (as ``checkerboard`` measures a change's) of the photo less its
    Gaussian low band (σ :data:`CHECKER_REFERENCE_SIGMA`, mirrored borders), over the share white
    noise has after the same high-pass; 1.5 is :data:`CHECKER_REFERENCE_MARGIN`, above what
    noise alone reads in a window.  1 on skies, walls and most texture; about 2 where the photo
    itself has detail at the pixel period (a lattice, fine fabric: ``r`` about 3).
    """
    from scipy.ndimage import gaussian_filter

    a = np.asarray(photo)
    a = a if a.ndim == 3 else a[..., None]
    h, w = a.shape[:2]
    sigma = CHECKER_REFERENCE_SIGMA
    pad = int(3.0 * sigma + 0.5)  # the filter's reach (truncate 3): the window's own margin
    corners, wy, wx, radius = checker_windows(a.shape, window)
    white = _white_share(wy, wx, radius, sigma)
    shares = []
    for y, x in corners:
        # the window and its margin only (a whole photo is never copied as float64); at the
        # photo's border the margin ends there and the mirror is the photo's own
        y0, x0 = max(0, y - pad), max(0, x - pad)
        part = a[y0 : min(h, y + wy + pad), x0 : min(w, x + wx + pad)].astype(np.float64)
        high = part - gaussian_filter(part, (sigma, sigma, 0), mode="mirror", truncate=3.0)
        shares.append(_nyquist_share(high[y - y0 : y - y0 + wy, x - x0 : x - x0 + wx], radius))
    return np.maximum(1.0, np.asarray(shares) / white / CHECKER_REFERENCE_MARGIN)


def checkerboard_energy(delta: np.ndarray, window: int = CHECKER_WINDOW,
                        photo: np.ndarray | None = None) -> float:
    """The worst window's share of ``delta``'s energy near the Nyquist frequencies, over what a
    white (flat) spectrum would put there: about 1 for noise-like changes, well above 1 for a
    pixel-period pattern (a checkerboard, a grid of lines), below 1 for smooth changes.

    ``window``×``window`` windows half a window apart (:func:`window_starts`; an image smaller
    than a window is one window), each mean-free and tapered by a Hann window; the band is the
    bins within ``window / 32`` (at least 1) of (½, ½), (½, 0) and (0, ½) cycles/pixel.  A
    window where ``delta`` is constant counts 0.  With ``photo``, each window's share is divided
    by the photo's own there (:func:`checker_reference`): a change as concentrated near Nyquist
    as the photo's own fine detail is no pattern of the anonymizer's.  A share is a ratio, blind
    to how faint the change is: the part above 1 counts in full only where what lies in the band
    beyond a flat spectrum's share has an RMS amplitude of :data:`CHECKER_MIN_AMPLITUDE` (2
    levels) or more, in proportion to its energy below (``1 + (s − 1) · min(1, A² / 2²)``).
    """
    corners, wy, wx, radius = checker_windows(delta.shape, window)
    stats = [_nyquist_stats(delta[y : y + wy, x : x + wx].astype(np.float64), radius)
             for y, x in corners]
    refs = checker_reference(photo, window) if photo is not None else np.ones(len(corners))
    return float(max(_visible(s, ms, r) for (s, ms), r in zip(stats, refs, strict=True)))


def ssim(photo: np.ndarray, output: np.ndarray) -> float:
    """scikit-image's mean SSIM (7×7 uniform windows, data range 255; channels averaged).

    Computed in strips of rows, so a whole photo costs a few strips' worth of memory; the
    mean is over the same pixels as scikit-image's (its 3-pixel border left out).
    """
    from skimage.metrics import structural_similarity

    a = photo if photo.ndim == 3 else photo[..., None]
    b = output if output.ndim == 3 else output[..., None]
    h, w, c = a.shape
    if min(h, w) < 7:
        raise InputError(f"SSIM needs an image of at least 7×7 pixels, got {h}×{w}")
    total, count = 0.0, 0
    for y0 in range(_SSIM_PAD, h - _SSIM_PAD, _SSIM_STRIP):
        y1 = min(y0 + _SSIM_STRIP, h - _SSIM_PAD)
        lo, hi = y0 - _SSIM_PAD, y1 + _SSIM_PAD
        for ch in range(c):
            _, smap = structural_similarity(
                a[lo:hi, :, ch].astype(np.float64),
                b[lo:hi, :, ch].astype(np.float64),
                data_range=255.0,
                full=True,
            )
            inner = smap[_SSIM_PAD : _SSIM_PAD + (y1 - y0), _SSIM_PAD : w - _SSIM_PAD]
            total += float(inner.sum(dtype=np.float64))
            count += inner.size
    return total / count


def fidelity(
    photo: Any,
    output: Any,
    *,
    block: int | None = None,
    tiles: Iterable[tuple[int, int, int, int]] | None = None,
) -> Fidelity:
    """Every fidelity measure of ``output`` against ``photo`` (both H×W×3 or H×W, 0..255).

    Parameters
    ----------
    photo, output : array_like
        The original and the anonymized image, same shape, on the 0..255 scale (uint8 or float).
    block : int, optional
        The assembly's block side B: its edges inside each tile are seam lines.
    tiles : iterable of (y, x, h, w), optional
        The tiles a whole photo was cut into: their edges are seam lines too.

    Returns
    -------
    Fidelity
    """
    from .metrics import psnr

    a, b = _pair(photo, output)
    d = _delta(a, b)
    rows, cols = grid_lines(a.shape, block, tiles)
    return Fidelity(
        psnr=float(psnr(a, b)),
        ssim=ssim(a, b),
        max_abs=float(np.abs(d).max()),
        share_off=share_off(d),
        colour_shift=colour_shift(d),
        seam_ratio=seam_ratio(d, rows, cols, photo=a),
        checkerboard=checkerboard_energy(d, photo=a),
    )


def describe(section: Mapping[str, Any] | None, sep: str = ", ", verdict_sep: str = "; ") -> str:
    """A report's ``fidelity`` section (:meth:`Fidelity.to_dict` and ``bars_failed``) in one
    line a person reads: the measures beside PSNR (joined by ``sep``), then (after
    ``verdict_sep``) "all fidelity bars met" or the bars broken.  Empty when there is no section
    (a report made before fidelity was measured).
    """
    if not isinstance(section, Mapping) or section.get("ssim") is None:
        return ""

    def num(key: str, fmt: str, none: str = "n/a") -> str:
        value = section.get(key)
        return none if value is None else format(value, fmt)

    share = section.get("share_off")
    parts = [
        f"SSIM {num('ssim', '.4f')}",
        f"max |Δ| {num('max_abs', '.0f')} levels",
        f"{'n/a' if share is None else format(100 * share, '.3g')} % of pixels off by > "
        f"{OFF_LEVELS:g} levels",
        f"colour shift {num('colour_shift', '.2f')} levels",
        f"seam ratio {num('seam_ratio', '.2f', 'n/a (no block edge)')}",
        f"checkerboard {num('checkerboard', '.2f')}",
    ]
    broken = section.get("bars_failed")
    if broken is None:
        verdict = ""
    elif broken:
        verdict = verdict_sep + "bars broken: " + ", ".join(map(str, broken))
    else:
        verdict = verdict_sep + "all fidelity bars met"
    return sep.join(parts) + verdict
