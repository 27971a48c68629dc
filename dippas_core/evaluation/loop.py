"""The run: every method over every crop, scores written as they come, resumable.

:func:`evaluate` builds an :class:`EvaluationRun` (the rows so far, the methods' notes, where
they go) and runs it method after method; every crop's scores are saved as soon as they exist.
Messages go to the ``log`` callback; the library prints nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..atomic import atomic_write_text
from ..attribution import pce_kind
from ..errors import DippasError, InputError
from ..fidelity import MEASURES, bar_names, bars_for
from ..jsonio import jsonable
from .config import EvalConfig
from .dataset import Crop, Dataset, load_dataset
from .methods import METHODS, MethodContext
from .plots import write_plots
from .scoring import PCE_SHIFT_RANGE, score_output
from .tables import SCORE_FIELDS, check_resumable, read_scores, rows_to_csv, write_summaries

if TYPE_CHECKING:
    from ..fidelity import Fidelity

__all__ = ["EvaluationRun", "evaluate", "score_saved_outputs"]

#: Seconds a method may take on a crop before the plots are redrawn after it (slow methods).
_REPLOT_AFTER_S = 5.0


def _silent(_message: str) -> None:
    """The ``log`` of a caller that wants no messages."""


def _plot(rows, common, keep, out: Path) -> None:
    if common:
        write_plots([r for r in rows if r["crop"] in keep], common, out)


def _report_only(out: Path, config: EvalConfig, plots: bool) -> list[dict[str, Any]]:
    """Summaries and plots of ``out/scores.csv`` as it is (nothing is run, params.json kept)."""
    rows = read_scores(out / "scores.csv")
    if not rows:
        raise InputError(f"no scores to report in {out / 'scores.csv'}")
    summary, common, keep = write_summaries(rows, _method_names(config), out)
    if plots:
        _plot(rows, common, keep, out)
    return summary


def _method_names(config: EvalConfig) -> list[str]:
    """The methods in the order they run: ``untouched`` (the reference) first."""
    return ["untouched", *[m for m in config.methods if m != "untouched"]]


def _load_attacker(
    attacker: Any, cameras: Sequence[str], photos: Sequence[str], loaded: Any = None
) -> tuple[Any, dict[str, Any] | None]:
    """The attacker model (or None) and what params.json records of it; refuses a model that
    lacks a camera or trained on a photo this evaluation scores.  ``loaded``: the model file
    ``attacker`` already read (before any work)."""
    if attacker is None:
        return None, None
    import hashlib

    from ..attacker import AttackerModel

    model = attacker if isinstance(attacker, AttackerModel) else (
        loaded if loaded is not None else AttackerModel.load(attacker)
    )
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


def _write_params(out: Path, params: dict[str, Any]) -> None:
    text = json.dumps(jsonable(params, strict=True), indent=2) + "\n"
    atomic_write_text(out / "params.json", text)


def score_saved_outputs(
    out: str | Path, attacker: str | Path | Any, *, plots: bool = True,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Score the outputs a finished ``evaluate(..., save_outputs=True)`` kept in ``out`` with a
    learned attacker: fill the ``attacker`` column of ``out/scores.csv``, rewrite the summaries
    (and plots) and record the model in ``params.json``; return the summary rows.

    Crops whose output file is missing are left unscored (their ``attacker`` cell empty).
    """
    from ..io import read_image

    say = log or _silent
    out = Path(out)
    rows = read_scores(out / "scores.csv")
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
    atomic_write_text(out / "scores.csv", rows_to_csv(rows, SCORE_FIELDS))
    params["attacker"] = info
    _write_params(out, params)
    config = EvalConfig.from_dict(params["config"]) if params.get("config") else EvalConfig()
    return _report_only(out, config, plots)




