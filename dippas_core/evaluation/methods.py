"""The anonymization methods under test, in a registry :class:`EvalConfig` names them from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["METHODS", "Method", "MethodContext", "method_order", "register_method"]


@dataclass(frozen=True)
class MethodContext:
    """What a method may use besides the photo: the settings, a per-crop seed, the crop's name.

    ``config`` is the run's :class:`~dippas_core.evaluation.EvalConfig`.
    """

    config: Any
    seed: int
    crop_id: str


@dataclass(frozen=True)
class Method:
    """An anonymization method under test.

    ``run(photo, K, context)`` gets the uint8 crop and the true camera's fingerprint cropped at the
    same place (only methods with ``needs_fingerprint`` may use it) and returns an image of the same
    shape, 0..255, or ``(image, info_dict)``.
    """

    name: str
    run: Callable[..., Any]
    label: str
    needs_fingerprint: bool = False
    kind: str = "baseline"


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Add (or replace) a method in :data:`METHODS`, so ``EvalConfig.methods`` can name it."""
    METHODS[method.name] = method
    return method


def _untouched(photo, K, ctx):
    return photo


def _denoise(photo, K, ctx):
    from ..baselines.denoising import wavelet_denoise

    return wavelet_denoise(photo, ctx.config.sigma)


def _subtract(photo, K, ctx):
    from ..baselines.subtraction import subtract_fingerprint, subtraction_alpha

    fit = subtraction_alpha(photo, K, sigma=ctx.config.sigma)
    return subtract_fingerprint(photo, K, alpha=fit.alpha), {"alpha": fit.alpha}


def _inpaint(variant: str, edges: bool):
    def run(photo, K, ctx):
        from ..baselines.inpainting import inpaint_anonymize

        cfg = ctx.config
        return inpaint_anonymize(
            photo,
            step=cfg.inpaint_step,
            method=variant,
            lam=cfg.inpaint_lambda.get(variant),
            iterations=cfg.tv_iterations if variant == "tv" else None,
            edge_preserve=edges,
            edge_options=cfg.edge_options,
            denoise_sigma=cfg.sigma,
        )

    return run


def _dippas(aware: bool):
    def run(photo, K, ctx):
        from ..pipeline import anonymize

        conf = ctx.config.anonymize_config(ctx.seed)
        result = anonymize(photo, K if aware else None, conf)
        report = result.report
        if report.get("below_tau"):
            from ..assembly import NoSnapshotsError

            # the protocol compares methods at the quality bar tau: a run that never reached it
            # failed on this crop, its best-PSNR fallback image is not scored
            short = report["below_tau"][0]
            raise NoSnapshotsError(
                f"never reached tau = {conf.dip.record_psnr:g} dB "
                f"(best {short['best_psnr']:.2f} dB)"
            )
        inversion = report.get("inversion", {})
        info = {
            "psnr": report.get("psnr"),
            "ncc_before": report.get("ncc", {}).get("before"),
            "ncc_after": report.get("ncc", {}).get("after"),
            **{k: v for k, v in inversion.items() if isinstance(v, int | float | str)},
        }
        gamma, snapshots = inversion.get("gamma", {}), inversion.get("snapshot_ncc", {})
        info.update(
            gamma_at_bound_share=gamma.get("at_bound_share"),
            gamma_median=gamma.get("median"),
            gamma_star_median=gamma.get("median_star"),
            snapshot_ncc_mean=snapshots.get("mean"),
        )
        return result.image, info

    return run


for _m in (
    Method("untouched", _untouched, "untouched"),
    Method("denoise", _denoise, "wavelet denoising"),
    Method("subtract", _subtract, "fingerprint subtraction (aware)", needs_fingerprint=True),
    Method("inpaint_l2", _inpaint("l2", False), "inpainting L2 (Tikhonov)"),
    Method("inpaint_tv", _inpaint("tv", False), "inpainting L1 (TV)"),
    Method("inpaint_l2_edges", _inpaint("l2", True), "inpainting L2 + edges"),
    Method("inpaint_tv_edges", _inpaint("tv", True), "inpainting TV + edges"),
    Method("dippas_aware", _dippas(True), "DIPPAS aware", needs_fingerprint=True, kind="dippas"),
    Method("dippas_blind", _dippas(False), "DIPPAS blind", kind="dippas"),
):
    register_method(_m)


def method_order(method: str) -> int:
    """Place of ``method`` in the registry (unknown names last): the order of the tables."""
    names = list(METHODS)
    return names.index(method) if method in names else len(names)
