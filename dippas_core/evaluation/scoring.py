"""One method output scored against every camera: PSNR and fidelity, NCC, NCC on the edges, PCE."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError

if TYPE_CHECKING:
    from ..fidelity import Fidelity

__all__ = ["PCE_SHIFT_RANGE", "score_output"]

#: The evaluation's PCE is the peak over every shift (the paper's detector, prnu-python's):
#: ``params.json`` says so (``pce_kind``); ``dippas score`` and ``anonymize`` give the aligned one.
PCE_SHIFT_RANGE = None


def score_output(
    output: np.ndarray,
    original: np.ndarray,
    fingerprints: dict[str, np.ndarray],
    edges: np.ndarray,
    *,
    sigma: float = 5.0,
    pce: bool = True,
    block: int | None = None,
) -> tuple[Fidelity, dict[str, dict[str, float]]]:
    """Score one method output: PSNR and the fidelity measures against ``original`` and, per
    fingerprint (already cropped at the place of the crop), NCC, NCC on ``edges`` only, and PCE.

    ``output`` is rounded to 8 bits first (the image as saved).  The fidelity is
    :func:`dippas_core.fidelity.fidelity`'s (its ``psnr`` is the PSNR; ``block``: the assembly's
    block side, whose edges are the seams).  The scores are
    :func:`dippas_core.attribution.attribute`'s, the PCE peak searched over every shift (the
    paper's detector).
    """
    from ..attribution import attribute
    from ..fidelity import fidelity
    from ..io import to_uint8
    from ..residual import residual

    out8 = to_uint8(output)
    if out8.shape != np.asarray(original).shape:
        raise InputError(f"method output is {out8.shape}, the crop is {np.asarray(original).shape}")
    quality = fidelity(original, out8, block=block)
    W = residual(out8, sigma)
    scores: dict[str, dict[str, float]] = {}
    for cam, K in fingerprints.items():
        found = attribute(
            out8, K, sigma=sigma, residual=W, edges=edges, pce=pce, pce_shift_range=PCE_SHIFT_RANGE
        )
        scores[cam] = {"ncc": found.ncc, "ncc_edges": found.ncc_edges, "pce": found.pce}
    return quality, scores
