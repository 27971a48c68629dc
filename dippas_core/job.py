"""One anonymization, prepared before any work: :func:`prepare` makes a :class:`PhotoJob`.

The pre-flight happens once, here, for the command line, the viewer and :func:`anonymize`: the
photo and fingerprint are checked (colour, same size), the region is cut, the tile plan made, the
assembly's B, L, tau checked against every tile's shape, and where the tiles run is chosen.  Its
cost comes from the one cost model (:mod:`dippas_core.cost`).  Running it
(:func:`dippas_core.pipeline.run_job`) gives an :class:`AnonymizeResult`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import AnonymizeConfig
from .errors import InputError

if TYPE_CHECKING:
    from .cost import CostEstimate
    from .execution import Execution
    from .fingerprint import Fingerprint
    from .report import AnonymizationReport
    from .tiling import TilePlan

__all__ = ["AnonymizeResult", "PhotoJob", "plan_region", "prepare"]


@dataclass(frozen=True)
class PhotoJob:
    """A checked anonymization, ready to run.

    Attributes
    ----------
    photo
        The photo (or its region) as given: uint8, uint16 or float 0..255, H×W×3.
    K
        The fingerprint over the same pixels (float32 H×W), None in blind mode (each tile's
        reference is then its own residual).
    fingerprint_info
        The fingerprint's metadata (camera, images, sigma, version), None in blind mode.
    config
        The :class:`~dippas_core.config.AnonymizeConfig`.
    plan
        The tiles covering the photo (one tile when it fits).
    region
        ``{"y", "x", "h", "w"}`` of the region cut from a larger photo, else None.
    execution
        Where the tiles run (:class:`~dippas_core.execution.Execution`).
    done_tiles
        The indices of the tiles a run folder already holds finished (a resume runs the others,
        wherever they lie in the plan), when one was named.
    """

    photo: np.ndarray = field(repr=False)
    K: np.ndarray | None = field(repr=False)
    fingerprint_info: dict[str, Any] | None
    config: AnonymizeConfig
    plan: TilePlan
    region: dict[str, int] | None
    execution: Execution
    done_tiles: frozenset[int] = frozenset()

    @property
    def mode(self) -> str:
        """``"aware"`` (a fingerprint was given) or ``"blind"``."""
        return "blind" if self.K is None else "aware"

    @property
    def tiled(self) -> bool:
        """Whether the photo is cut into several tiles."""
        return len(self.plan) > 1

    @property
    def n_done(self) -> int:
        """Tiles a run folder already holds finished."""
        return len(self.done_tiles)

    @property
    def n_todo(self) -> int:
        """Tiles still to run."""
        return max(0, len(self.plan) - self.n_done)

    def cost(self) -> CostEstimate:
        """The work of the run, from its plan alone (nothing is timed)."""
        from .cost import plan_cost

        return plan_cost(self.photo.shape, self.config, n_tiles=max(1, self.n_todo))

    def estimate(self) -> CostEstimate:
        """The time of the run: a few iterations timed at the tile size, each tile's iterations
        predicted from its content where the configuration allows (an expectation with a
        range), else counted at ``max_iter`` (an upper bound)."""
        from .cost import estimate_cost

        left = [t.index for t in self.plan.tiles if t.index not in self.done_tiles]
        return estimate_cost(self.photo.shape, self.config, n_tiles=max(1, self.n_todo),
                             photo=self.photo, tiles=left or None)


@dataclass
class AnonymizeResult:
    """What running a :class:`PhotoJob` gives.

    Attributes
    ----------
    image
        The anonymized photo: uint8 H×W×3 for 8-bit input, float32 0..255 otherwise (write it with
        ``io.write_image(..., bit_depth=16)``).
    report
        The :class:`~dippas_core.report.AnonymizationReport` (PSNR, NCC/PCE before and after,
        parameters, seed, timing, versions, device), read like a dict; its published part is
        what may travel with the image.
    maps
        ``block_ncc_before`` / ``block_ncc_after`` (Bh×Bw float64), kept out of the report.
    run_dir
        The run folder (``None`` when it was temporary and removed).
    assembly
        The :class:`~dippas_core.assembly.AssemblyResult` of a one-tile run (choices per block,
        timings).
    """

    image: np.ndarray
    report: AnonymizationReport
    maps: dict[str, np.ndarray]
    run_dir: Path | None
    assembly: Any = field(repr=False, default=None)


def plan_region(
    shape: tuple[int, ...], config: AnonymizeConfig, region: Any = None
) -> tuple[TilePlan, tuple[int, int, int, int] | None]:
    """The tile plan of a photo of ``shape`` (or of its ``region`` ``(y, x, h, w)``, checked)
    and the region; nothing is read."""
    from .tiling import check_region, plan_tiles

    cut = None if region is None else check_region(region, shape)
    h, w = (int(v) for v in (shape[:2] if cut is None else cut[2:]))
    return plan_tiles((h, w), config.tile_size, config.overlap), cut


def prepare(
    photo: np.ndarray,
    fingerprint: Fingerprint | np.ndarray | None,
    config: AnonymizeConfig | None = None,
    *,
    region: tuple[int, int, int, int] | None = None,
    scheduler: Any = None,
    workers: int | None = None,
    watched: bool = False,
    run_dir: str | Path | None = None,
) -> PhotoJob:
    """Check an anonymization and decide how it runs, before any work (see the module docstring).

    Parameters
    ----------
    photo
        H×W×3 photo of any size: uint8, uint16 or float on the 0..255 scale.  Never modified.
    fingerprint
        The camera's :class:`~dippas_core.fingerprint.Fingerprint` (or its ``K`` array), same
        H×W as the photo: PRNU-aware mode.  ``None``: PRNU-blind mode.
    config
        :class:`~dippas_core.config.AnonymizeConfig` (default: the ``paper`` preset).
    region
        ``(y, x, h, w)``: anonymize only that region (and the fingerprint's same region).
    scheduler, workers, watched
        Where the tiles run (:func:`~dippas_core.execution.choose_execution`): a Dask
        scheduler, a number of local workers, or the automatic choice (``watched``: the caller
        follows every DIP step, so the tiles stay in this process).
    run_dir
        The run folder the job will use, when named: the tiles it holds finished count as done
        (a resume) in the choice and the cost.

    Raises
    ------
    InputError, ShapeMismatchError
        Bad photo or fingerprint, fingerprint of another size, bad region, assembly parameters
        (B, L, tau) that do not fit the tiles, a bad ``scheduler``/``workers`` pair.
    """
    from .execution import IN_PROCESS, Execution, check_execution, choose_execution

    config = AnonymizeConfig() if config is None else config
    if not isinstance(config, AnonymizeConfig):
        raise InputError(f"config must be an AnonymizeConfig, got {type(config).__name__}")
    raw, K, info = _checked_inputs(photo, fingerprint)
    plan, cut = plan_region(raw.shape, config, region)
    if cut is not None:
        y, x, h, w = cut
        raw = raw[y : y + h, x : x + w]
        K = None if K is None else np.ascontiguousarray(K[y : y + h, x : x + w])
    # B, L and tau are only used after the inversions: refuse bad ones now, not hours later
    for shape in {(t.h, t.w) for t in plan.tiles}:
        config.assembly.fitted(shape, config.tile, config.dip.record_psnr)
    if len(plan) > 1:
        done = _tiles_done(run_dir)
        execution = choose_execution(
            config, len(plan) - len(done), scheduler=scheduler, workers=workers, watched=watched
        )
    else:  # (still a bad scheduler/workers pair is refused)
        check_execution(scheduler, workers)
        done, execution = frozenset(), Execution(IN_PROCESS, 1, "one tile: in this process")
    return PhotoJob(
        photo=raw,
        K=K,
        fingerprint_info=info,
        config=config,
        plan=plan,
        region=None if cut is None else dict(zip("yxhw", cut, strict=True)),
        execution=execution,
        done_tiles=done,
    )


def _checked_inputs(
    photo: np.ndarray, fingerprint: Fingerprint | np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any] | None]:
    """The photo as given (checked: a colour image), the fingerprint's K (checked: the photo's
    size; None blind) and its metadata."""
    from ._validation import as_image, check_same_size
    from .fingerprint import fingerprint_parts

    raw = np.asarray(photo)
    img = as_image(raw, "photo")
    if img.ndim != 3:
        raise InputError(
            f"photo must be a colour H×W×3 image, got shape {raw.shape}; stack a gray photo into "
            "three channels first"
        )
    K, info = fingerprint_parts(fingerprint)
    if K is not None:
        check_same_size(img, K, "photo", "fingerprint")
    return raw, K, info


def _tiles_done(run_dir: str | Path | None) -> frozenset[int]:
    from .run import PhotoRun

    return PhotoRun.done_indices(run_dir) if run_dir is not None else frozenset()
