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
"""

from __future__ import annotations

import csv
import dataclasses
import io as _io
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._atomic import atomic_path, atomic_write_text
from ._validation import check_known_fields
from .errors import DippasError, InputError
from .run import environment_info

__all__ = [
    "PRESETS",
    "PSNR_CAP",
    "REFERENCES",
    "Crop",
    "Dataset",
    "EvalConfig",
    "Method",
    "MethodContext",
    "SCORE_FIELDS",
    "common_crops",
    "METHODS",
    "crop_layout",
    "evaluate",
    "load_dataset",
    "make_crops",
    "merge_scores",
    "score_saved_outputs",
    "register_method",
    "score_output",
    "summarize",
    "auc_axis_limits",
    "write_plots",
]

#: PSNR (dB) given to a crop a method left unchanged when averaging (it is infinite).
PSNR_CAP = 100.0
SCORE_FIELDS = (
    "size",
    "crop",
    "photo",
    "camera",
    "top",
    "left",
    "method",
    "fingerprint",
    "label",
    "ncc",
    "ncc_edges",
    "pce",
    "psnr",
    "seconds",
    "attacker",
)


# --------------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class EvalConfig:
    """Parameters of one evaluation run (JSON-serialisable with :meth:`to_dict`).

    Parameters
    ----------
    crop_sizes : tuple of int
        Square crop sizes (pixels); each is evaluated separately.
    crops_per_photo : int
        Non-overlapping crops per photo and size, the cells of a centred grid nearest the centre.
    methods : tuple of str
        Names in :data:`METHODS` (``untouched`` is always scored first: it is the reference).
    max_photos : int or None
        Use only the first photos (sorted by name, spread over cameras); ``None``: all.
    photos_per_camera : int or None
        At most this many photos per camera; ``None``: all.
    sigma : float
        Residual noise level (method §1).
    seed : int
        Base seed; the DIP run of crop ``i`` uses ``seed + i``.
    dip_preset : str
        :meth:`dippas_core.dip.DIPConfig.preset` name for the DIPPAS methods.
    dip_changes : dict
        Fields of that preset to change (e.g. ``{"max_iter": 600}``).
    block, top_l, tau : int, int, float
        DIPPAS assembly (method §5): block size ``B``, ``L`` and ``tau_psnr``.
    inpaint_step : int
        Grid step of the inpainting baseline.
    inpaint_lambda : dict
        Regularisation weight per inpainting variant name.
    tv_iterations : int
        Chambolle–Pock iterations of the TV inpainting.
    edge_options : dict
        Keyword arguments of :func:`dippas_core.edges.edge_mask`.
    pce : bool
        Also compute PCE (costs an FFT per pair).
    fingerprint_region : int or None
        Estimate the fingerprints on at least this centred square (the residual of a small
        region suffers from border effects); crops stay centred in it.
    reference : {"same", "split"}
        ``"same"`` (the paper's protocol): the aware methods get the very fingerprint every output
        is scored against.  ``"split"``: each camera's flat fields are halved (alternately, in
        name order); the methods get the estimate from one half, the detector scores with the
        other, as when an analyst's reference was made from shots the anonymizer never saw.
    """

    crop_sizes: tuple[int, ...] = (128,)
    crops_per_photo: int = 1
    methods: tuple[str, ...] = (
        "untouched",
        "denoise",
        "subtract",
        "inpaint_l2",
        "inpaint_tv",
        "inpaint_l2_edges",
        "dippas_aware",
        "dippas_blind",
    )
    max_photos: int | None = None
    photos_per_camera: int | None = None
    sigma: float = 5.0
    seed: int = 0
    dip_preset: str = "cpu"
    dip_changes: dict = field(default_factory=dict)
    block: int = 64
    top_l: int = 10
    tau: float = 38.0
    inpaint_step: int = 3
    inpaint_lambda: dict = field(default_factory=lambda: {"l2": 0.1, "tv": 2.0})
    tv_iterations: int = 200
    edge_options: dict = field(default_factory=dict)
    pce: bool = True
    fingerprint_region: int | None = None
    reference: str = "same"

    def __post_init__(self) -> None:
        sizes = tuple(int(s) for s in self.crop_sizes)
        object.__setattr__(self, "crop_sizes", sizes)
        object.__setattr__(self, "methods", tuple(str(m) for m in self.methods))
        if not sizes or min(sizes) < 16:
            raise InputError(f"crop sizes must be >= 16 pixels, got {self.crop_sizes!r}")
        if int(self.crops_per_photo) < 1:
            raise InputError(f"crops_per_photo must be >= 1, got {self.crops_per_photo!r}")
        if self.reference not in REFERENCES:
            raise InputError(
                f"reference must be one of {', '.join(REFERENCES)}, got {self.reference!r}"
            )
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise InputError(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(METHODS)}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalConfig:
        """Inverse of :meth:`to_dict` (unknown keys are an error)."""
        check_known_fields(cls, data, "evaluation setting(s)")
        return cls(**data)

    def replace(self, **changes: Any) -> EvalConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def preset(cls, name: str, **changes: Any) -> EvalConfig:
        """``"cpu"`` (6 crops, < 30 min on 2 cores), ``"cpu-full"`` (all photos), ``"paper"``
        (512×512, full network, a GPU) or ``"tiny"`` (tests)."""
        if name not in PRESETS:
            raise InputError(
                f"unknown evaluation preset {name!r}; choose one of {', '.join(PRESETS)}"
            )
        return cls(**{**PRESETS[name], **changes})


#: Which fingerprint the aware methods get (see :class:`EvalConfig`).
REFERENCES = ("same", "split")

#: Named settings (see docs/evaluation.md for measured times and AUCs).
#: ``cpu-full``: every photo, 128×128 centre crops (untouched NCC AUC 0.74 there; 0.96 at 512),
#: the small ``cpu`` DIP network, lr 1e-2, at most 1500 iterations.  ``cpu``: the same on one
#: photo per camera (6 crops), sized for < 30 min on an idle 2-core machine (about 2 CPU-minutes
#: per DIPPAS crop measured here).  ``paper``: the journal's setup (512×512, full network; a GPU).
_CPU: dict[str, Any] = {
    "crop_sizes": (128,),
    "crops_per_photo": 1,
    "dip_preset": "cpu",
    # lr 1e-2: on this CPU it reached 35.5 dB in 400 iterations where 1e-3 needed ~1400; one
    # torch thread (two threads on a loaded 2-core machine ran ten times slower)
    "dip_changes": {"max_iter": 1500, "torch_threads": 1, "lr": 1e-2},
    "fingerprint_region": 512,
    # chosen on the 10 photos the cpu preset leaves out (scripts/assembly_grid.py --held-out):
    # the lowest mean |NCC| with the true camera at mean PSNR >= 38 dB; at 128×128 a 32-pixel
    # block's NCC is mostly chance, so the whole crop is one block
    "block": 128,
    "top_l": 2,
    "tau": 38.0,
}
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {**_CPU, "photos_per_camera": 1},
    "cpu-full": dict(_CPU),
    "paper": {
        "crop_sizes": (512,),
        "crops_per_photo": 1,
        "dip_preset": "paper",
        "dip_changes": {},
        "block": 64,
        "top_l": 10,
        "tau": 38.0,
    },
    "tiny": {
        "crop_sizes": (64,),
        "crops_per_photo": 2,
        "methods": ("untouched", "denoise", "subtract", "inpaint_l2"),
        "dip_preset": "tiny",
        "block": 32,
        "top_l": 5,
        "tau": 30.0,
        "tv_iterations": 50,
        "pce": True,
    },
}


# --------------------------------------------------------------------------------------------------
# methods


@dataclass(frozen=True)
class MethodContext:
    """What a method may use besides the photo: the settings, a per-crop seed, the crop's name."""

    config: EvalConfig
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
    from .baselines.denoising import wavelet_denoise

    return wavelet_denoise(photo, ctx.config.sigma)


