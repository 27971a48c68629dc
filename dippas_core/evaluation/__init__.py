"""The evaluation protocol: how well each method hides the camera, and what it costs the picture.

It follows the DIPPAS paper (§4.4) and method §3/§6:

* cameras are fingerprints ``K`` estimated from flat-field shots; photos are natural shots whose
  camera is known from the file name (the device label is the part before the last ``_``);
* every photo gives one or more non-overlapping square crops (several sizes allowed), laid out
  around the centre; a crop is scored against every fingerprint *cropped at the same place*
  relative to the sensor centre;
* every method (``untouched``, the baselines, DIPPAS aware and blind) turns each crop into an 8-bit
  image, scored by NCC (and PCE, and NCC on the edges of the original only) against every
  fingerprint;
* per method and crop size: ROC/AUC (positives: pairs whose fingerprint is the crop's camera,
  negatives: the others, pooled over fingerprints as in the paper), mean PSNR against the crop,
  the trade-off ``C = PSNR (1 - 2|AUC - 0.5|)``, the mean NCC with the true camera and how many
  times smaller it is than untouched, and the edge AUC's relative change (paper Table 4).

Results are written as they come (``scores.csv`` after every crop, summaries after every method)
so an interrupted run keeps what it had and ``resume=True`` carries on from there.

Modules: :mod:`.config` (settings, presets), :mod:`.methods` (the registry of methods under test),
:mod:`.dataset` (fingerprints and crops), :mod:`.scoring` (one output against every camera),
:mod:`.summary` (AUCs, PSNR, C), :mod:`.tables` (the files), :mod:`.plots` and :mod:`.loop`
(:func:`evaluate`, resumable).  The library prints nothing: progress goes to a ``log`` callback.
"""

from __future__ import annotations

from ..photo_sets import camera_label
from .config import EVAL_PRESETS, REFERENCES, EvalConfig
from .dataset import Crop, Dataset, crop_layout, load_dataset, make_crops
from .loop import EvaluationRun, evaluate, score_saved_outputs
from .methods import METHODS, Method, MethodContext, register_method
from .plots import auc_axis_limits, write_plots
from .scoring import score_output
from .summary import PSNR_CAP, _auc, common_crops, summarize  # noqa: F401 - _auc: scripts
from .tables import SCORE_FIELDS, merge_scores

__all__ = [
    "METHODS",
    "EVAL_PRESETS",
    "PSNR_CAP",
    "REFERENCES",
    "SCORE_FIELDS",
    "Crop",
    "Dataset",
    "EvalConfig",
    "EvaluationRun",
    "Method",
    "MethodContext",
    "auc_axis_limits",
    "camera_label",
    "common_crops",
    "crop_layout",
    "evaluate",
    "load_dataset",
    "make_crops",
    "merge_scores",
    "register_method",
    "score_output",
    "score_saved_outputs",
    "summarize",
    "write_plots",
]
