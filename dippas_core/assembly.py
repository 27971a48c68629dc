"""Assembly (method §5): per block, rank the snapshots by their block NCC and average the best L.

The NCC of every snapshot on every B×B block comes from the per-tile sums recorded while the DIP ran
(:class:`~dippas_core.snapshots.TileSums`), so no residual is recomputed and any (B, L, tau) is
re-assembled in well under a second; only the L chosen snapshots' pixels of each block are read from
the on-disk store.  :func:`assemble_direct` is the slow, literal implementation (a residual per
snapshot), kept as the test oracle and the benchmark's baseline.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import MAX_DEVIATION, AssemblyParams
from .errors import InputError
from .run import RunDirectory
from .snapshots import SCALE, block_ncc_from_sums, block_projection_from_sums

__all__ = [
    "AssemblyResult",
    "NoSnapshotsError",
    "assemble",
    "assemble_direct",
    "rank_snapshots",
]

#: Most bytes of snapshot pixels gathered at once while averaging a block (keeps peak RAM low).
_GATHER_BYTES = 48 * 2**20
#: Bytes of snapshot rows read between two unmappings of the store's pages (see ``assemble``).
_RELEASE_BYTES = 16 * 2**20


class NoSnapshotsError(InputError):
    """The run has no snapshot to assemble (the inversion never reached the recording threshold,
    or just began)."""


@dataclass
class AssemblyResult:
    """The anonymized image and how it was made.

    Attributes
    ----------
    image
        uint8 H×W×3 (rounded), or float32 0..255 when assembled with ``dtype="float32"``.
    choice
        Bh×Bw×L' int: the store indices of the snapshots averaged on each block, best ranked first
        (L' = min(L, number of candidates)).
    choice_ncc
        Bh×Bw×L' float64: those snapshots' NCC on that block (from the tile sums).
    candidates
        Store indices of the snapshots that passed the PSNR filter.
    params
        B, L, tau, the PSNR threshold actually used, counts and timing (JSON-able).
    """

    image: np.ndarray
    choice: np.ndarray
    choice_ncc: np.ndarray
    candidates: np.ndarray
    params: dict[str, Any]
    reference: np.ndarray = field(repr=False)
    sigma: float = 5.0
    _ncc_map: np.ndarray | None = field(default=None, repr=False)

    @property
    def block(self) -> int:
        return int(self.params["B"])

    @property
    def ncc_map(self) -> np.ndarray:
        """Block-NCC map (Bh×Bw) of the assembled image, measured on its own residual.

        Computed on first access (one residual, ~0.1–0.3 s at 512×512), then cached.
        """
        if self._ncc_map is None:
            t0 = time.perf_counter()
            self._ncc_map = measure_block_ncc(self.image, self.reference, self.block, self.sigma)
            self.params["ncc_map_s"] = time.perf_counter() - t0
        return self._ncc_map


def measure_block_ncc(
    image: np.ndarray,
    P: np.ndarray,
    B: int,
    sigma: float = 5.0,
    *,
    residual_: np.ndarray | None = None,
) -> np.ndarray:
    """Block NCC (method §3) of ``image`` against ``P`` on B×B blocks (edge blocks smaller).

    ``residual_``: the image's residual when already computed.
    """
    from .correlation import block_ncc
    from .residual import residual

    img = np.asarray(image, dtype=np.float32)
    w = residual(img, sigma) if residual_ is None else residual_
    return block_ncc(w, img, P, int(B))


def _check_params(run: RunDirectory, B: Any, L: Any, tau: Any, rule: str = "paper"
                  ) -> AssemblyParams:
    """B, L, tau, rule (or an :class:`AssemblyParams` as ``B``) checked against the run."""
    return AssemblyParams.coerce(B, L, tau, rule).fitted(run.shape, run.tile, run.record_psnr)


def _candidates(run: RunDirectory, tau: float) -> tuple[np.ndarray, float]:
    n = run.refresh()
    if n == 0:
        hist_best = None
        try:
            psnr = run.history()["psnr"]
            hist_best = float(psnr.max()) if psnr.size else None
        except (OSError, ValueError):
            pass
        tau_rec = run.record_psnr
        why = (
            f"the best PSNR reached was {hist_best:.2f} dB, below the recording threshold "
            f"record_psnr {tau_rec:g} dB"
            if hist_best is not None and tau_rec is not None and hist_best < tau_rec
            else "nothing was recorded yet"
        )
        raise NoSnapshotsError(f"run {run.path} has no snapshot to assemble: {why}")
    psnr = run.snapshots.psnrs[:n]
    if not np.isfinite(psnr).all():  # a damaged index: NaN passes no threshold, nothing'd be kept
        from .run import DamagedRunError

        raise DamagedRunError(run.path, f"{run.snapshots.INDEX} records non-finite PSNRs")
    threshold = min(tau, float(psnr.max()))
    return np.flatnonzero(psnr >= threshold), threshold


def rank_snapshots(
    ncc: np.ndarray, iterations: np.ndarray, first: int | None = None
) -> np.ndarray:
    """Order of method §5 along the last axis of ``ncc`` (…×n): indices into that axis.

    First the snapshots with negative NCC by increasing |NCC|, then those with NCC >= 0 by
    increasing NCC; ties go to the earlier iteration (a stable lexicographic sort).  With
    ``first``, only the ``first`` best-ranked (…×first), found without sorting all n.
    """
    ncc = np.asarray(ncc)
    it = np.broadcast_to(np.asarray(iterations), ncc.shape)
    n = ncc.shape[-1]
    if first is None or 4 * first >= n:
        order = np.lexsort((it, np.abs(ncc), ncc >= 0), axis=-1)
        return order if first is None else order[..., :first]
    # one float key with the same order (|NCC| <= 1, non-negatives shifted past every negative);
    # equal NCCs give equal keys, so ties are still settled by the iteration below
    key = np.abs(ncc) + 4.0 * (ncc >= 0)
    kth = np.partition(key, first - 1, axis=-1)[..., first - 1 : first]
    m = int((key <= kth).sum(axis=-1).max())  # ≥ first: every tie at the boundary is kept
    sel = np.argpartition(key, m - 1, axis=-1)[..., :m] if m < n else np.indices(key.shape)[-1]
    sub = np.lexsort(
        (np.take_along_axis(it, sel, -1), np.take_along_axis(key, sel, -1)), axis=-1
    )
    return np.take_along_axis(sel, sub[..., :first], -1)


def _used(order: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Bh×Bw×L' mask of the ranked slots each block averages (its first ``counts`` ones)."""
    return np.arange(order.shape[-1]) < counts[..., None]


def _block_fidelity(run: RunDirectory, cand: np.ndarray, step_b: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Each candidate's PSNR and largest ``|Δ|`` (levels) on each block: two Bh×Bw×n arrays.

    One pass over the candidates' stored frames, a bounded number at a time.
    """
    from .io import to_float255

    h, w = run.shape
    photo = to_float255(run.photo).astype(np.float32)
    rows, cols = _block_edges(h, step_b), _block_edges(w, step_b)
    sse = np.empty((len(rows), len(cols), cand.size))
    dev = np.empty_like(sse)
    per = max(1, _GATHER_BYTES // (h * w * 12))
    with run.snapshots.mapped() as (frames, release):
        for s in range(0, cand.size, per):
            part = cand[s : s + per]
            d = frames[np.sort(part)].astype(np.float32) / np.float32(SCALE) - photo
            back = np.argsort(np.argsort(part))  # the sorted read back in candidate order
            d = d[back]
            for by, (y0, y1) in enumerate(rows):
                for bx, (x0, x1) in enumerate(cols):
                    blk = d[:, y0:y1, x0:x1]
                    sse[by, bx, s : s + part.size] = np.square(blk, dtype=np.float64).mean(
                        axis=(1, 2, 3)
                    )
                    dev[by, bx, s : s + part.size] = np.abs(blk).max(axis=(1, 2, 3))
            release()
    with np.errstate(divide="ignore"):
        psnr = 10.0 * np.log10(255.0**2 / sse)
    return psnr, dev


def _rank_bounded(
    score: np.ndarray,
    iterations: np.ndarray,
    block_psnr: np.ndarray,
    block_dev: np.ndarray,
    tau: float,
    L: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The bounded rule's order (Bh×Bw×L'), how many of it each block averages, and the blocks
    where no candidate kept the bound.

    Within the bound (block PSNR >= ``tau``, no pixel beyond :data:`MAX_DEVIATION`), the order of
    method §5 on ``score``; a block where none is within it takes its one best candidate by
    block PSNR among those without a far pixel (else among all).
    """
    inside = (block_psnr >= tau) & (block_dev <= MAX_DEVIATION)
    n = score.shape[-1]
    it = np.broadcast_to(iterations, score.shape)
    order = np.lexsort((it, np.abs(score), score >= 0, ~inside), axis=-1)
    n_use = min(L, n)
    order = order[..., :n_use]
    counts = np.minimum(inside.sum(axis=-1), n_use)
    fallback = counts == 0
    if fallback.any():
        near = block_dev <= MAX_DEVIATION
        best = np.argmax(np.where(near.any(-1, keepdims=True) & ~near, -np.inf, block_psnr), -1)
        order[fallback, 0] = best[fallback]
        counts[fallback] = 1
    return order, counts, fallback


def _finish(mean: np.ndarray, dtype: str) -> np.ndarray:
    """float64 0..255 mean → uint8 (rounded, never truncated) or float32."""
    from .io import to_uint8

    return to_uint8(mean) if dtype == "uint8" else mean.astype(np.float32)


def _block_edges(size: int, B: int) -> list[tuple[int, int]]:
    return [(s, min(s + B, size)) for s in range(0, size, B)]


def _rank(
    run: RunDirectory, fitted: AssemblyParams, cand: np.ndarray, threshold: float, step_b: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """Each block's candidates in the order of the assembly's rule (method §5, or the bounded
    rule): the order, how many of them each block averages, the blocks outside the bound (None
    under method §5) and the candidates' block NCC (Bh×Bw×n)."""
    iterations = run.snapshots.iterations[cand]
    tiles_per_block = step_b // run.tile if fitted.B % run.tile == 0 else max(run.tile_sums.grid)
    sums = run.tile_sums.array()[cand]
    ncc = np.moveaxis(block_ncc_from_sums(sums, tiles_per_block), 0, -1)  # Bh×Bw×n
    if fitted.rule == "bounded":
        score = np.moveaxis(block_projection_from_sums(sums, tiles_per_block), 0, -1)
        block_psnr, block_dev = _block_fidelity(run, cand, step_b)
        order, counts, fallback = _rank_bounded(
            score, iterations, block_psnr, block_dev, threshold, fitted.L
        )
        return order, counts, fallback, ncc
    n_use = min(fitted.L, cand.size)
    order = rank_snapshots(ncc, iterations, n_use)
    return order, np.full(order.shape[:2], n_use), None, ncc


def _average(run: RunDirectory, choice: np.ndarray, step_b: int) -> np.ndarray:
    """The mean of each block's chosen snapshots (``choice``, -1: none), float64 0..255: an
    exact integer sum of the stored values, read a bounded number of bytes at a time."""
    h, w = run.shape
    out = np.empty((h, w, 3), np.float64)  # rounded from float64: exact at .5 ties
    with run.snapshots.mapped() as (frames, release):
        touched = 0
        for by, (y0, y1) in enumerate(_block_edges(h, step_b)):
            for bx, (x0, x1) in enumerate(_block_edges(w, step_b)):
                idx = np.sort(choice[by, bx][choice[by, bx] >= 0])  # sequential reads
                # frames per gather: bounded in bytes, and < 65537 so a uint32 sum cannot overflow
                per = min(65536, max(1, _GATHER_BYTES // ((y1 - y0) * (x1 - x0) * 6)))
                acc = np.zeros((y1 - y0, x1 - x0, 3), np.uint64)  # exact sum of uint16
                for s in range(0, idx.size, per):
                    part = idx[s : s + per]
                    acc += frames[part, y0:y1, x0:x1].sum(axis=0, dtype=np.uint32)
                    # the pages a read maps (whole rows, or more: the kernel may map a large
                    # page-cache folio at once) count as this process's memory: unmap them
                    # often so the peak stays near one block's worth
                    touched += part.size * (y1 - y0) * w * 6
                    if touched > _RELEASE_BYTES:
                        release()
                        touched = 0
                out[y0:y1, x0:x1] = acc / (SCALE * idx.size)
    return out


def assemble(
    run: RunDirectory | str | os.PathLike,
    B: int | AssemblyParams = 64,
    L: int = 10,
    tau: float | None = 38.0,
    *,
    dtype: str = "uint8",
) -> AssemblyResult:
    """Assemble the anonymized image from a run (method §5).

    Parameters
    ----------
    run
        A :class:`~dippas_core.run.RunDirectory` or its path (a run still recording works: the
        snapshots whose tile sums are on disk are used).
    B
        Block size in pixels: a multiple of the run's tile (32 by default), or at least the image
        size for a single block.  Edge blocks are smaller when the image is not a multiple of B.
        Or an :class:`AssemblyParams`, which carries L and tau too (``L`` and ``tau`` are then
        not read).
    L
        Number of best-ranked snapshots averaged per block (all of them when fewer).
    tau
        The assembly's PSNR threshold (dB): snapshots with PSNR >= min(tau, best PSNR reached)
        are candidates.  ``None``: the run's recording threshold (every recorded snapshot).
    dtype
        ``"uint8"`` (rounded) or ``"float32"`` (0..255, for 16-bit output).

    Returns
    -------
    AssemblyResult
        ``.ncc_map`` (the measured block NCC of the result) is computed on first access.

    Raises
    ------
    InputError
        B not a multiple of the tile, L < 1, tau not finite, unknown dtype.
    NoSnapshotsError
        The run holds no snapshot yet.
    """
    t0 = time.perf_counter()
    if not isinstance(run, RunDirectory):
        run = RunDirectory.open(run)
    fitted = _check_params(run, B, L, tau)
    B, L, tau = fitted.B, fitted.L, float(fitted.tau)
    if dtype not in ("uint8", "float32"):
        raise InputError(f"dtype must be 'uint8' or 'float32', got {dtype!r}")
    h, w = run.shape
    cand, threshold = _candidates(run, tau)
    step_b = B if B % run.tile == 0 else max(h, w)
    order, counts, fallback, ncc = _rank(run, fitted, cand, threshold, step_b)
    bounded = fitted.rule == "bounded"
    choice = np.where(_used(order, counts), cand[order], -1)
    choice_ncc = np.where(choice >= 0, np.take_along_axis(ncc, order, axis=-1), np.nan)
    t_rank = time.perf_counter()
    image = _finish(_average(run, choice, step_b), dtype)
    t_end = time.perf_counter()
    params = {
        "B": B,
        "L": L,
        "tau": tau,
        "rule": fitted.rule,
        "psnr_threshold": threshold,
        "tile": run.tile,
        "n_snapshots": int(run.n_ready),
        "n_candidates": int(cand.size),
        "n_averaged": int(counts.max()),
        "grid": list(choice.shape[:2]),
        "dtype": dtype,
        # blocks where no candidate kept the bound: their best block by PSNR stands in
        **({"blocks_outside_bound": int(fallback.sum())} if bounded else {}),
        "rank_s": t_rank - t0,
        "average_s": t_end - t_rank,
        "elapsed_s": t_end - t0,
    }
    return AssemblyResult(image=image, choice=choice, choice_ncc=choice_ncc, candidates=cand,
                          params=params, reference=run.reference, sigma=run.sigma)


def assemble_direct(
    run: RunDirectory | str | os.PathLike,
    B: int | AssemblyParams = 64,
    L: int = 10,
    tau: float | None = 38.0,
    *,
    dtype: str = "uint8",
) -> AssemblyResult:
    """Literal method §5, no tile sums: a residual per candidate, its block NCC, sort, average.

    Slow (what the published code does); the oracle for :func:`assemble` in tests and benchmarks.
    """
    from .correlation import block_ncc
    from .residual import residual

    if not isinstance(run, RunDirectory):
        run = RunDirectory.open(run)
    fitted = _check_params(run, B, L, tau)
    B, L, tau = fitted.B, fitted.L, float(fitted.tau)
    t0 = time.perf_counter()
    h, w = run.shape
    cand, threshold = _candidates(run, tau)
    iterations = run.snapshots.iterations
    P = run.reference
    step_b = B if B % run.tile == 0 else max(h, w)
    rows, cols = _block_edges(h, step_b), _block_edges(w, step_b)
    ncc = np.zeros((len(rows), len(cols), cand.size))
    for j, m in enumerate(cand):
        img = run.snapshots.read(int(m))
        ncc[..., j] = block_ncc(residual(img, run.sigma), img, P, step_b)
    n_use = min(L, cand.size)
    out = np.empty((h, w, 3), np.float64)
    choice = np.empty((len(rows), len(cols), n_use), np.int64)
    for by, (y0, y1) in enumerate(rows):
        for bx, (x0, x1) in enumerate(cols):
            v = ncc[by, bx]
            ranked = sorted(
                range(cand.size), key=lambda j: (v[j] >= 0, abs(v[j]), iterations[cand[j]])
            )
            chosen = [int(cand[j]) for j in ranked[:n_use]]
            choice[by, bx] = chosen
            # the mean of the stored values, exactly: integer sum of value×257, one division
            total = sum(run.snapshots.frames[m, y0:y1, x0:x1].astype(np.int64) for m in chosen)
            out[y0:y1, x0:x1] = total / (SCALE * len(chosen))
    image = _finish(out, dtype)
    params = {
        "B": B,
        "L": L,
        "tau": tau,
        "psnr_threshold": threshold,
        "n_candidates": int(cand.size),
        "n_averaged": int(n_use),
        "elapsed_s": time.perf_counter() - t0,
    }
    return AssemblyResult(
        image=image,
        choice=choice,
        choice_ncc=np.take_along_axis(ncc, np.searchsorted(cand, choice), -1),
        candidates=cand,
        params=params,
        reference=P,
        sigma=run.sigma,
    )
