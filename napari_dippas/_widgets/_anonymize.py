"""Anonymize dock widget: run (and stop) the DIP inversion while watching it."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)

from .._layer_updates import layer_source_path, show_rectangles, upsert_run_layer
from .._layers import (
    Region,
    anonymized_layer,
    block_heatmap_layer,
    difference_layer,
    dippas_kind,
    rectangles_layer,
)
from .._models import (
    DECISION_LEVEL_PCE,
    AnonymizeSettings,
    RunHistory,
    StepSummary,
    attribute,
    estimate_run_cost,
    run_provenance,
    sha256_array,
    trace_warning,
    write_provenance,
)
from .._run_state import (
    RunState,
    TileFinished,
    TileStarted,
    TraceCheck,
    job_key,
    resumable_run,
)
from .._workers import start_job
from ._attribution import camera_of, is_fingerprint, is_photo, size_problem
from ._forms import DockWidget, LayerChoice, PathEdit, RegionPicker
from ._plots import LivePlot
from ._snapshots import SnapshotsView

if TYPE_CHECKING:
    import napari

__all__ = ["AnonymizeWidget", "DEFAULT_RUNS_FOLDER", "PRESET_LR", "TraceCheck", "device_choices"]

#: outside any evidence folder: run folders hold copies of the photo and its fingerprint
DEFAULT_RUNS_FOLDER = Path.home() / "dippas-runs"
#: learning rate the viewer starts each preset with: the evaluation's measured CPU setting.
#: With the tiny network a 64×64 crop of a Dresden photo reaches tau at iteration 81 with 1e-2,
#: at 498 with the paper's 1e-3 (scripts/preset_check.py, seed 0); the paper network keeps 1e-3
PRESET_LR = {"tiny": 1e-2, "cpu": 1e-2}
#: seconds between two updates of the live plot (a blit: a few ms)
PLOT_INTERVAL_S = 0.3


def device_choices() -> tuple[list[str], list[str]]:
    """``(choices, descriptions)``: ``auto`` plus each device torch finds, and one line each."""
    from dippas_core.dip.device import describe_devices

    lines = describe_devices()
    names = [line.split()[0] for line in lines]
    return ["auto", *dict.fromkeys(names)], lines


class AnonymizeWidget(DockWidget):
    """Run the DIPPAS inversion on a photo layer; Run turns into Stop while it runs.

    The scriptable state is in :attr:`settings` (:class:`AnonymizeSettings`, edits show in the
    form), :attr:`state` (:class:`~napari_dippas._run_state.RunState`: :attr:`job` and the
    tiles of a whole-photo run, fed by the run's callbacks) and :attr:`history`
    (:class:`RunHistory`).  A photo (or region) larger than the tile size runs tile by tile: the
    plan is drawn over the photo (layer ``tiles``), each tile coloured by its state; Stop keeps
    the finished tiles and Run on the same photo, region and settings resumes from them.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer.
    """

    #: emitted on the main thread with the run folder when a run ends (finished or stopped)
    run_finished = Signal(str)

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__(napari_viewer)
        self.settings = AnonymizeSettings()
        self.state = RunState()
        self.job = self.state.job
        self.history = RunHistory()
        self.worker = None
        self.cancel = None
        self.run_path: Path | None = None
        #: the ``snapshots`` layer of a one-tile run (None for a run in tiles)
        self.snapshots: SnapshotsView | None = None
        self._last_plot = 0.0
        #: 16 when the photo is 16-bit: the anonymized image is then saved 16-bit
        self._bit_depth = 8
        #: the region of the photo the current run works on, and the photo's name
        self._region: Region | None = None
        self._photo_name = ""
        self._record: dict[str, Any] | None = None
        self._started_at = 0.0
        #: asks the analyst to confirm a large run (replaceable in scripts and tests)
        self.confirm: Callable[[str], bool] = self._ask
        #: the last trace check (PCE of the input before anonymizing), shown with the status
        self.trace_note = ""
        #: what the run does besides iterating (e.g. "Resuming the stopped run …")
        self.run_note = ""
        #: whether the current run goes tile by tile (a photo larger than the tile size)
        self._tiled = False
        #: the last cost estimate's worker
        self.estimate_worker = None
        #: the run folder the ``tiles`` layer shows ("" for a plan not yet run)
        self._tiles_run_dir = ""

        self.photo = LayerChoice(napari_viewer, is_photo, prefer="photo")
        self.fingerprint = LayerChoice(napari_viewer, is_fingerprint, prefer="fingerprint")
        self.region = RegionPicker(napari_viewer, self._photo_shape)
        self.mode = QComboBox()
        self.mode.addItems(["aware", "blind"])
        self.mode.setToolTip("aware: remove the fingerprint K; blind: use the photo's own residual")
        choices, lines = device_choices()
        self.device = QComboBox()
        self.device.addItems(choices)
        self.devices_found = QLabel("found: " + "; ".join(lines))
        self.devices_found.setWordWrap(True)
        self.preset = QComboBox()
        self.preset.addItems(["tiny", "cpu", "paper"])
        self.preset.setToolTip("network size: tiny (tests), cpu (laptop), paper (GPU)")
        self.seed = QSpinBox(minimum=0, maximum=2**31 - 1)
        self.tau = QDoubleSpinBox(minimum=0.0, maximum=99.0, decimals=1, singleStep=0.5)
        self.tau.setSuffix(" dB")
        self.tau.setToolTip("outputs at least this close to the photo are kept as snapshots")
        self.stop_psnr = QDoubleSpinBox(minimum=0.0, maximum=99.0, decimals=1, singleStep=0.5)
        self.stop_psnr.setSuffix(" dB")
        self.max_iter = QSpinBox(minimum=1, maximum=1_000_000, singleStep=100)
        self.lr = QDoubleSpinBox(minimum=1e-5, maximum=1.0, decimals=5, singleStep=1e-4)
        self.lr.setToolTip("Adam learning rate (the paper: 0.001)")
        self.tile_size = QSpinBox(minimum=64, maximum=8192, singleStep=32)
        self.tile_size.setSuffix(" px")
        self.tile_size.setToolTip("larger photos are cut into tiles of this side, one network each")
        self.overlap = QSpinBox(minimum=32, maximum=4096, singleStep=32)
        self.overlap.setSuffix(" px")
        self.overlap.setToolTip("neighbouring tiles overlap by this much (blended in the overlap)")
        self.runs_folder = PathEdit("folder", placeholder="folder for run directories")
        self.runs_folder.set_path(DEFAULT_RUNS_FOLDER)
        self.plan_button = QPushButton("Plan && estimate time")
        self.plan_button.setToolTip(
            "draw the tiles over the photo and time a few iterations on the chosen device"
        )
        self.plan_button.clicked.connect(self.plan_and_estimate)
        self.estimate = QLabel("")
        self.estimate.setWordWrap(True)
        self.estimate.setVisible(False)  # shown with an estimate (no gap in the form without)
        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.toggle)
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m iterations")
        self.status = QLabel(self.job.describe())
        self.status.setWordWrap(True)
        self.status.setMinimumHeight(3 * self.status.fontMetrics().lineSpacing())
        self.plot = LivePlot(napari_viewer)

        form = QFormLayout()
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)  # narrow docks: wrap
        form.addRow("photo", self.photo)
        form.addRow("region", self.region)
        form.addRow("mode", self.mode)
        form.addRow("fingerprint", self.fingerprint)
        form.addRow("device", self.device)
        form.addRow(self.devices_found)
        form.addRow("network", self.preset)
        form.addRow("seed", self.seed)
        form.addRow("keep ≥ (tau)", self.tau)
        form.addRow("stop at PSNR", self.stop_psnr)
        form.addRow("max iterations", self.max_iter)
        form.addRow("learning rate", self.lr)
        form.addRow("tile size", self.tile_size)
        form.addRow("tile overlap", self.overlap)
        form.addRow("runs folder", self.runs_folder)
        layout = QVBoxLayout(self.body)
        layout.addLayout(form)
        layout.addWidget(self.plan_button)
        layout.addWidget(self.estimate)
        layout.addWidget(self.run_button)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.plot)
        layout.addStretch(1)

        self._bind()
        self.job.events.connect(self._show_job)
        for event in (self.state.tiles.events.rects, self.state.tiles.events.states,
                      self.state.tiles.events.offset):
            event.connect(self._show_tiles)
        self.state.trace_checked.connect(self._show_trace)
        # a plan on screen follows the photo, the region and the tile settings
        for spin in self.region.fields.values():
            spin.valueChanged.connect(self._plan_changed)
        self.settings.events.tile_size.connect(self._plan_changed)
        self.settings.events.overlap.connect(self._plan_changed)
        self.photo.currentTextChanged.connect(self._plan_changed)
        #: set once torch and the kernels are loaded (see :meth:`_warm_up`)
        self.warm = threading.Event()
        threading.Thread(target=self._warm_up, name="dippas-warm-up", daemon=True).start()

    def _warm_up(self) -> None:
        """Load torch's lazy parts and the Numba kernels now, off the GUI thread.

        A first run would otherwise load them while it runs, holding the GIL for stretches of a
        few hundred ms and stalling the viewer; a run started before this ends just waits for
        the same imports.
        """
        from dippas_core.dip.inversion import warm_up

        try:
            warm_up()
        finally:
            self.warm.set()

    # -- settings <-> form ----------------------------------------------------------------------
    def _bind(self) -> None:
        """Two-way binding between :attr:`settings` and the form fields."""
        combos = {"mode": self.mode, "device": self.device, "preset": self.preset}
        spins = {"seed": self.seed, "tau_psnr": self.tau, "stop_psnr": self.stop_psnr,
                 "max_iter": self.max_iter, "tile_size": self.tile_size, "overlap": self.overlap}
        for name, combo in combos.items():
            combo.setCurrentText(getattr(self.settings, name))
            combo.currentTextChanged.connect(
                lambda text, n=name: setattr(self.settings, n, text)
            )
            getattr(self.settings.events, name).connect(
                lambda value, c=combo: c.setCurrentText(value) if c.currentText() != value else None
            )
        for name, spin in spins.items():
            spin.setValue(getattr(self.settings, name))
            spin.valueChanged.connect(lambda value, n=name: setattr(self.settings, n, value))
            getattr(self.settings.events, name).connect(
                lambda value, s=spin: s.setValue(value) if s.value() != value else None
            )
        self.settings.events.mode.connect(self._mode_changed)
        self.settings.events.preset.connect(self._apply_preset)
        self.lr.valueChanged.connect(lambda value: setattr(self.settings, "lr", value))
        self.settings.events.lr.connect(self._show_lr)
        self._mode_changed(self.settings.mode)
        self._apply_preset(self.settings.preset)

    def _show_lr(self, value: float | None) -> None:
        if value is not None and self.lr.value() != value:
            self.lr.setValue(value)

    def _mode_changed(self, mode: str) -> None:
        self.fingerprint.setEnabled(mode == "aware")

    def _apply_preset(self, name: str) -> None:
        """A new network preset brings its own stopping rule, snapshot threshold and tiles."""
        from dippas_core.dip import DIPConfig
        from dippas_core.pipeline import PRESETS

        base = DIPConfig.preset(name)
        self.settings.update(
            {"tau_psnr": base.tau_psnr, "stop_psnr": base.stop_psnr, "max_iter": base.max_iter,
             "lr": PRESET_LR.get(name, base.lr), "tile_size": PRESETS[name]["tile_size"],
             "overlap": PRESETS[name]["overlap"]}
        )

    # -- run / stop -----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.job.status in ("running", "stopping")

    def toggle(self) -> None:
        """The Run/Stop button."""
        if self.running:
            self.stop()
        else:
            self.start()

    def stop(self) -> None:
        """Ask the inversion to stop; it ends after the current iteration and frees the device."""
        if self.cancel is not None and self.running:
            self.cancel.cancel()
            self.job.status = "stopping"

    def _photo_shape(self) -> tuple[int, ...] | None:
        layer = self.photo.layer()
        return None if layer is None else tuple(layer.data.shape[:2])

    def _inputs(self) -> tuple[np.ndarray, Any, Region]:
        """The (cropped) photo, the (cropped) fingerprint or None, and the region.

        Raises
        ------
        dippas_core.errors.InputError
            In the analyst's words, with what to do.
        """
        from dippas_core.errors import InputError

        photo = self.photo.layer()
        if photo is None:
            raise InputError("Open a colour photo first (it appears in the 'photo' list).")
        data = np.asarray(photo.data)
        if not (data.ndim == 3 and data.shape[-1] == 3):
            raise InputError(
                f"The photo '{photo.name}' is gray; DIPPAS works on colour photos. Open the "
                "original colour file."
            )
        fp = None
        if self.settings.mode == "aware":
            fp = self.fingerprint.layer()
            if fp is None:
                raise InputError(
                    "No fingerprint: estimate one in the Fingerprint dock (or open a saved "
                    ".npz), or choose mode 'blind' to work without it."
                )
            problem = size_problem(photo, fp)
            if problem is not None:
                raise InputError(problem)
        try:
            region = self.region.region(data.shape)
        except ValueError as exc:
            raise InputError(f"{str(exc)[0].upper()}{str(exc)[1:]}.") from None
        self._photo_name = photo.name
        crop = data if region.is_whole(data.shape) else region.crop(data)
        if fp is None:
            return crop, None, region
        info = (fp.metadata or {}).get("dippas", {}) if dippas_kind(fp.metadata) else {}
        K = np.asarray(fp.data, np.float32)
        from dippas_core.fingerprint import Fingerprint

        fingerprint = Fingerprint(
            K=K if region.is_whole(data.shape) else region.crop(K), camera=camera_of(fp),
            n_images=info.get("n_images", 0), sigma=info.get("sigma", 5.0),
            version=info.get("version", ""),
        )
        return crop, fingerprint, region

    def _ask(self, question: str) -> bool:
        """A Yes/No box; the default answer is No (a big run is never started by accident)."""
        answer = QMessageBox.question(
            self, "A large run", question,
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

    def _provenance(self, photo: np.ndarray, fingerprint: Any, region: Region) -> dict:
        layer = self.photo.layer()
        whole = np.asarray(layer.data) if layer is not None else photo
        fp = None if fingerprint is None else {
            "camera": fingerprint.camera, "n_images": int(fingerprint.n_images),
            "sigma": float(fingerprint.sigma), "version": fingerprint.version,
        }
        return run_provenance(
            source_name=self._photo_name,
            source_path=layer_source_path(layer) if layer is not None else None,
            photo=whole, region=region, fingerprint=fp,
            settings=self.settings.model_dump(),
        )

    def new_run_path(self) -> Path:
        """A fresh run folder inside the runs folder (time stamp + seed)."""
        root = self.runs_folder.path() or DEFAULT_RUNS_FOLDER
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = root / f"run-{stamp}-seed{self.settings.seed}"
        k = 1
        while path.exists():
            k += 1
            path = root / f"run-{stamp}-seed{self.settings.seed}-{k}"
        return path

    # -- the tile plan and the cost, before Run ---------------------------------------------------
    def _plan(self) -> tuple[Any, Region, tuple[int, ...]]:
        """The tile plan of the run Run would start, its region and the photo's shape.

        Raises
        ------
        dippas_core.errors.InputError
            No photo, a bad region or tile settings (in the analyst's words).
        """
        from dippas_core.errors import InputError
        from dippas_core.tiling import plan_tiles

        layer = self.photo.layer()
        if layer is None:
            raise InputError("Open a colour photo first (it appears in the 'photo' list).")
        shape = tuple(np.shape(layer.data))
        try:
            region = self.region.region(shape)
        except ValueError as exc:
            raise InputError(f"{str(exc)[0].upper()}{str(exc)[1:]}.") from None
        plan = plan_tiles((region.h, region.w), self.settings.tile_size, self.settings.overlap)
        return plan, region, shape

    def show_plan(self) -> Any:
        """Draw the tile plan over the photo (layer ``tiles``, every tile waiting); the plan.

        None (and the reason in the status line) when there is nothing to plan.
        """
        from dippas_core.errors import DippasError

        try:
            plan, region, _ = self._plan()
        except DippasError as exc:
            self.status.setText(str(exc))
            return None
        self._tiles_run_dir = ""
        self.state.tiles.set_plan(plan, region.translate)
        return plan

    def _show_estimate(self, text: str) -> None:
        self.estimate.setText(text)
        self.estimate.setVisible(bool(text))

    def _plan_changed(self, *_: Any) -> None:
        """The plan's inputs changed: the estimate is stale, a plan on screen is redrawn."""
        from dippas_core.errors import DippasError

        if self.running or self.closed:
            return
        self._show_estimate("")
        if self.state.tiles.rects:
            try:
                plan, region, _ = self._plan()
            except DippasError:
                return  # (e.g. a region typed halfway)
            self._tiles_run_dir = ""
            self.state.tiles.set_plan(plan, region.translate)

    def plan_and_estimate(self) -> None:
        """The "Plan & estimate time" button: draw the plan, then time this device (worker)."""
        from dippas_core.tiled import estimate_cost

        plan = self.show_plan()
        if plan is None or self.running:
            return
        config = self.settings.anonymize_config()
        shape = plan.shape
        self._show_estimate(f"{plan.describe()}; timing a few iterations on "
                              f"{self.settings.device}…")
        self.plan_button.setEnabled(False)

        def job(report: Callable[[Any], None]) -> Any:
            self.warm.wait(120)  # torch and the kernels load once, in the warm-up thread
            return estimate_cost(shape, config)

        def returned(cost: Any) -> None:
            if not self.closed:
                self._show_estimate(f"{plan.describe()}.\nTime: {cost.text}.")

        def errored(exc: BaseException) -> None:
            if not self.closed:
                self._show_estimate(f"No estimate: {exc}")

        def finished() -> None:
            if not self.closed:
                self.plan_button.setEnabled(True)

        self.estimate_worker = start_job(
            job, on_returned=returned, on_errored=errored, on_finished=finished,
            what="Time estimate",
        )

    def _show_tiles(self, *_: Any) -> None:
        """Draw :attr:`state`'s tiles over the photo (the ``tiles`` layer follows their states)."""
        tiles = self.state.tiles
        if self.closed or not tiles.rects or len(tiles.rects) != len(tiles.states):
            return  # (a new plan's fields arrive one event at a time)
        info = {"run_dir": self._tiles_run_dir} if self._tiles_run_dir else {}
        show_rectangles(
            self.viewer,
            rectangles_layer(tiles.rects, tiles.states, offset=tiles.offset, **info),
        )
        self._show_job()

    # -- run ---------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start a run in a worker thread (a stopped whole-photo run of the same job resumes)."""
        from dippas_core.assembly import check_assembly_params
        from dippas_core.cancel import CancelToken
        from dippas_core.errors import DippasError
        from dippas_core.tiled import PhotoRun

        if self.running:
            return
        try:
            photo, fingerprint, region = self._inputs()
            config = self.settings.anonymize_config()
            dip = config.dip
            plan, _, _ = self._plan()
            check_assembly_params(
                photo.shape[:2], config.tile, config.B, config.L, config.assembly_tau
            )
        except DippasError as exc:
            self.job.update({"status": "failed", "message": str(exc)})
            return
        self._tiled = tiled = len(plan) > 1
        key = job_key(photo, None if fingerprint is None else fingerprint.K, region.as_dict(),
                      self.settings.mode, config.to_dict())
        root = self.runs_folder.path() or DEFAULT_RUNS_FOLDER
        resume = resumable_run(root, key, len(plan)) if tiled else None
        if resume is None:
            cost = estimate_run_cost(photo.shape, dip.max_iter, self.settings.device)
            if cost.needs_confirmation and not self.confirm(cost.warning()):
                self.job.update({"status": "idle"})
                self.status.setText(
                    "Not started. Draw a region (Draw) to preview on part of the photo, or "
                    "choose a GPU device."
                )
                return
        self._region = region
        self._bit_depth = 16 if photo.dtype == np.uint16 else 8
        self.run_path = resume if resume is not None else self.new_run_path()
        self._record = record = self._provenance(photo, fingerprint, region)
        record["job_key"] = key
        self.cancel = cancel = CancelToken()
        self.history.clear()
        # the plot's one slow redraw (fonts, ticks, the tau line) happens now, on the click
        self.plot.show_history(self.history, dip.tau_psnr, final=True)
        self.trace_note = ""
        self.run_note = "" if resume is None else (
            f"Resuming the stopped run in {resume.name}: {PhotoRun.count_done(resume)} of "
            f"{len(plan)} tiles are already done and are not computed again."
        )
        self.job.start(dip.max_iter, str(self.run_path), dip.tau_psnr)
        self._started_at = time.monotonic()
        self._tiles_run_dir = str(self.run_path)
        self.state.tiles.set_plan(plan, region.translate)
        self.snapshots = None
        if tiled:
            self.progress.setRange(0, len(plan))
            self.progress.setFormat("%v / %m tiles")
        else:
            self.progress.setRange(0, dip.max_iter)
            self.progress.setFormat("%v / %m iterations")
            self.snapshots = SnapshotsView(
                self.viewer, self.run_path, region.translate, self.job, self.history
            )
            self.snapshots.prepare(photo.shape[:2])
            self.state.tiles.start_tile(0)  # one tile: the core reports no tile events
        self.progress.setValue(0)
        run_path, job_model = self.run_path, self.job
        written = threading.Event()

        def record_once() -> None:
            """The run folder exists (the tiles are about to run): say where it came from."""
            if not written.is_set():
                written.set()
                write_provenance(run_path, record)

        def job(report: Callable[[Any], None]) -> Any:
            from dippas_core.pipeline import anonymize

            def tile_started(tile: Any, _plan: Any) -> None:
                record_once()
                report(TileStarted(tile.index))

            def tile_done(tile: Any, stats: dict[str, Any]) -> None:
                record_once()
                report(TileFinished.from_stats(tile.index, stats))

            def step_taken(step: Any) -> None:
                record_once()  # a one-tile run's folder exists from its first step on
                report(StepSummary.from_step(step))

            # flagged before the inversion: is there a trace to remove at all?
            reference = None if fingerprint is None else fingerprint.K
            if reference is not None:  # (blind mode: the photo's own residual always "matches")
                check = attribute(photo, reference, sigma=config.sigma, block_size=config.B)
                report(TraceCheck(check.pce, int(photo.shape[0] * photo.shape[1])))
            result = anonymize(
                photo, fingerprint, config, run_dir=run_path, cancel=cancel,
                on_step=step_taken,
                on_tile=tile_started, on_tile_done=tile_done,
            )
            if result.report.get("partial"):
                record["partial"] = {"tiles_not_anonymized": result.report["tiles_not_anonymized"]}
            else:
                record.pop("partial", None)
                record["outputs"] = [{
                    "what": "assembled by the run (B, L, tau of the run's settings)",
                    "pixels_sha256": sha256_array(result.image),
                }]
            write_provenance(run_path, record)
            return result

        def returned(result: Any) -> None:
            # the status first, from a plain function: it must arrive even if the widget closed
            rep = result.report
            stop_reason = rep.get("inversion", {}).get("stop_reason", "")
            update = {"status": "cancelled" if stop_reason == "cancelled" else "finished",
                      "stop_reason": stop_reason}
            if rep.get("partial"):
                n, missing = len(rep["tiles"]), len(rep["tiles_not_anonymized"])
                update["message"] = (
                    f"Stopped: {n - missing} of {n} tiles are anonymized and kept in "
                    f"{Path(run_path).name}. Run again with the same photo, region and settings "
                    "to resume from there; nothing is shown as anonymized until every tile is."
                ) if missing < n else (
                    f"Stopped at iteration {job_model.iteration} of the first tile, before any "
                    "tile was finished: nothing was kept. Run again and let at least one tile "
                    "finish (a later Run resumes from the finished tiles)."
                )
            job_model.update(update)
            self._on_done(result)

        def errored(exc: BaseException) -> None:
            from dippas_core.assembly import NoSnapshotsError

            if isinstance(exc.__cause__, NoSnapshotsError):
                if cancel.cancelled:  # stopped before tau: nothing kept, not a failure
                    job_model.stopped_empty()
                else:
                    job_model.update({"status": "failed", "message": (
                        f"No output came within tau = {dip.tau_psnr:g} dB of the photo in "
                        f"{job_model.iteration} iterations (best {job_model.best_psnr:.1f} dB): "
                        "nothing was kept. Raise max iterations or the learning rate, or lower "
                        "tau, and run again."
                    )})
            else:
                job_model.update({"status": "failed", "message": str(exc)})
            self._on_error(exc)

        from dippas_core.assembly import NoSnapshotsError

        self.worker = start_job(
            job, on_progress=self._on_steps, on_returned=returned,
            on_errored=errored, what="Anonymize", cancel=cancel, quiet=(NoSnapshotsError,),
        )

    def _close_down(self) -> None:
        """The widget left napari: cancel the run (it ends after its current iteration)."""
        self.stop()
        self.job.events.disconnect(self._show_job)
        for event in (self.state.tiles.events.rects, self.state.tiles.events.states,
                      self.state.tiles.events.offset):
            event.disconnect(self._show_tiles)
        self.plot._offscreen = None  # no more off-screen redraw steps

    # -- live updates (main thread) -------------------------------------------------------------
    def _show_trace(self, check: TraceCheck) -> None:
        warning = trace_warning(check.pce, DECISION_LEVEL_PCE, check.n_pixels)
        self.trace_note = warning or (
            f"The input carries the camera's trace (PCE {check.pce:.1f} ≥ "
            f"{DECISION_LEVEL_PCE:g}): a before/after comparison is meaningful."
        )
        self._show_job()

    def _on_steps(self, batch: list[Any]) -> None:
        batch = self.state.apply(batch)
        if not batch:
            return
        self.job.tick(time.monotonic() - self._started_at)
        if self.closed:
            return
        self.history.extend(batch)
        now = time.monotonic()
        plot_due = now - self._last_plot >= PLOT_INTERVAL_S
        # never the layer and the plot in one turn of the event loop (each costs tens of ms);
        # when both are due, the one that waited longer goes first
        # the store on disk is read only while the steps say it holds snapshots not yet shown
        view = self.snapshots
        layer_updated = view is not None and view.unseen and view.refresh(
            allow_layer=not plot_due or view.last_update <= self._last_plot
        )
        if plot_due and not layer_updated:
            self._last_plot = now
            self.plot.show_history(self.history, self.settings.tau_psnr)

    def _show_job(self, *_: Any) -> None:
        lines = [self.job.describe(), self.run_note, self.trace_note]
        if self._tiled:
            lines.insert(1, self.state.tiles.describe() + self._tiles_left())
        self.status.setText("\n".join(line for line in lines if line))
        if self._tiled:
            self.progress.setValue(self.state.tiles.n_finished)
        else:
            if self.job.status in ("finished", "cancelled") and self.job.iteration > 0:
                # the honest total is what the run needed: a run that stopped at its PSNR is done
                self.progress.setRange(0, self.job.iteration)
            self.progress.setValue(min(self.job.iteration, self.progress.maximum()))
        self.run_button.setText("Stop" if self.running else "Run")
        self.run_button.setEnabled(self.job.status != "stopping")

    def _tiles_left(self) -> str:
        """``" · at most 12 min left for every tile"`` at the measured speed (running only)."""
        job, tiles = self.job, self.state.tiles
        per_it = job.seconds_per_iteration
        if job.status != "running" or not np.isfinite(per_it):
            return ""
        from .._models._job import _duration

        left = (max(job.max_iter - job.iteration, 0) + tiles.count("waiting") * job.max_iter)
        return f" · at most {_duration(left * per_it)} left for every tile"

    def _on_done(self, result: Any) -> None:
        """The run ended (``job.status`` is already set): show its layers."""
        self.cancel = None
        view = self.snapshots
        if view is not None:
            view.forget_previous()
        if self.closed:  # the viewer may be gone with the widget: leave it alone
            return
        if not self._tiled and self.job.status == "finished":
            below = result.report.get("below_tau") or []
            self.state.tiles.finish_tile(TileFinished(0, float(below[0]["short_db"]) if below
                                                      else 0.0))
        self.state.tiles.run_ended()
        if view is not None:
            view.refresh(force=True)
        self.plot.show_history(self.history, self.settings.tau_psnr, final=True)
        if result.report.get("partial"):  # a stopped photo run: its tiles wait for a resume
            self._select(self.photo.layer())
            self.run_finished.emit(str(self.run_path))
            return
        B = int(result.report["block_ncc"]["B"])
        shape = result.image.shape[:2]
        info = {"run_dir": str(self.run_path)}
        region = self._region
        offset = region.translate if region is not None else (0.0, 0.0)
        if region is not None:
            info["region"] = region.as_dict()
        upsert_run_layer(
            self.viewer,
            block_heatmap_layer(result.maps["block_ncc_before"], B, image_shape=shape,
                                offset=offset, stage="before", **info),
        )
        output = upsert_run_layer(
            self.viewer,
            anonymized_layer(result.image, report=result.report, bit_depth=self._bit_depth,
                             offset=offset, **info),
        )
        upsert_run_layer(
            self.viewer,
            block_heatmap_layer(result.maps["block_ncc_after"], B, name="NCC after",
                                image_shape=shape, offset=offset, stage="after", **info),
        )
        photo = self.photo.layer()
        if photo is not None and region is not None:
            source = np.asarray(photo.data)
            source = source if region.is_whole(source.shape) else region.crop(source)
            if source.shape == result.image.shape:
                upsert_run_layer(
                    self.viewer,
                    difference_layer(result.image, source, name="difference (after − before)",
                                     offset=offset, **info),
                )
        if view is not None:
            view.finished(self.job.status)
        self._select(output)  # the result, never the transparent snapshots placeholder
        self.run_finished.emit(str(self.run_path))

    def _select(self, layer: Any) -> None:
        """Make ``layer`` the selected one (its controls show), if it is still in the viewer."""
        if layer is not None and layer in self.viewer.layers:
            self.viewer.layers.selection.active = layer

    def _on_error(self, exc: BaseException) -> None:
        """The run failed (``job.status`` is already set): drop its placeholder layer."""
        self.cancel = None
        self.state.tiles.run_ended()
        if not self.closed and self.snapshots is not None:
            self.snapshots.failed()