@dataclass
class EvaluationRun:
    """One evaluation in progress: its rows so far, the methods' notes, and where they go.

    :meth:`run_method` scores a method on every crop it has not scored yet, saving after each;
    :meth:`save` writes ``scores.csv``, the summaries and ``params.json`` (``partial`` until the
    last method is done).
    """

    out: Path
    data: str | Path
    config: EvalConfig
    dataset: Dataset
    rows: list[dict[str, Any]]
    notes: dict[str, dict[str, Any]]
    attacker: Any = None
    attacker_info: dict[str, Any] | None = None
    plots: bool = True
    save_outputs: bool = False
    log: Callable[[str], None] = _silent
    started: str = field(
        default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    )
    versions: dict[str, str] = field(default_factory=dict)
    t_start: float = field(default_factory=time.perf_counter)
    _edges: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        from ..edges import edge_mask

        self._edges = {
            c.crop_id: edge_mask(c.image, **self.config.edge_options) for c in self.dataset.crops
        }

    @property
    def methods(self) -> list[str]:
        """The methods in the order they run (``untouched`` first)."""
        return _method_names(self.config)

    def save(self, *, partial: bool) -> tuple[list[dict], list[dict], set[str]]:
        """Write every file of the run; return (summary, summary on common crops, those crops)."""
        atomic_write_text(self.out / "scores.csv", rows_to_csv(self.rows, SCORE_FIELDS))
        tables = write_summaries(self.rows, self.methods, self.out)
        _write_params(
            self.out,
            {
                "config": self.config.to_dict(),
                "data": str(self.data),
                "files": self.dataset.files,
                "cameras": self.dataset.cameras,
                "region": self.dataset.region,
                "n_crops": len(self.dataset.crops),
                "started_utc": self.started,
                "elapsed_s": round(time.perf_counter() - self.t_start, 1),
                "partial": partial,
                "pce_kind": pce_kind(PCE_SHIFT_RANGE),
                "versions": self.versions,
                "method_notes": self.notes,
                "attacker": self.attacker_info,
            },
        )
        return tables

    def plot(self, common: list[dict[str, Any]], keep: set[str]) -> None:
        """Redraw the figures (when the run makes plots)."""
        if self.plots:
            _plot(self.rows, common, keep, self.out)

    def run_method(self, name: str) -> None:
        """Score method ``name`` on every crop it has no rows for yet, saving after each."""
        done = {r["crop"] for r in self.rows if r["method"] == name}
        for i, crop in enumerate(self.dataset.crops):
            if crop.crop_id not in done:
                self._run_crop(name, i, crop)
        self.save(partial=True)

    def _run_crop(self, name: str, index: int, crop: Crop) -> None:
        method, config = METHODS[name], self.config
        K_true = self.dataset.fingerprint_crop(crop.camera, crop, attack=True)
        t0 = time.perf_counter()
        try:
            result = method.run(
                crop.image,
                K_true if method.needs_fingerprint else None,
                MethodContext(config, config.seed + index, crop.crop_id),
            )
        except DippasError as exc:  # e.g. a DIP run that never reached tau: note it, go on
            self.notes.setdefault(name, {})[crop.crop_id] = {"error": str(exc)}
            self.log(f"{name:18s} {crop.crop_id:32s} FAILED: {exc}")
            return
        seconds = time.perf_counter() - t0
        image, info = result if isinstance(result, tuple) else (result, {})
        if info:
            self.notes.setdefault(name, {})[crop.crop_id] = info
        quality, ncc_true = self._score(name, crop, image, seconds)
        _summary, common, keep = self.save(partial=True)
        if seconds > _REPLOT_AFTER_S:  # slow methods: keep the plots current too
            self.plot(common, keep)
        broken = quality.failures(self.bars)
        self.log(
            f"{name:18s} {crop.crop_id:32s} PSNR {quality.psnr:6.2f} dB  "
            f"SSIM {quality.ssim:.4f}  max |Δ| {quality.max_abs:3.0f}  "
            f"shift {quality.colour_shift:5.2f}  "
            f"{'bars broken: ' + bar_names(broken) if broken else 'bars met'}"
            f"  NCC(true) {ncc_true:+.5f}  {seconds:6.1f} s"
        )

    @property
    def bars(self) -> dict[str, float]:
        """The fidelity bars every method's output is held to: the protocol compares them at
        the DIPPAS preset's tau, so a preset whose tau is below 38 dB lowers the PSNR bar for
        all (:func:`~dippas_core.fidelity.bars_for`)."""
        return bars_for(self.config.anonymize_config(self.config.seed).assembly_tau)

    def _score(self, name: str, crop: Crop, image: Any, seconds: float) -> tuple[Fidelity, float]:
        """Add the rows of ``image`` (method ``name``'s output for ``crop``) against every camera;
        return its fidelity (PSNR and the rest) and its NCC with the true camera."""
        from ..io import to_uint8, write_image

        if self.save_outputs:
            write_image(_output_path(self.out, name, crop.crop_id), to_uint8(image))
        fps = {c: self.dataset.fingerprint_crop(c, crop) for c in self.dataset.cameras}
        quality, per_fp = score_output(
            image, crop.image, fps, self._edges[crop.crop_id],
            sigma=self.config.sigma, pce=self.config.pce, block=self.seam_block(crop),
        )
        fidelity = {k: getattr(quality, k) for k in MEASURES}
        fidelity["bars_failed"] = "; ".join(quality.failures(self.bars))
        learned = (
            self.attacker.predict_proba(to_uint8(image)) if self.attacker is not None else {}
        )
        for cam, sc in per_fp.items():
            self.rows.append(
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
                    "psnr": quality.psnr,
                    **fidelity,
                    "seconds": seconds,
                    "attacker": learned.get(cam, ""),
                }
            )
        return quality, per_fp[crop.camera]["ncc"]

    def seam_block(self, crop: Crop) -> int:
        """The block side whose edges are seams in every method's output (the DIPPAS methods'
        assembly block, as their reports measure it): one grid for every method."""
        return int(min(self.config.dippas.assembly.B, max(crop.image.shape[:2])))

    def run(self) -> list[dict[str, Any]]:
        """Every method in turn, then the final files and plots; return the summary rows."""
        for name in self.methods:
            self.run_method(name)
        summary, common, keep = self.save(partial=False)
        self.plot(common, keep)
        return summary


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
    (:func:`score_saved_outputs`).  ``log`` receives the progress messages.
    """
    from ..run import environment_info

    config = config or EvalConfig()
    say = log or _silent
    out = Path(out)
    loaded = None
    if compute and isinstance(attacker, str | Path):
        from ..attacker import AttackerModel

        loaded = AttackerModel.load(attacker)  # a bad model file is refused before any work
    out.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    t_start = time.perf_counter()
    if not compute:
        return _report_only(out, config, plots)
    if dataset is None:
        dataset = load_dataset(data, config, cache_dir=out / "fingerprints", log=say)
    say(f"{len(dataset.crops)} crops, {len(dataset.cameras)} cameras, region {dataset.region} px")
    model, attacker_info = _load_attacker(
        attacker, dataset.cameras, dataset.files.get("photos", []), loaded
    )
    rows = read_scores(out / "scores.csv") if resume else []
    notes: dict[str, dict[str, Any]] = {}
    if resume and (out / "params.json").is_file():
        earlier = json.loads((out / "params.json").read_text())
        check_resumable(earlier.get("config") or {}, config, out)
        _check_same_attacker(earlier, attacker_info, out, bool(rows))
        notes = earlier.get("method_notes") or {}
    return EvaluationRun(
        out=out,
        data=data,
        config=config,
        dataset=dataset,
        rows=rows,
        notes=notes,
        attacker=model,
        attacker_info=attacker_info,
        plots=plots,
        save_outputs=save_outputs,
        log=say,
        started=started,
        t_start=t_start,
        versions=environment_info(),
    ).run()
