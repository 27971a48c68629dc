"""Does a photo carry a camera's fingerprint?  One function, :func:`attribute`, scores it.

Every caller (the pipeline's before/after report, ``dippas score``, the evaluation protocol and
the viewer's attribution panel) scores through :func:`attribute`, so a number means the same
wherever it is shown: the residual ``W`` of the photo (method §1), the NCC of ``W`` with
``I_gray · K`` (paper eq. 2, method §3), their PCE, and optionally the block-NCC map and the NCC
on a mask of pixels (the edges of the original, paper Table 4).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "PCE_ALIGNED",
    "PCE_DECISION_LEVEL",
    "PCE_PEAK_OVER_SHIFTS",
    "Attribution",
    "attribute",
    "pce_kind",
    "trace_warning",
]

#: The PCE decision level of forensic practice (Goljan, Fridrich & Filler 2009): a photo whose
#: PCE with a camera's fingerprint reaches 60 is attributed to that camera.  Taken aligned, 60 is
#: conservative (false alarms ≈ Q(√60) ≈ 5e-15).  Every entry point's default.
PCE_DECISION_LEVEL = 60.0

#: The two kinds of PCE a number can be, said beside it wherever it is shown: taken at zero shift
#: (the photo and the fingerprint aligned; under no match about chi-square with one degree of
#: freedom), or the largest peak over shifts (a search: on a no-match photo it is the largest of
#: many noise peaks, so it runs higher — a 128×128 crop gave 16.6 searched, −0.0 aligned).
PCE_ALIGNED = "aligned"
PCE_PEAK_OVER_SHIFTS = "peak over shifts"


def pce_kind(shift_range: int | tuple[int, int] | None) -> str:
    """:data:`PCE_ALIGNED` for a zero ``shift_range``, else :data:`PCE_PEAK_OVER_SHIFTS`.

    ``shift_range`` as :func:`attribute` takes it (None: every shift).
    """
    if shift_range is None:
        return PCE_PEAK_OVER_SHIFTS
    pair = (shift_range, shift_range) if np.isscalar(shift_range) else tuple(shift_range)
    return PCE_ALIGNED if all(int(r) == 0 for r in pair) else PCE_PEAK_OVER_SHIFTS


def trace_warning(
    pce_before: float, level: float = PCE_DECISION_LEVEL, n_pixels: int | None = None,
    what: str = "This region",
) -> str | None:
    """A warning when the photo (or region) carries no detectable trace of the camera at all.

    Anonymizing it, or scoring it "after", then proves nothing: the fingerprint was not
    detectable to begin with (the viewer and ``dippas anonymize`` say so before the work starts).
    None when the trace is there (aligned PCE at or above ``level``).  ``what`` names the
    pixels ("This region", "This photo").
    """
    if np.isfinite(pce_before) and pce_before >= level:
        return None
    size = f" ({n_pixels:,} pixels)" if n_pixels else ""
    return (
        f"{what}{size} carries no detectable trace of the camera even before anonymizing "
        f"(PCE ({PCE_ALIGNED}) {pce_before:.1f} < decision level {level:g}): a before/after "
        "comparison on it proves nothing. Choose a larger region (a few hundred pixels on a side, "
        "with texture but not saturated) or the whole photo."
    )


@dataclass(frozen=True)
class Attribution:
    """The scores of one photo against one fingerprint.

    Attributes
    ----------
    ncc : float
        NCC of the residual with ``I_gray · K`` (method §3), in [-1, 1].
    pce : float
        Their peak-to-correlation energy; NaN when not computed (``pce=False``).
    pce_peak : float
        The cross-correlation at the PCE peak (NaN when not computed).
    pce_shift : tuple of int
        (dy, dx) of that peak; ``(0, 0)`` when scored aligned.
    pce_kind : str
        :data:`PCE_ALIGNED` or :data:`PCE_PEAK_OVER_SHIFTS` (:func:`pce_kind`): shown with the PCE.
    residual : numpy.ndarray
        The photo's noise residual ``W`` (float32 H×W): pass it back as ``residual=`` to score
        the same photo against another fingerprint without computing it again.
    sigma : float
        Noise level the residual was computed with.
    block_size : int or None
        ``B`` of :attr:`block_ncc`, None when no map was asked for.
    block_ncc : numpy.ndarray or None
        NCC on B×B blocks (float64, edge blocks smaller), None when not asked for.
    ncc_edges : float or None
        NCC on the ``edges`` mask only (NaN for an empty mask), None when no mask was given.
    """

    ncc: float
    pce: float
    pce_peak: float
    pce_shift: tuple[int, int]
    residual: np.ndarray = field(repr=False)
    sigma: float
    pce_kind: str = PCE_ALIGNED
    block_size: int | None = None
    block_ncc: np.ndarray | None = field(default=None, repr=False)
    ncc_edges: float | None = None

    def scores(self) -> dict[str, float | str]:
        """The report's numbers: ``{"ncc", "pce", "pce_peak", "pce_kind"}``."""
        return {"ncc": self.ncc, "pce": self.pce, "pce_peak": self.pce_peak,
                "pce_kind": self.pce_kind}