def _subtract(photo, K, ctx):
    from .baselines.subtraction import subtract_fingerprint, subtraction_alpha

    fit = subtraction_alpha(photo, K, sigma=ctx.config.sigma)
    return subtract_fingerprint(photo, K, alpha=fit.alpha), {"alpha": fit.alpha}


def _inpaint(variant: str, edges: bool):
    def run(photo, K, ctx):
        from .baselines.inpainting import inpaint_anonymize

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
        from .dip import DIPConfig
        from .pipeline import AnonymizeConfig, anonymize

        cfg = ctx.config
        dip = DIPConfig.preset(cfg.dip_preset, **{**cfg.dip_changes, "seed": ctx.seed})
        conf = AnonymizeConfig(
            dip=dip, B=cfg.block, L=cfg.top_l, tau=cfg.tau, sigma=cfg.sigma, seed=ctx.seed
        )
        result = anonymize(photo, K if aware else None, conf)
        report = result.report
        if report.get("below_tau"):
            from .assembly import NoSnapshotsError

            # the protocol compares methods at the quality bar tau: a run that never reached it
            # failed on this crop, its best-PSNR fallback image is not scored
            short = report["below_tau"][0]
            raise NoSnapshotsError(
                f"never reached tau = {conf.dip.tau_psnr:g} dB (best {short['best_psnr']:.2f} dB)"
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


# --------------------------------------------------------------------------------------------------
# data


@dataclass(frozen=True)
class Crop:
    """One square crop of a photo: its place in the centred region shared with the fingerprints."""

    crop_id: str
    photo: str
    camera: str
    size: int
    top: int
    left: int
    image: np.ndarray = field(repr=False, compare=False)


@dataclass
class Dataset:
    """Fingerprints (one per camera, all ``region`` × ``region``, centred) and the crops.

    ``fingerprints`` are the detector's; ``attack_fingerprints``, when given, are what the aware
    methods get instead (``reference="split"``).
    """

    region: int
    fingerprints: dict[str, np.ndarray]
    crops: list[Crop]
    files: dict[str, list[str]]
    attack_fingerprints: dict[str, np.ndarray] | None = None

    @property
    def cameras(self) -> list[str]:
        return sorted(self.fingerprints)

    def fingerprint_crop(self, camera: str, crop: Crop, *, attack: bool = False) -> np.ndarray:
        """``K`` of ``camera`` at the crop's place: the detector's, or with ``attack`` the one
        the aware methods get (the same unless the dataset has ``attack_fingerprints``)."""
        use_attack = attack and self.attack_fingerprints is not None
        K = (self.attack_fingerprints if use_attack else self.fingerprints)[camera]
        return K[crop.top : crop.top + crop.size, crop.left : crop.left + crop.size]


def camera_label(path: str | Path) -> str:
    """Device label of a Dresden-style file name: the part of the stem before the last ``_``."""
    stem = Path(path).stem
    if "_" not in stem:
        raise InputError(f"cannot tell the camera of {Path(path).name!r}: no '_' in its name")
    return stem.rsplit("_", 1)[0]


def _grid(n: int) -> int:
    return math.ceil(math.sqrt(n))


def crop_layout(size: int, n: int, region: int) -> list[tuple[int, int]]:
    """``n`` non-overlapping ``size``-pixel cells of a grid centred in a ``region`` square, nearest
    the centre first; returns (top, left) in region coordinates."""
    g = _grid(n)
    if g * size > region:
        raise InputError(f"{n} crops of {size} px need a {g * size} px region, have {region}")
    origin = (region - g * size) // 2
    cells = [(r, c) for r in range(g) for c in range(g)]
    mid = (g - 1) / 2
    cells.sort(key=lambda rc: ((rc[0] - mid) ** 2 + (rc[1] - mid) ** 2, rc))
    return [(origin + r * size, origin + c * size) for r, c in cells[:n]]


def _list_images(folder: Path) -> list[Path]:
    from .io import find_images

    files = find_images(folder)
    if not files:
        raise InputError(f"no images in {folder}")
    return files


def _select_photos(files: list[Path], config: EvalConfig) -> list[Path]:
    by_cam: dict[str, list[Path]] = {}
    for p in files:
        by_cam.setdefault(camera_label(p), []).append(p)
    if config.photos_per_camera is not None:
        by_cam = {c: v[: int(config.photos_per_camera)] for c, v in by_cam.items()}
    # interleave cameras so a max_photos cut keeps every camera represented
    order: list[Path] = []
    queues = [list(v) for _, v in sorted(by_cam.items())]
    while any(queues):
        for q in queues:
            if q:
                order.append(q.pop(0))
    if config.max_photos is not None:
        order = order[: int(config.max_photos)]
    return order


def make_crops(
    photos, sizes: Sequence[int], crops_per_photo: int, region: int
) -> list[Crop]:
    """Crops of in-memory photos: ``photos`` yields ``(camera, name, image)`` with ``image`` the
    centred ``region`` × ``region`` square of an RGB photo (the fingerprints' region)."""
    crops: list[Crop] = []
    for camera, name, photo in photos:
        photo = np.asarray(photo)
        if photo.ndim != 3 or photo.shape[:2] != (region, region):
            raise InputError(
                f"{name}: need the centred {region}×{region} region of an RGB photo, "
                f"got shape {photo.shape}"
            )
        stem = Path(name).stem
        for size in sizes:
            for k, (top, left) in enumerate(crop_layout(size, crops_per_photo, region)):
                img = np.array(photo[top : top + size, left : left + size], copy=True)
                crops.append(Crop(f"{stem}@{size}#{k}", name, camera, size, top, left, img))
    return crops


def load_dataset(
    data: str | Path,
    config: EvalConfig,
    *,
    cache_dir: str | Path | None = None,
    flat_dir: str = "ff-jpg",
    photo_dir: str = "nat-jpg",
    log: Callable[[str], None] | None = None,
) -> Dataset:
    """Fingerprints and crops from a folder laid out like the prnu-python test data.

    ``data/ff-jpg`` holds flat-field shots and ``data/nat-jpg`` natural photos; the camera of a
    file is :func:`camera_label` of its name.  Fingerprints are estimated (method §2) on the centred
    ``region`` square of the flat fields that holds every crop, and cached in ``cache_dir``.
    With ``config.reference == "split"`` the detector's fingerprint of a camera comes from its
    2nd, 4th, … flat field (name order) and the methods' from the 1st, 3rd, ….
    """
    from .fingerprint import Fingerprint, estimate_fingerprint
    from .io import center_crop, read_image

    say = log or (lambda _msg: None)
    data = Path(data)
    flats = _list_images(data / flat_dir)
    photos = _select_photos(_list_images(data / photo_dir), config)
    region = max(
        max(_grid(config.crops_per_photo) * s for s in config.crop_sizes),
        int(config.fingerprint_region or 0),
    )
    cams = sorted({camera_label(p) for p in photos})
    flats_by_cam: dict[str, list[Path]] = {}
    for p in flats:
        flats_by_cam.setdefault(camera_label(p), []).append(p)
    missing = [c for c in cams if c not in flats_by_cam]
    if missing:
        raise InputError(f"no flat-field shots in {data / flat_dir} for camera(s) {missing}")

    split = config.reference == "split"
    short = [c for c, v in flats_by_cam.items() if len(v) < 2] if split else []
    if short:
        raise InputError(
            f"reference 'split' needs at least 2 flat-field shots per camera; {short} have one"
        )

    def estimate(cam: str, paths: list[Path], role: str) -> np.ndarray:
        suffix = f"_{role}" if role else ""
        name = f"{cam}_{region}_s{config.sigma:g}{suffix}.npz"
        cached = Path(cache_dir) / name if cache_dir else None
        if cached is not None and cached.is_file():
            fp = Fingerprint.load(cached)
        else:
            t0 = time.perf_counter()
            fp = estimate_fingerprint(paths, sigma=config.sigma, crop=region, camera=cam)
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                fp.save(cached)
            say(f"fingerprint {cam}{suffix}: {len(paths)} flat fields, "
                f"{time.perf_counter() - t0:.1f} s")
        return np.asarray(fp.K, dtype=np.float32)

    fingerprints: dict[str, np.ndarray] = {}
    attack: dict[str, np.ndarray] | None = {} if split else None
    files: dict[str, list[str]] = {"flat_fields": [p.name for p in flats]}
    for cam, paths in sorted(flats_by_cam.items()):
        if split:
            fingerprints[cam] = estimate(cam, paths[1::2], "detector")
            attack[cam] = estimate(cam, paths[0::2], "attack")
            files.setdefault("flat_fields_detector", []).extend(p.name for p in paths[1::2])
            files.setdefault("flat_fields_attack", []).extend(p.name for p in paths[0::2])
        else:
            fingerprints[cam] = estimate(cam, paths, "")

    crops = make_crops(
        ((camera_label(p), p.name, center_crop(read_image(p), region)) for p in photos),
        config.crop_sizes,
        config.crops_per_photo,
        region,
    )
    files["photos"] = [p.name for p in photos]
    return Dataset(region, fingerprints, crops, files, attack)


# --------------------------------------------------------------------------------------------------
# scoring


def _to_uint8(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.dtype == np.uint8:
        return arr
    return np.clip(np.rint(arr.astype(np.float64)), 0, 255).astype(np.uint8)


def score_output(
    output: np.ndarray,
    original: np.ndarray,
    fingerprints: dict[str, np.ndarray],
    edges: np.ndarray,
    *,
    sigma: float = 5.0,
    pce: bool = True,
) -> tuple[float, dict[str, dict[str, float]]]:
    """Score one method output: PSNR against ``original`` and, per fingerprint (already cropped at
    the place of the crop), NCC, NCC on ``edges`` only, and PCE.

    ``output`` is rounded to 8 bits first (the image as saved).
    """
    from .correlation import ncc
    from .correlation import pce as pce_fn
    from .edges import masked_ncc
    from .metrics import psnr
    from .residual import residual, rgb2gray

    out8 = _to_uint8(output)
    if out8.shape != np.asarray(original).shape:
        raise InputError(f"method output is {out8.shape}, the crop is {np.asarray(original).shape}")
    quality = float(psnr(out8, original))
    W = residual(out8, sigma)
    gray = rgb2gray(out8)
    scores: dict[str, dict[str, float]] = {}
    for cam, K in fingerprints.items():
        row = {
            "ncc": float(ncc(W, out8, K)),
            "ncc_edges": float(masked_ncc(W, out8, K, edges)) if edges.any() else float("nan"),
            "pce": float(pce_fn(W, gray * K).pce) if pce else float("nan"),
        }
        scores[cam] = row
    return quality, scores


# --------------------------------------------------------------------------------------------------
# summaries


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    from .metrics import roc_auc

    ok = np.isfinite(scores)
    if ok.sum() == 0 or labels[ok].all() or not labels[ok].any():
        return float("nan")
    return float(roc_auc(scores[ok], labels[ok]))


def _top1_accuracy(rows: Sequence[dict[str, Any]], key: str) -> float:
    """Share of crops whose highest ``key`` score is the true camera's (NaN: no such scores)."""
    best: dict[str, tuple[float, bool]] = {}
    for r in rows:
        v = r.get(key)
        value = float(v) if v not in ("", None) else float("nan")
        if not np.isfinite(value):
            continue
        crop = str(r["crop"])
        if crop not in best or value > best[crop][0]:
            best[crop] = (value, str(r["label"]) in ("1", "True", "true"))
    return float(np.mean([hit for _, hit in best.values()])) if best else float("nan")


def summarize(
    rows: Sequence[dict[str, Any]], *, crops: set[str] | None = None
) -> list[dict[str, Any]]:
    """Per (size, method): AUCs, mean PSNR, C, NCC with the true camera and its cut vs untouched.

    Parameters
    ----------
    rows : sequence of dict
        Score rows (:data:`SCORE_FIELDS`; the strings read back from ``scores.csv`` are accepted).
    crops : set of str, optional
        Use only these crop ids (e.g. the crops every method has, for a like-for-like table).

    Notes
    -----
    ``ncc_cut_vs_untouched`` is the untouched mean ``|NCC|`` with the true camera divided by the
    method's (higher: more removed).  ``mean_psnr`` averages the per-crop PSNR, a crop the method
    left unchanged counting as :data:`PSNR_CAP` dB; it is infinite only when no crop changed
    (untouched), and then ``C`` is left empty.  ``n_unchanged`` counts the unchanged crops.
    ``acc_ncc``, ``acc_pce`` and ``acc_attacker`` are top-1 accuracies: the share of crops whose
    highest score (over the fingerprints, or the learned attacker's camera probabilities) is the
    true camera's; ``auc_attacker`` pools the attacker's probabilities as ``auc_ncc`` pools NCCs.
    """
    from .metrics import tradeoff_c

    def num(v):
        return float(v) if v not in ("", None) else float("nan")

    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for r in rows:
        if crops is None or str(r["crop"]) in crops:
            groups.setdefault((int(r["size"]), str(r["method"])), []).append(r)
    out = []
    for (size, method), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], _order(kv[0][1]))):
        labels = np.array([str(r["label"]) in ("1", "True", "true") for r in rs])
        ncc = np.array([num(r["ncc"]) for r in rs])
        per_crop = {str(r["crop"]): (num(r["psnr"]), num(r["seconds"])) for r in rs}
        psnrs = np.array([v[0] for v in per_crop.values()])
        psnrs = psnrs[~np.isnan(psnrs)]
        if psnrs.size == 0:
            mean_psnr = float("nan")
        elif np.isinf(psnrs).all():  # nothing changed at all (untouched)
            mean_psnr = float("inf")
        else:  # a crop left unchanged counts as PSNR_CAP, not as infinity
            mean_psnr = float(np.minimum(psnrs, PSNR_CAP).mean())
        auc = _auc(ncc, labels)
        auc_e = _auc(np.array([num(r["ncc_edges"]) for r in rs]), labels)
        nan = float("nan")
        out.append(
            {
                "size": size,
                "method": method,
                "label": METHODS[method].label if method in METHODS else method,
                "n_crops": len(per_crop),
                "n_pairs": len(rs),
                "n_unchanged": int(np.isinf(psnrs).sum()),
                "mean_psnr": mean_psnr,
                "auc_ncc": auc,
                "auc_ncc_edges": auc_e,
                "auc_edges_rel_change": (auc_e - auc) / auc if auc > 0 else nan,
                "auc_pce": _auc(np.array([num(r["pce"]) for r in rs]), labels),
                "auc_attacker": _auc(
                    np.array([num(r.get("attacker")) for r in rs]), labels
                ),
                "acc_ncc": _top1_accuracy(rs, "ncc"),
                "acc_pce": _top1_accuracy(rs, "pce"),
                "acc_attacker": _top1_accuracy(rs, "attacker"),
                "C": float(tradeoff_c(mean_psnr, auc))
                if np.isfinite([mean_psnr, auc]).all()
                else nan,
                "mean_ncc_true": float(ncc[labels].mean()) if labels.any() else nan,
                "mean_abs_ncc_true": float(np.abs(ncc[labels]).mean()) if labels.any() else nan,
                "mean_seconds": float(np.mean([v[1] for v in per_crop.values()])),
            }
        )
    ref = {s["size"]: s["mean_abs_ncc_true"] for s in out if s["method"] == "untouched"}
    for s in out:
        mine = s["mean_abs_ncc_true"]
        s["ncc_cut_vs_untouched"] = ref.get(s["size"], nan) / mine if mine > 0 else float("inf")
    return out


