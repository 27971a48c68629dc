"""The whole job in one call: :func:`anonymize` (DIP inversion, recording, assembly, report)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._validation import as_image, as_plane, check_known_fields, check_same_size
from .cancel import CancelToken
from .dip.config import DIPConfig
from .errors import InputError

if TYPE_CHECKING:
    from .run import RunDirectory

__all__ = ["AnonymizeConfig", "AnonymizeResult", "anonymize", "attribution_scores"]


@dataclass
class AnonymizeConfig:
    """Every parameter of :func:`anonymize` (JSON round trip: :meth:`to_dict`, :meth:`from_dict`).

    Parameters
    ----------
    dip
        The DIP inversion's settings (network, stopping rule, ``tau_psnr``, device, seed).
    B, L
        Assembly block size (a multiple of ``tile``, or the image size) and snapshots averaged.
    tau
        Assembly PSNR threshold (dB); ``None`` uses ``dip.tau_psnr`` (every recorded snapshot).
    sigma
        Noise level of the residuals (method §1).
    tile
        Finest tile of the per-tile NCC sums.
    seed
        When set, replaces ``dip.seed``.
    keep_run
        Keep the temporary run folder when :func:`anonymize` made one (it can be large).
    """

    dip: DIPConfig = field(default_factory=DIPConfig)
    B: int = 64
    L: int = 10
    tau: float | None = None
    sigma: float = 5.0
    tile: int = 32
    seed: int | None = None
    keep_run: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.dip, dict):
            self.dip = DIPConfig.from_dict(self.dip)
        if self.seed is not None:
            self.dip = self.dip.replace(seed=int(self.seed))

    @classmethod
    def preset(cls, name: str, **changes: Any) -> AnonymizeConfig:
        """A config on the DIP preset ``name`` (``"paper"``, ``"cpu"``, ``"tiny"``).

        ``changes`` go to this class when they name one of its fields, to the DIP config otherwise.
        """
        own = {f.name for f in dataclasses.fields(cls)}
        mine = {k: v for k, v in changes.items() if k in own}
        dip = DIPConfig.preset(name, **{k: v for k, v in changes.items() if k not in own})
        return cls(dip=dip, **mine)

    @property
    def assembly_tau(self) -> float:
        """The PSNR threshold the assembly uses."""
        return float(self.dip.tau_psnr if self.tau is None else self.tau)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["dip"] = self.dip.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnonymizeConfig:
        check_known_fields(cls, data, "AnonymizeConfig field(s)")
        return cls(**data)


@dataclass
class AnonymizeResult:
    """What :func:`anonymize` returns.

    Attributes
    ----------
    image
        The anonymized photo: uint8 H×W×3 for 8-bit input, float32 0..255 otherwise (write it with
        ``io.write_image(..., bit_depth=16)``).
    report
        JSON-serialisable summary (PSNR, NCC/PCE before and after, parameters, seed, timing,
        versions, device).
    maps
        ``block_ncc_before`` / ``block_ncc_after`` (Bh×Bw float64), kept out of the report.
    run_dir
        The run folder (``None`` when it was temporary and removed).
    assembly
        The :class:`~dippas_core.assembly.AssemblyResult` (choices per block, timings).
    """

    image: np.ndarray
    report: dict[str, Any]
    maps: dict[str, np.ndarray]
    run_dir: Path | None
    assembly: Any = field(repr=False, default=None)


def _to_float255(photo: np.ndarray) -> np.ndarray:
    from .io import to_float255

    return to_float255(photo)


def attribution_scores(
    image: np.ndarray, P: np.ndarray, B: int, sigma: float = 5.0
) -> tuple[dict[str, float], np.ndarray]:
    """NCC and PCE of ``image``'s residual against ``gray(image)·P``, and its B×B block-NCC map."""
    from .assembly import measure_block_ncc
    from .correlation import ncc, pce
    from .residual import residual, rgb2gray

    img = np.asarray(image, dtype=np.float32)
    w = residual(img, sigma)
    # the output keeps the photo's geometry: score at zero shift, as the plugin does
    p = pce(w, rgb2gray(img) * P, shift_range=0)
    scores = {
        "ncc": float(ncc(w, img, P)),
        "pce": float(p.pce),
        "pce_peak": float(p.peak),
    }
    return scores, measure_block_ncc(img, P, B, sigma, residual_=w)