def attribute(
    image: np.ndarray,
    K: np.ndarray,
    *,
    sigma: float = 5.0,
    residual: np.ndarray | None = None,
    block_size: int | None = None,
    edges: np.ndarray | None = None,
    pce: bool = True,
    pce_shift_range: int | tuple[int, int] | None = 0,
) -> Attribution:
    """Score ``image`` against the fingerprint ``K``: NCC, PCE, and optionally a block-NCC map.

    Parameters
    ----------
    image : numpy.ndarray
        H×W×3 or H×W: uint8, float on the 0..255 scale, or uint16 (brought to 0..255 first, so a
        16-bit photo is scored like its 8-bit version).
    K : numpy.ndarray
        H×W fingerprint (or, in blind mode, a reference residual).
    sigma : float
        Noise level of the residual (method §1).
    residual : numpy.ndarray, optional
        ``image``'s residual when already known (it is the expensive step).
    block_size : int, optional
        Also compute the NCC map on blocks of this side.
    edges : numpy.ndarray of bool, optional
        Also compute the NCC on these pixels only.
    pce : bool
        Compute the PCE (an FFT of the photo's size).
    pce_shift_range : int, (int, int) or None
        Shifts the PCE peak is searched over.  ``0`` (the default): the photo and the fingerprint
        are aligned, so only the zero shift counts; searching every shift (``None``) would turn
        the largest of H×W noise peaks into a "match".  At zero shift and no match, the PCE is
        about chi-square with one degree of freedom (a threshold ``t`` has a false-alarm rate of
        about ``Q(sqrt(t))``).

    Returns
    -------
    Attribution

    Raises
    ------
    dippas_core.errors.ShapeMismatchError
        The photo and the fingerprint differ in size.
    """
    from ._validation import as_image, as_plane, check_same_size
    from .correlation import block_ncc, ncc
    from .correlation import pce as pce_of
    from .edges import masked_ncc
    from .io import to_float255
    from .residual import residual as residual_of
    from .residual import rgb2gray

    img = as_image(to_float255(image), "photo")
    K = as_plane(K, "fingerprint")
    check_same_size(img, K, "photo", "fingerprint")
    W = residual_of(img, sigma) if residual is None else residual
    nan = float("nan")
    peak = pce_of(W, rgb2gray(img) * K, shift_range=pce_shift_range) if pce else None
    mask = None if edges is None else np.asarray(edges, dtype=bool)
    return Attribution(
        ncc=float(ncc(W, img, K)),
        pce=float(peak.pce) if peak else nan,
        pce_peak=float(peak.peak) if peak else nan,
        pce_shift=tuple(peak.shift) if peak else (0, 0),
        residual=W,
        sigma=float(sigma),
        pce_kind=pce_kind(pce_shift_range),
        block_size=None if block_size is None else int(block_size),
        block_ncc=None
        if block_size is None
        else np.asarray(block_ncc(W, img, K, int(block_size)), dtype=np.float64),
        ncc_edges=None
        if mask is None
        else (float(masked_ncc(W, img, K, mask)) if mask.any() else nan),
    )
