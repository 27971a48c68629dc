"""dippas_core: remove a camera's sensor fingerprint (PRNU) from photographs (DIPPAS).

Napari-free and Qt-free.  Public names are imported lazily so ``import dippas_core`` stays quick and
never pulls in torch.  Docstrings cite "method §n": the sections of ``docs/method.md``, the
algorithm with its equations and every parameter.
"""

from __future__ import annotations

import lazy_loader

__version__ = "0.1.0"

# public name -> submodule that defines it
_API = {
    # errors
    "DippasError": "errors",
    "InputError": "errors",
    "ShapeMismatchError": "errors",
    "ImageReadError": "errors",
    "DeviceError": "errors",
    # images in / out
    "read_image": "io",
    "center_crop": "io",
    "write_image": "io",
    # forensic core
    "residual_reference": "residual",
    "residual_batch": "residual",
    "Fingerprint": "fingerprint",
    "estimate_fingerprint": "fingerprint",
    "ncc": "correlation",
    "pce": "correlation",
    "block_ncc": "correlation",
    "attribute": "attribution",
    "Attribution": "attribution",
    "psnr": "metrics",
    "roc_curve": "metrics",
    "roc_auc": "metrics",
    "tradeoff_c": "metrics",
    "edge_mask": "edges",
    # evaluation and baselines (issue 6)
    "EvalConfig": "evaluation",
    "evaluate": "evaluation",
    "inpaint_anonymize": "baselines",
    "subtract_fingerprint": "baselines",
    "wavelet_denoise": "baselines",
    "CancelToken": "cancel",
    # DIP inversion
    "DIPConfig": "config",
    "invert": "dip",
    "Inversion": "dip",
    # runs, assembly, one-call pipeline
    "SnapshotStore": "snapshots",
    "RunDirectory": "run",
    "assemble": "assembly",
    "AssemblyParams": "config",
    "anonymize": "pipeline",
    "run_job": "pipeline",
    "prepare": "job",
    "PhotoJob": "job",
    "AnonymizationReport": "report",
    "AnonymizeConfig": "config",
    "PRESETS": "config",
    "assemble_photo_run": "photo_assembly",
    "sample_data": "sample",
    # many images on Dask
    "run_batch": "batch",
    "BatchSettings": "batch",
}

# ``residual`` is both a submodule and its main function: bind the function eagerly (the module only
# needs numpy) so the package attribute is the function whatever is imported later.
from .residual import residual  # noqa: E402

__all__ = ["__version__", "residual", *_API]

__getattr__, _, _ = lazy_loader.attach(
    __name__, submod_attrs={m: [n for n, mod in _API.items() if mod == m] for m in {*_API.values()}}
)


def __dir__() -> list[str]:
    return sorted(__all__)