def _snapshot_ncc(run: RunDirectory, photo_ncc: float) -> dict[str, Any]:
    """The kept snapshots' whole-image NCC with P (from their tile sums) beside the photo's.

    When the injection works the snapshots carry less of the pattern than the photo; when gamma
    is dead they carry it at the photo's level (issue 17).
    """
    from .snapshots import block_ncc_from_sums

    out: dict[str, Any] = {"photo": float(photo_ncc), "n": len(run.tile_sums)}
    if len(run.tile_sums):
        sums = run.tile_sums.array()
        values = block_ncc_from_sums(sums, max(sums.shape[1:3]))[:, 0, 0]
        out.update(mean=float(values.mean()), min=float(values.min()), max=float(values.max()))
        out["share_below_photo"] = float(np.mean(np.abs(values) < abs(photo_ncc)))
    return out


def anonymize(
    photo: np.ndarray,
    fingerprint: Any = None,
    config: AnonymizeConfig | None = None,
    *,
    run_dir: str | os.PathLike | None = None,
    cancel: CancelToken | None = None,
    on_step: Callable[[Any], None] | None = None,
    force: bool = False,
) -> AnonymizeResult:
    """Remove the camera fingerprint from ``photo`` with DIPPAS.

    Parameters
    ----------
    photo
        H×W×3 photo: uint8, uint16 or float on the 0..255 scale.  Never modified.
    fingerprint
        The camera's :class:`~dippas_core.fingerprint.Fingerprint` (or its ``K`` array), same H×W as
        the photo: PRNU-aware mode.  ``None``: PRNU-blind mode, the reference is the photo's own
        residual (and the NCC/PCE "with the fingerprint" in the report are taken against it).
    config
        :class:`AnonymizeConfig` (default: the paper's setup).
    run_dir
        Folder for the run (snapshots, tile sums, history) so it can be re-assembled later; by
        default a temporary folder removed at the end (``config.keep_run`` keeps it).
    cancel
        Stops the inversion early; the image is then assembled from the snapshots kept so far.
    on_step
        Called with each DIP ``Step`` (progress).
    force
        Replace a previous run in ``run_dir``.

    Returns
    -------
    AnonymizeResult

    Raises
    ------
    InputError, ShapeMismatchError
        Bad photo or fingerprint, fingerprint of another size, or assembly parameters (B, L,
        tau) that do not fit the photo: all raised before the run folder is made or the inversion
        starts.
    DeviceError
        The device asked for does not exist (raised before the run folder is made), or it ran out
        of memory.
    NoSnapshotsError
        The inversion kept no snapshot (it never reached ``tau_psnr``).
    """
    from .assembly import assemble, check_assembly_params
    from .dip import invert
    from .residual import residual
    from .run import RunDirectory, environment_info, gamma_summary, record

    t_start = time.perf_counter()
    config = AnonymizeConfig() if config is None else config
    if not isinstance(config, AnonymizeConfig):
        raise InputError(f"config must be an AnonymizeConfig, got {type(config).__name__}")
    raw = np.asarray(photo)
    img = as_image(raw, "photo")
    if img.ndim != 3:
        raise InputError(
            f"photo must be a colour H×W×3 image, got shape {raw.shape}; stack a gray photo into "
            "three channels first"
        )
    # B, L and tau are only used after the whole inversion: refuse bad ones now, not hours later
    check_assembly_params(img.shape[:2], config.tile, config.B, config.L, config.assembly_tau)
    img255 = _to_float255(raw)
    fp_info: dict[str, Any] | None = None
    if fingerprint is None:
        mode = "blind"
        P = residual(img255, config.sigma)
    else:
        mode = "aware"
        K = getattr(fingerprint, "K", fingerprint)
        P = as_plane(K, "fingerprint K")
        check_same_size(img255, P, "photo", "fingerprint")
        fp_info = {
            k: getattr(fingerprint, k)
            for k in ("camera", "n_images", "sigma", "version")
            if hasattr(fingerprint, k)
        }
    # invert() checks the image, P and the device here, before any folder exists: a failure
    # leaves no run behind (nor a previous run replaced by --force)
    steps = invert(raw, P, config.dip, cancel=cancel)
    temporary = run_dir is None
    try:
        path = Path(tempfile.mkdtemp(prefix="dippas-run-")) if temporary else Path(run_dir)
    except BaseException:
        steps.close()
        raise
    run = None
    try:
        try:
            run = RunDirectory.create(
                path,
                raw,
                P,
                mode=mode,
                dip_config=config.dip,
                tile=config.tile,
                sigma=config.sigma,
                force=force,
                extra={"anonymize_config": config.to_dict(), "fingerprint": fp_info},
            )
        except BaseException:
            steps.close()  # never started: nothing on the device yet
            raise
        t0 = time.perf_counter()
        inv = record(run, steps, cancel, on_step)
        t_inv = time.perf_counter() - t0

        t0 = time.perf_counter()
        dtype = "uint8" if raw.dtype == np.uint8 else "float32"
        asm = assemble(run, config.B, config.L, config.assembly_tau, dtype=dtype)
        t_asm = time.perf_counter() - t0

        t0 = time.perf_counter()
        before, map_before = attribution_scores(img255, P, asm.block, config.sigma)
        after, map_after = attribution_scores(asm.image, P, asm.block, config.sigma)
        asm._ncc_map = map_after  # the same measurement; spare a second residual
        t_meas = time.perf_counter() - t0
        from .metrics import psnr

        hist = inv.history
        env = dict(getattr(inv, "environment", {}) or {})
        report = {
            "mode": mode,
            "reference": (
                "fingerprint K"
                if mode == "aware"
                else "photo residual (blind: no fingerprint given; NCC/PCE are against the "
                "photo's own noise residual)"
            ),
            "fingerprint": fp_info,
            "photo": {
                "height": int(raw.shape[0]),
                "width": int(raw.shape[1]),
                "dtype": str(raw.dtype),
            },
            "psnr": float(psnr(img255, np.asarray(asm.image, np.float32))),
            "ncc": {"before": before["ncc"], "after": after["ncc"]},
            "pce": {"before": before["pce"], "after": after["pce"]},
            "pce_detail": {"before": before, "after": after},
            "block_ncc": {
                "B": asm.block,
                "mean_abs_before": float(np.abs(map_before).mean()),
                "mean_abs_after": float(np.abs(map_after).mean()),
                "max_abs_after": float(np.abs(map_after).max()),
            },
            "inversion": {
                "stop_reason": inv.stop_reason,
                "n_iterations": int(len(hist["iteration"])),
                "n_snapshots": int(len(run.snapshots)),
                "best_psnr": float(np.max(hist["psnr"])) if len(hist["psnr"]) else None,
                "final_gamma": float(hist["gamma"][-1]) if len(hist["gamma"]) else None,
                "gamma": gamma_summary(run.history()),
                "snapshot_ncc": _snapshot_ncc(run, before["ncc"]),
                "elapsed_s": float(inv.elapsed_s),
            },
            "assembly": asm.params,
            "config": config.to_dict(),
            "seed": int(config.dip.seed),
            "timing_s": {
                "inversion": t_inv,
                "assembly": t_asm,
                "measurement": t_meas,
                "total": time.perf_counter() - t_start,
            },
            "device": env.get("device", config.dip.device),
            "environment": env,
            "versions": environment_info(),
            "run_dir": None if temporary and not config.keep_run else str(path),
        }
    except BaseException:
        if run is not None:
            run.close()  # a writer that never reached record() would keep the run's lock
        if temporary:
            shutil.rmtree(path, ignore_errors=True)
        raise
    if temporary and not config.keep_run:
        shutil.rmtree(path, ignore_errors=True)
    return AnonymizeResult(
        image=asm.image,
        report=report,
        maps={"block_ncc_before": map_before, "block_ncc_after": map_after},
        run_dir=Path(report["run_dir"]) if report["run_dir"] else None,
        assembly=asm,
    )