def common_crops(rows: Sequence[dict[str, Any]], methods: Sequence[str]) -> set[str]:
    """Crop ids scored by every one of ``methods`` (for a like-for-like comparison)."""
    have: dict[str, set[str]] = {}
    for r in rows:
        have.setdefault(str(r["method"]), set()).add(str(r["crop"]))
    sets = [have.get(m, set()) for m in methods]
    return set.intersection(*sets) if sets else set()


def _order(method: str) -> int:
    names = list(METHODS)
    return names.index(method) if method in names else len(names)


# --------------------------------------------------------------------------------------------------
# files


def _rows_to_csv(rows: Sequence[dict[str, Any]], fields: Sequence[str]) -> str:
    buf = _io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (repr(float(v)) if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def _read_scores(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``scores.csv``, each checked (InputError naming the line and column)."""
    if not path.is_file():
        return []
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [f for f in SCORE_FIELDS if f not in (reader.fieldnames or ())]
            if missing:
                raise InputError(
                    f"{path} is not a scores file of dippas evaluate: no column "
                    f"{', '.join(missing)}"
                )
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path} is not a readable CSV file ({exc})") from None
    for line, row in enumerate(rows, start=2):
        _check_score_row(path, line, row)
    return rows


def _check_score_row(path: Path, line: int, row: dict[str, Any]) -> None:
    def bad(column: str, why: str) -> InputError:
        return InputError(f"{path}, line {line}: {column} {row.get(column)!r} {why}")

    if None in row or any(row.get(f) is None for f in SCORE_FIELDS):
        raise InputError(f"{path}, line {line}: wrong number of columns")
    try:
        size = int(row["size"])
    except ValueError:
        raise bad("size", "is not a whole number") from None
    if size < 1:
        raise bad("size", "must be >= 1")
    if not row["method"] or not row["crop"]:
        raise InputError(f"{path}, line {line}: method and crop must not be empty")
    if row["label"] not in ("0", "1", "True", "False", "true", "false"):
        raise bad("label", "is not 0/1")
    for column in ("ncc", "ncc_edges", "pce", "psnr", "seconds"):
        if row[column] == "":
            continue  # a score that was not computed (e.g. --no-pce)
        try:
            float(row[column])  # nan and inf are written by evaluate itself
        except ValueError:
            raise bad(column, "is not a number") from None


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def auc_axis_limits(aucs: Sequence[float]) -> tuple[float, float]:
    """AUC axis of the AUC-vs-PSNR plot: 0.3 … 1.02, widened so that no plotted AUC falls off."""
    low = min([0.3, *(float(a) - 0.03 for a in aucs if np.isfinite(a))])
    return max(low, -0.02), 1.02


def write_plots(
    rows: Sequence[dict[str, Any]], summary: Sequence[dict[str, Any]], out: Path
) -> list[Path]:
    """ROC curves (NCC, one figure per crop size) and AUC vs mean PSNR (paper Fig. 10) as PNG.

    Uses a bare :class:`matplotlib.figure.Figure` (Agg canvas), never pyplot, so it changes no
    global backend (safe inside napari).
    """
    from matplotlib.figure import Figure

    from .metrics import roc_curve

    written = []
    sizes = sorted({int(s["size"]) for s in summary})
    for size in sizes:
        fig = Figure(figsize=(5.2, 4.6), dpi=110)
        ax = fig.add_subplot()
        for s in (s for s in summary if s["size"] == size):
            rs = [r for r in rows if int(r["size"]) == size and r["method"] == s["method"]]
            scores = np.array([float(r["ncc"]) for r in rs])
            labels = np.array([str(r["label"]) in ("1", "True", "true") for r in rs])
            if labels.all() or not labels.any():
                continue
            fpr, tpr, _ = roc_curve(scores, labels)
            ax.plot(fpr, tpr, label=f"{s['label']} (AUC {s['auc_ncc']:.3f})")
        ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--")
        ax.set(
            xlabel="false positive rate",
            ylabel="true positive rate",
            title=f"ROC, NCC, {size}×{size} crops",
        )
        if ax.get_legend_handles_labels()[0]:  # no curve when a size has one camera only
            ax.legend(fontsize=7, loc="lower right")
        path = out / f"roc_{size}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, bbox_inches="tight")
        written.append(path)

        fig = Figure(figsize=(5.2, 4.6), dpi=110)
        ax = fig.add_subplot()
        plotted = []
        for s in (s for s in summary if s["size"] == size):
            if not np.isfinite([s["mean_psnr"], s["auc_ncc"]]).all():
                continue
            (pt,) = ax.plot(s["mean_psnr"], s["auc_ncc"], "o", label=s["label"])
            plotted.append(s["auc_ncc"])
            if np.isfinite(s["auc_ncc_edges"]):
                ax.plot(s["mean_psnr"], s["auc_ncc_edges"], "^", mfc="none", color=pt.get_color())
                plotted.append(s["auc_ncc_edges"])
        ax.axhline(0.5, color="0.6", lw=0.8, ls="--")
        ref = [s for s in summary if s["size"] == size and s["method"] == "untouched"]
        if ref and np.isfinite(ref[0]["auc_ncc"]):
            ax.axhline(ref[0]["auc_ncc"], color="k", lw=0.8, ls=":", label="untouched AUC")
        ax.set(
            xlabel="mean PSNR [dB]",
            ylabel="AUC (NCC)",
            ylim=auc_axis_limits(plotted),
            title=f"AUC vs PSNR, {size}×{size} (●: whole, △: edges)",
        )
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
        path = out / f"auc_vs_psnr_{size}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, bbox_inches="tight")
        written.append(path)
    return written


# --------------------------------------------------------------------------------------------------
# the run


def _write_summaries(
    rows: Sequence[dict[str, Any]], methods: Sequence[str], out: Path
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], set[str]]:
    """Write summary.csv, summary_common.csv and summary.json; return (all, common, crops)."""
    summary = summarize(rows)
    present = [m for m in methods if any(r["method"] == m for r in rows)]
    keep = common_crops(rows, present)
    common = summarize(rows, crops=keep)
    fields = list(summary[0]) if summary else ["size", "method"]
    atomic_write_text(out / "summary.csv", _rows_to_csv(summary, fields))
    atomic_write_text(out / "summary_common.csv", _rows_to_csv(common, fields))
    doc = {"all_crops": summary, "common_crops": common, "methods_in_common": present}
    atomic_write_text(out / "summary.json", json.dumps(_json_safe(doc), indent=2) + "\n")
    return summary, common, keep


def _plot(rows, common, keep, out: Path) -> None:
    if common:
        write_plots([r for r in rows if r["crop"] in keep], common, out)


#: Settings that change every score: results made with others are not put into one table.
_SCORING_SETTINGS = ("reference", "sigma", "fingerprint_region")


def _scoring_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The :data:`_SCORING_SETTINGS` of a saved config (defaults for keys it predates)."""
    defaults = EvalConfig()
    return {key: config.get(key, getattr(defaults, key)) for key in _SCORING_SETTINGS}


def _check_resumable(earlier: dict[str, Any], config: EvalConfig, out: Path) -> None:
    before, now = _scoring_settings(earlier), _scoring_settings(config.to_dict())
    for key in _SCORING_SETTINGS:
        if before[key] != now[key]:
            raise InputError(
                f"{out} holds results made with {key}={before[key]!r}, this run has "
                f"{key}={now[key]!r}: use another --out, or --fresh to start over"
            )


def merge_scores(sources: Sequence[str | Path], out: str | Path) -> int:
    """Merge the ``scores.csv`` of runs made side by side (e.g. one per method) into
    ``out/scores.csv``; a (method, crop, fingerprint) already seen is kept from the first source.
    Sources whose ``params.json`` differ in a setting that changes every score (the reference,
    sigma, the fingerprint region) are refused.  Returns the number of rows written."""
    seen: set[tuple[str, str, str]] = set()
    merged: list[dict[str, Any]] = []
    first: tuple[Path, dict[str, Any]] | None = None
    for src in sources:
        path = Path(src) / "scores.csv" if Path(src).is_dir() else Path(src)
        if not path.is_file():
            raise InputError(f"no scores file at {path}")
        params = path.parent / "params.json"
        if params.is_file():
            settings = _scoring_settings(json.loads(params.read_text()).get("config") or {})
            if first is None:
                first = (path.parent, settings)
            elif settings != first[1]:
                raise InputError(
                    f"not merging {path.parent} ({settings}) with {first[0]} ({first[1]}): "
                    "their scores are not comparable"
                )
        for r in _read_scores(path):
            key = (r["method"], r["crop"], r["fingerprint"])
            if key not in seen:
                seen.add(key)
                merged.append(r)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "scores.csv", _rows_to_csv(merged, SCORE_FIELDS))
    return len(merged)


def _report_only(out: Path, config: EvalConfig, plots: bool) -> list[dict[str, Any]]:
    """Summaries and plots of ``out/scores.csv`` as it is (nothing is run, params.json kept)."""
    rows = _read_scores(out / "scores.csv")
    if not rows:
        raise InputError(f"no scores to report in {out / 'scores.csv'}")
    methods = ["untouched", *[m for m in config.methods if m != "untouched"]]
    summary, common, keep = _write_summaries(rows, methods, out)
    if plots:
        _plot(rows, common, keep, out)
    return summary


def _load_attacker(
    attacker: Any, cameras: Sequence[str], photos: Sequence[str]
) -> tuple[Any, dict[str, Any] | None]:
    """The attacker model (or None) and what params.json records of it; refuses a model that
    lacks a camera or trained on a photo this evaluation scores."""
    if attacker is None:
        return None, None
    import hashlib

    from .attacker import AttackerModel

    model = attacker if isinstance(attacker, AttackerModel) else AttackerModel.load(attacker)
    model.check_cameras(cameras)
    split = model.meta.get("split", {})
    trained = {*split.get("train", []), *split.get("validation", [])}
    leaked = sorted(trained & set(photos))
    if leaked:
        raise InputError(f"the attacker model trained on {leaked}, which this evaluation scores")
    info = {"cameras": model.cameras, "config": model.config.to_dict(),
            "data_sha256": model.meta.get("data_sha256"), "seed": model.meta.get("seed")}
    if not isinstance(attacker, AttackerModel):
        info["file"] = str(attacker)
        info["file_sha256"] = hashlib.sha256(Path(attacker).read_bytes()).hexdigest()
    return model, info


def _check_same_attacker(
    earlier: dict[str, Any], info: dict[str, Any] | None, out: Path, have_rows: bool
) -> None:
    """Resumed rows must have been scored by the same attacker (or none, when none is given)."""
    before = earlier.get("attacker") or {}
    now = info or {}
    if have_rows and (bool(before) != bool(now)
                      or before.get("file_sha256") != now.get("file_sha256")):
        raise InputError(
            f"{out} holds scores made with another attacker model (or none): use another --out, "
            "or --fresh to start over"
        )


def _output_path(out: Path, method: str, crop_id: str) -> Path:
    return out / "outputs" / method / f"{crop_id}.png"


def score_saved_outputs(
    out: str | Path, attacker: str | Path | Any, *, plots: bool = True,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Score the outputs a finished ``evaluate(..., save_outputs=True)`` kept in ``out`` with a
    learned attacker: fill the ``attacker`` column of ``out/scores.csv``, rewrite the summaries
    (and plots) and record the model in ``params.json``; return the summary rows.

    Crops whose output file is missing are left unscored (their ``attacker`` cell empty).
    """
    from .io import read_image

    say = log or (lambda _msg: None)
    out = Path(out)
    rows = _read_scores(out / "scores.csv")
    if not rows or not (out / "params.json").is_file():
        raise InputError(f"no finished evaluation in {out} (scores.csv and params.json)")
    params = json.loads((out / "params.json").read_text())
    model, info = _load_attacker(
        attacker, params.get("cameras") or sorted({r["fingerprint"] for r in rows}),
        (params.get("files") or {}).get("photos", []),
    )
    probs: dict[tuple[str, str], dict[str, float]] = {}
    missing = 0
    for r in rows:
        key = (r["method"], r["crop"])
        if key not in probs:
            path = _output_path(out, *key)
            probs[key] = model.predict_proba(read_image(path)) if path.is_file() else {}
            missing += not probs[key]
            if probs[key]:
                say(f"attacker {key[0]:18s} {key[1]:32s} p(true) "
                    f"{probs[key].get(r['camera'], float('nan')):.3f}")
        r["attacker"] = probs[key].get(r["fingerprint"], "")
    if missing:
        say(f"{missing} output(s) not kept in {out / 'outputs'}: left unscored")
    atomic_write_text(out / "scores.csv", _rows_to_csv(rows, SCORE_FIELDS))
    params["attacker"] = info
    atomic_write_text(out / "params.json", json.dumps(_json_safe(params), indent=2) + "\n")
    config = EvalConfig.from_dict(params["config"]) if params.get("config") else EvalConfig()
    return _report_only(out, config, plots)


def evaluate(
    data: str | Path,
    out: str | Path,
    config: EvalConfig | None = None,
    *,
    resume: bool = True,
    plots: bool = True,
    log: Callable[[str], None] | None = None,
    dataset: Dataset | None = None,
    compute: bool = True,
    attacker: str | Path | Any | None = None,
    save_outputs: bool = False,
) -> list[dict[str, Any]]:
    """Run the protocol and write ``scores.csv``, ``summary.csv``, ``summary_common.csv``,
    ``summary.json``, ``params.json`` and the PNG plots into ``out``; return the summary rows.

    ``summary.csv`` uses every crop each method has; ``summary_common.csv`` (and the plots) only
    the crops that every method has, so an interrupted run still compares like with like.
    ``compute=False`` only re-summarises and re-plots what ``out/scores.csv`` holds (e.g. after
    merging the score files of runs made in parallel).

    Methods run one after the other over all crops (the cheap baselines first), and every crop's
    scores are written as soon as they exist.  With ``resume`` the (method, crop) pairs already in
    ``out/scores.csv`` are kept and skipped.

    ``attacker`` (a model file or :class:`dippas_core.attacker.AttackerModel`) adds the learned
    attacker as another detector: every output's per-camera probability goes into the
    ``attacker`` column.  It must know every camera, and must not have trained on a photo that
    is scored here.  ``save_outputs`` keeps every output as a lossless PNG in
    ``out/outputs/<method>/<crop>.png``, so another detector can score them later
    (:func:`score_saved_outputs`).
    """
    from .edges import edge_mask
    from .io import write_image

    config = config or EvalConfig()
    say = log or (lambda _msg: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    t_start = time.perf_counter()
    if not compute:
        return _report_only(out, config, plots)
    if dataset is None:
        dataset = load_dataset(data, config, cache_dir=out / "fingerprints", log=say)
    say(f"{len(dataset.crops)} crops, {len(dataset.cameras)} cameras, region {dataset.region} px")
    model, attacker_info = _load_attacker(
        attacker, dataset.cameras, dataset.files.get("photos", [])
    )

    scores_path = out / "scores.csv"
    rows = _read_scores(scores_path) if resume else []
    done = {(r["method"], r["crop"]) for r in rows}
    methods = ["untouched", *[m for m in config.methods if m != "untouched"]]
    edges = {c.crop_id: edge_mask(c.image, **config.edge_options) for c in dataset.crops}
    notes: dict[str, dict[str, Any]] = {}
    if resume and (out / "params.json").is_file():
        earlier = json.loads((out / "params.json").read_text())
        _check_resumable(earlier.get("config") or {}, config, out)
        _check_same_attacker(earlier, attacker_info, out, bool(rows))
        notes = earlier.get("method_notes") or {}

    versions = environment_info()

    def flush(partial: bool) -> list[dict[str, Any]]:
        atomic_write_text(scores_path, _rows_to_csv(rows, SCORE_FIELDS))
        summary, common, keep = _write_summaries(rows, methods, out)
        params = {
            "config": config.to_dict(),
            "data": str(data),
            "files": dataset.files,
            "cameras": dataset.cameras,
            "region": dataset.region,
            "n_crops": len(dataset.crops),
            "started_utc": started,
            "elapsed_s": round(time.perf_counter() - t_start, 1),
            "partial": partial,
            "versions": versions,
            "method_notes": notes,
            "attacker": attacker_info,
        }
        atomic_write_text(out / "params.json", json.dumps(_json_safe(params), indent=2) + "\n")
        return summary, common, keep

    def plot(common: list[dict[str, Any]], keep: set[str]) -> None:
        if plots:
            _plot(rows, common, keep, out)

    summary: list[dict[str, Any]] = []
    for name in methods if compute else []:
        method = METHODS[name]
        for i, crop in enumerate(dataset.crops):
            if (name, crop.crop_id) in done:
                continue
            K_true = dataset.fingerprint_crop(crop.camera, crop, attack=True)
            t0 = time.perf_counter()
            try:
                result = method.run(
                    crop.image,
                    K_true if method.needs_fingerprint else None,
                    MethodContext(config, config.seed + i, crop.crop_id),
                )
            except DippasError as exc:  # e.g. a DIP run that never reached tau: note it, go on
                notes.setdefault(name, {})[crop.crop_id] = {"error": str(exc)}
                say(f"{name:18s} {crop.crop_id:32s} FAILED: {exc}")
                continue
            seconds = time.perf_counter() - t0
            image, info = result if isinstance(result, tuple) else (result, {})
            if save_outputs:
                write_image(_output_path(out, name, crop.crop_id), _to_uint8(image))
            if info:
                notes.setdefault(name, {})[crop.crop_id] = info
            fps = {c: dataset.fingerprint_crop(c, crop) for c in dataset.cameras}
            quality, per_fp = score_output(
                image, crop.image, fps, edges[crop.crop_id], sigma=config.sigma, pce=config.pce
            )
            learned = model.predict_proba(_to_uint8(image)) if model is not None else {}
            for cam, sc in per_fp.items():
                rows.append(
                    {
                        "size": crop.size,
                        "crop": crop.crop_id,
                        "photo": crop.photo,
                        "camera": crop.camera,
                        "top": crop.top,
                        "left": crop.left,
                        "method": name,
                        "fingerprint": cam,
                        "label": int(cam == crop.camera),
                        **sc,
                        "psnr": quality,
                        "seconds": seconds,
                        "attacker": learned.get(cam, ""),
                    }
                )
            summary, common, keep = flush(partial=True)
            if seconds > 5.0:  # slow methods: keep the plots current too
                plot(common, keep)
            say(
                f"{name:18s} {crop.crop_id:32s} PSNR {quality:6.2f} dB  "
                f"NCC(true) {per_fp[crop.camera]['ncc']:+.5f}  {seconds:6.1f} s"
            )
        flush(partial=True)
    summary, common, keep = flush(partial=False)
    plot(common, keep)
    return summary
