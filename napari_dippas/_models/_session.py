"""A recorded run opened for assembly: settings, outcome (scores before, after, report)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from psygnal import EventedModel

from ._scores import AttributionResult, attribute

__all__ = ["AssemblyOutcome", "AssemblySettings", "RunSession"]


class AssemblySettings(EventedModel):
    """Assembly parameters (method §5): block size ``B``, snapshots averaged ``L``, the PSNR
    threshold ``tau`` (:class:`dippas_core.config.AssemblyParams`' names)."""

    B: int = 64
    L: int = 10
    tau: float = 38.0



@dataclass(frozen=True)
class AssemblyOutcome:
    """One assembly of a run with its scores and the report exported beside the image.

    ``image`` is uint8, or float32 on the 0..255 scale for a 16-bit photo (``bit_depth`` 16: the
    writer saves it 16-bit).
    """

    image: np.ndarray
    before: AttributionResult
    after: AttributionResult
    psnr: float
    params: dict[str, Any]
    report: dict[str, Any]
    bit_depth: int = 8


class RunSession:
    """A recorded run opened for assembly: caches what does not depend on ``(B, L, tau)``.

    Parameters
    ----------
    run : dippas_core.run.RunDirectory or path
        The run (finished, cancelled, or still recording).
    """

    def __init__(self, run: Any) -> None:
        from dippas_core.run import RunDirectory

        self.run = run if isinstance(run, RunDirectory) else RunDirectory.open(run)
        self._photo_residual: np.ndarray | None = None
        self._before: dict[int, AttributionResult] = {}

    @property
    def path(self) -> str:
        """The run folder."""
        return str(self.run.path)

    @property
    def bit_depth(self) -> int:
        """16 for a 16-bit photo (assembled in float, saved 16-bit), else 8."""
        return 16 if np.asarray(self.run.photo).dtype == np.uint16 else 8

    def valid_block_sizes(self) -> list[int]:
        """Block sizes the run supports: multiples of its tile up to the image size."""
        tile = self.run.tile
        top = max(self.run.shape)
        sizes = [b for b in (32, 64, 128, 256, 512, 1024) if b % tile == 0 and b < top]
        whole = -(-top // tile) * tile
        return sorted(set(sizes + [whole]))

    def before(self, block_size: int) -> AttributionResult:
        """Scores of the photo against the run's reference (cached per ``B``)."""
        if block_size not in self._before:
            from dippas_core.io import to_float255
            from dippas_core.residual import residual

            photo = to_float255(self.run.photo)  # a 16-bit photo is scored on the 0..255 scale
            if self._photo_residual is None:
                self._photo_residual = residual(photo, self.run.sigma)
            self._before[block_size] = attribute(
                photo, self.run.reference, sigma=self.run.sigma, block_size=block_size,
                W=self._photo_residual,
            )
        return self._before[block_size]

    def assemble(self, settings: AssemblySettings) -> AssemblyOutcome:
        """Assemble with ``settings`` and score the result (one residual of the result)."""
        from dippas_core.assembly import assemble

        if self.run.status == "recording":  # re-read config.json: the run may have ended
            from dippas_core.run import RunDirectory

            self.run = RunDirectory.open(self.run.path)
        B = int(settings.B)
        bits = self.bit_depth
        # a 16-bit photo keeps its precision: assembled in float (as the CLI does), saved 16-bit
        result = assemble(
            self.run, B, int(settings.L), float(settings.tau),
            dtype="float32" if bits == 16 else "uint8",
        )
        before = self.before(B)
        after = attribute(result.image, self.run.reference, sigma=self.run.sigma, block_size=B)
        params = dict(result.params)
        report = self._report(result.image, params, before, after).with_(bit_depth=bits)
        return AssemblyOutcome(result.image, before, after, report["psnr"], params,
                               report.to_dict(), bits)

    def _report(
        self, image: np.ndarray, params: dict[str, Any], before: AttributionResult,
        after: AttributionResult,
    ) -> Any:
        import datetime as dt

        from dippas_core.io import to_float255
        from dippas_core.report import AnonymizationReport, measure

        from .. import __version__

        cfg = self.run.config
        result = cfg.get("result") or {}
        measured, maps = measure(to_float255(self.run.photo), image, self.run.reference,
                                 after.block_size, self.run.sigma, before=before, after=after)
        # dippas_core.pipeline.anonymize's report, with the maps themselves
        block_ncc = {**measured.pop("block_ncc"),
                     "before": maps["block_ncc_before"].tolist(),
                     "after": maps["block_ncc_after"].tolist()}
        return AnonymizationReport.of(
            **measured,
            block_ncc=block_ncc,
            tool=f"napari-dippas {__version__}",
            created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            mode=cfg.get("mode"),
            reference=cfg.get("reference"),
            fingerprint=cfg.get("fingerprint"),
            photo=cfg.get("photo"),
            inversion={
                "status": cfg.get("status"),
                "stop_reason": result.get("stop_reason"),
                "n_iterations": result.get("n_iterations"),
                "n_snapshots": result.get("n_snapshots"),
                "best_psnr": result.get("best_psnr"),
                "elapsed_s": result.get("elapsed_s"),
            },
            assembly=params,
            dip_config=cfg.get("dip_config"),
            sigma=self.run.sigma,
            seed=cfg.get("seed"),
            device=cfg.get("device"),
            environment=result.get("environment"),
            versions=cfg.get("versions"),
            # the folder's name only: the report travels with the image, and a full path tells
            # where the run lives (a folder name can identify a person; as the CLI's reports)
            run_dir=Path(self.path).name,
        )
